"""Every limit editkit enforces on what callers send, defined once. The SDK, the server's request
models, the CLI options and the LangChain chat model all read them from here.

MAX_NEW_TOKENS: the most tokens one answer may ask for (`max_new_tokens`, `max_tokens`);
prompt plus answer must also fit the model's context (`EditableLM.check_context`).
MAX_FACT_CHARS: a fact is one sentence-sized statement; longer text belongs in RAG.
MAX_QUESTION_CHARS: a question, or a conversation's last turn.
"""
from __future__ import annotations

MAX_NEW_TOKENS = 4096
MAX_FACT_CHARS = 1_000
MAX_QUESTION_CHARS = 4_000
