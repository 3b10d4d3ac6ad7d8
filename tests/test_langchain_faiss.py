"""The edit memory on FAISS (`editkit[scale]`): the small FaissVectorStore, checked by
langchain-tests' VectorStore suite, then used as VectorStoreEditMemory's index."""
from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("faiss", reason="FAISS tests need faiss-cpu: pip install 'editkit[scale]'")
pytest.importorskip("langchain_tests", reason="needs langchain-tests (pip install 'editkit[dev]')")

from langchain_core.documents import Document
from langchain_tests.integration_tests import VectorStoreIntegrationTests

import langchain_fixtures as lcf
from editkit import EditMemory, InvalidInputError
from editkit.integrations.langchain import (
    EditkitEmbeddings,
    EditMemoryRetriever,
    FaissVectorStore,
    VectorStoreEditMemory,
)
from langchain_fixtures import DARRIEUX, FACTS, mark_async_tests

mark_async_tests(VectorStoreIntegrationTests)
fact_memory = lcf.fact_memory  # fixture used below

Q = "The mother tongue of Danielle Darrieux is"


class TestFaissVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> Any:
        return FaissVectorStore(self.get_embeddings())


def test_faiss_search_is_exact_cosine_with_filters() -> None:
    emb = EditkitEmbeddings()
    store = FaissVectorStore(emb)
    ids = store.add_documents([Document(f, metadata={"n": i % 2}) for i, f in enumerate(FACTS)])
    hits = store.similarity_search_with_score(Q, k=len(FACTS))
    qv = emb.embed_query(Q)
    dvs = emb.embed_documents([d.page_content for d, _ in hits])
    for (_, score), dv in zip(hits, dvs):
        assert score == pytest.approx(sum(a * b for a, b in zip(qv, dv)), abs=1e-4)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert hits[0][0].page_content == DARRIEUX
    assert all(d.metadata["n"] == 1 for d in store.similarity_search(Q, k=2, filter={"n": 1}))
    assert len(store.similarity_search(Q, k=10, filter=lambda d: d.metadata["n"] == 0)) == 3
    store.delete([ids[0]])
    assert store.get_by_ids([ids[0]]) == [] and len(store) == len(FACTS) - 1
    assert DARRIEUX not in [d.page_content for d in store.similarity_search(Q, k=10)]
    with pytest.raises(InvalidInputError, match="filter"):
        store.similarity_search(Q, filter="n == 1")


@pytest.mark.parametrize("filter_style", ["callable", "dict", "post"])
def test_edit_memory_on_faiss_matches_sqlite(filter_style: str,
                                             fact_memory: EditMemory) -> None:
    mem = VectorStoreEditMemory(FaissVectorStore(EditkitEmbeddings()),
                                filter_style=filter_style)
    mem.add(FACTS)
    mem.add(["Danielle Darrieux speaks Italian.", "Danielle Darrieux lives in Lyon."],
            namespace="bob")
    got = mem.retrieve(Q, k=3, threshold=0.2)
    want = fact_memory.retrieve(Q, k=3, threshold=0.2)
    assert [h.edit.text for h in got] == [h.edit.text for h in want]
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
    docs = EditMemoryRetriever(memory=mem, namespace="bob", threshold=0.0).invoke(Q)
    assert {d.page_content for d in docs} == {"Danielle Darrieux speaks Italian.",
                                              "Danielle Darrieux lives in Lyon."}
    assert all(d.metadata["namespace"] == "bob" for d in docs)
