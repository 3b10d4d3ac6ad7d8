"""Integrations with other frameworks, installed as `editkit.integrations`.

LangChain support (`editkit[langchain]`) is tracked in its own issue and lands here.
"""
