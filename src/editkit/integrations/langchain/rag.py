"""RAG in which retrieved documents reach the model as edits, not as stuffed context.

    chain = create_edit_rag_chain(EditableChatModel(lm=lm), retriever)
    out = chain.invoke("Danielle Darrieux, a native")
    out["answer"].content, out["context"], out["answer"].response_metadata["edit"]

A LangChain retriever over any corpus supplies the documents; the best (first) becomes *the*
edit, wrapped in P-Tokens in `mode="ptokens"` (or `New Fact:` in `mode="prompt"`), and the next
`max_distractors` become distractor facts, exactly the layout of `EditableLM.ask`. With
`stuff=True` the chain is the classic baseline instead: every retrieved document as plain lines
before the question, no edit. A retriever that returns nothing gives an unedited answer.

`gate="learned"` (default) puts the retrieved documents through the same relevance decision as
`EditableLM.ask` (`editkit.retrieval.judge_texts`): a document that is not about the question's
subject is not placed (it stays in `context`, with its verdict in `metadata["placed"]`), so an
off-topic retrieval leaves the answer unedited. `gate=None` places whatever the retriever returns.

The output follows LangChain's retrieval-chain convention: `{"question", "context", "answer"}`
(`chain.pick("answer")` for just the AIMessage); it streams the answer.
"""
from __future__ import annotations

from operator import itemgetter
from typing import Any, TypedDict

from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

from ...errors import FactTooLongError, InvalidInputError
from ...layouts import Mode
from ...records import MAX_FACT_CHARS, MAX_QUESTION_CHARS, clean_text
from ...retrieval import Gate, judge_texts
from .chat_model import EditableChatModel, _text_of


class EditRAGInput(TypedDict):
    """Input of the RAG chain (a bare string is accepted too)."""

    question: str


def _fact_texts(docs: list[Document]) -> list[str]:
    texts: list[str] = []
    for i, d in enumerate(docs):
        if not isinstance(d, Document):
            raise InvalidInputError(f"The retriever returned a {type(d).__name__} at position "
                                    f"{i}; expected LangChain Documents.")
        try:
            t = clean_text(d.page_content, "retrieved document", MAX_FACT_CHARS)
        except FactTooLongError as exc:
            raise FactTooLongError(
                f"{exc} Edits are sentence-sized facts: split the corpus into one statement per "
                "document (e.g. with a text splitter) before indexing it.") from None
        if t not in texts:  # the same statement twice would only waste prompt tokens
            texts.append(t)
    return texts


def docs_to_edit_kwargs(docs: list[Document], *, max_distractors: int = 3,
                        mode: str | Mode | None = None) -> dict[str, Any]:
    """Call arguments for `EditableChatModel`/`EditableLM.ask`/`.score` from retrieved docs:
    the first as `fact`, the next `max_distractors` as `distractors`; `mode="none"` (the question
    alone) when there are none."""
    if not isinstance(max_distractors, int) or max_distractors < 0:
        raise InvalidInputError("max_distractors must be an int ≥ 0.")
    texts = _fact_texts(list(docs))
    if not texts:
        return {"mode": Mode.NONE.value}
    kw: dict[str, Any] = {"fact": texts[0], "distractors": texts[1:1 + max_distractors]}
    if mode is not None:
        kw["mode"] = Mode.parse(mode).value
    return kw


def stuffed_question(docs: list[Document], question: str) -> str:
    """The classic plain-context RAG prompt: the documents' text on lines before the question."""
    q = clean_text(question, "question", MAX_QUESTION_CHARS)
    texts = _fact_texts(list(docs))
    return clean_text("\n".join([*texts, q]), "question with context", MAX_QUESTION_CHARS)


def _as_input(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        question = value
    elif isinstance(value, dict) and "question" in value:
        question = value["question"]
    elif isinstance(value, BaseMessage):
        question = _text_of(value)
    else:
        raise InvalidInputError("The RAG chain takes a question string or {'question': str}; "
                                f"got {type(value).__name__}.")
    return {"question": clean_text(question, "question", MAX_QUESTION_CHARS)}


def create_edit_rag_chain(chat: EditableChatModel, retriever: BaseRetriever, *,
                          mode: str | Mode | None = None, max_distractors: int = 3,
                          stuff: bool = False, gate: Gate | None = "learned",
                          ) -> Runnable[Any, dict[str, Any]]:
    """question -> {"question", "context": retrieved docs, "answer": AIMessage}.

    mode: how the edit is placed (None = the chat model's/LM's mode; "ptokens", "prompt", "ike").
    stuff: the plain-context baseline: all docs before the question, no edit (mode ignored).
    gate: "learned" / "threshold": place only the documents the retrieval policy judges to be
    about the question (the LM's memory embedder and retrieval settings); None: place them all.
    """
    if not isinstance(chat, EditableChatModel):
        raise InvalidInputError("chat must be an EditableChatModel.")
    if not isinstance(retriever, Runnable):
        raise InvalidInputError("retriever must be a LangChain retriever (a Runnable returning "
                                "Documents).")
    if mode is not None:
        mode = Mode.parse(mode).value
    if not isinstance(max_distractors, int) or max_distractors < 0:
        raise InvalidInputError("max_distractors must be an int ≥ 0.")
    if gate not in (None, "learned", "threshold"):
        raise InvalidInputError("gate must be 'learned', 'threshold' or None.")
    settings = (None if gate is None else
                chat.lm.retrieval.model_copy(update={"gate": gate}))

    def placed(question: str, docs: list[Document]) -> list[Document]:
        if settings is None or not docs:
            return docs
        verdicts = judge_texts(question, _fact_texts(docs), chat.lm.memory.embedder, settings)
        keep = {t for t, _, _, kept in verdicts if kept}
        for d in docs:
            d.metadata["placed"] = d.page_content.strip() in keep
        return [d for d in docs if d.metadata["placed"]]

    def answer(x: dict[str, Any]) -> Runnable:
        docs = list(x["context"])
        if stuff:
            question = stuffed_question(docs, x["question"]) if docs else x["question"]
            return RunnableLambda(lambda _: question) | chat.bind(mode=Mode.NONE.value)
        docs = placed(x["question"], docs)
        kw = docs_to_edit_kwargs(docs, max_distractors=max_distractors,
                                 mode=mode if docs else None)
        return RunnableLambda(itemgetter("question")) | chat.bind(**kw)

    retrieve = RunnablePassthrough.assign(context=itemgetter("question") | retriever)
    chain = (RunnableLambda(_as_input, name="question") | retrieve
             | RunnablePassthrough.assign(answer=RunnableLambda(answer, name="edit_rag_answer")))
    return chain.with_config(run_name="EditRAG" if not stuff else "StuffRAG")
