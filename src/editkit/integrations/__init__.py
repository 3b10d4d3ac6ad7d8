"""Integrations with other frameworks, installed as `editkit.integrations`.

- `editkit.integrations.langchain` (`pip install 'editkit[langchain]'`): chat model, edit-memory
  retriever, embeddings, vector-store-backed edit memory and P-Token RAG; see docs/langchain.md.
"""
