"""langchain-tests' standard suites, run against the real default model and embedder.

Features editkit does not offer (tool calling, structured output, JSON mode, images, audio, PDF,
per-call model override, serialization, init from env) are turned off through the suites' own
flags (their defaults, or the overrides below), which makes the suites report those tests as
skipped with the suite's reason. No standard test is overridden.
"""
from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_tests", reason="needs langchain-tests (pip install 'editkit[dev]')")

from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.integration_tests import (
    ChatModelIntegrationTests,
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
)
from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests

import langchain_fixtures as lcf
from editkit import EditableLM
from editkit.integrations.langchain import (
    EditableChatModel,
    EditkitEmbeddings,
    EditMemoryRetriever,
    VectorStoreEditMemory,
)
from langchain_fixtures import FACTS, mark_async_tests

mark_async_tests(ChatModelIntegrationTests, RetrieversIntegrationTests,
                 EmbeddingsIntegrationTests)
chat_lm, fact_memory = lcf.chat_lm, lcf.fact_memory  # fixtures used below

# Few new tokens keep the suites fast on CPU; the answers still have content.
CHAT_PARAMS: dict[str, Any] = {"max_tokens": 8}


class _SharedLM:
    """Hands the session's real EditableLM to the suites, whose params are plain properties."""

    _lm: EditableLM | None = None

    @pytest.fixture(autouse=True)
    def _share_lm(self, chat_lm: EditableLM) -> None:
        type(self)._lm = chat_lm

    @property
    def chat_model_class(self) -> type[EditableChatModel]:
        return EditableChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"lm": self._lm}

    @property
    def supports_model_override(self) -> bool:
        return False  # one EditableLM per chat model; `model=` per call is refused

    @property
    def returns_usage_metadata(self) -> bool:
        return True


class TestEditableChatModelUnit(_SharedLM, ChatModelUnitTests):
    pass


class TestEditableChatModelIntegration(_SharedLM, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"lm": self._lm, **CHAT_PARAMS}


class TestEditMemoryRetrieverStandard(RetrieversIntegrationTests):
    """The SQLite EditMemory behind the retriever; the threshold gate, low enough that k edits
    match (the standard suite checks the k contract; the learned gate is tested in
    test_langchain.py)."""

    _memory: Any = None

    @pytest.fixture(autouse=True)
    def _share_memory(self, fact_memory: Any) -> None:
        type(self)._memory = fact_memory

    @property
    def retriever_constructor(self) -> type[EditMemoryRetriever]:
        return EditMemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"memory": self._memory, "k": 4, "threshold": 0.0, "gate": "threshold"}

    @property
    def retriever_query_example(self) -> str:
        return "What is the mother tongue of Danielle Darrieux?"


class TestVectorStoreMemoryRetrieverStandard(TestEditMemoryRetrieverStandard):
    """The same suite with the memory on LangChain's InMemoryVectorStore."""

    @pytest.fixture(autouse=True)
    def _share_memory(self, fact_memory: Any) -> None:
        if not isinstance(type(self).__dict__.get("_vs_memory"), VectorStoreEditMemory):
            mem = VectorStoreEditMemory(InMemoryVectorStore(EditkitEmbeddings()))
            mem.add(FACTS)
            type(self)._vs_memory = mem
        type(self)._memory = type(self)._vs_memory


class TestEditkitEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[EditkitEmbeddings]:
        return EditkitEmbeddings


class TestEditkitEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[EditkitEmbeddings]:
        return EditkitEmbeddings
