"""Fixtures for the LangChain tests: the real default model (from conftest's session fixtures),
a fresh edit memory per test, and a few real CounterFact-style facts.

Import the fixtures you use into a test module (`from langchain_fixtures import chat_lm`).
"""
from __future__ import annotations

import inspect

import pytest

from editkit import EditableLM, EditMemory
from editkit.loading import LoadedModel
from editkit.ptokens import PTokens

# CounterFact record 0 and a few of its neighbours, as edits (the new, counterfactual objects).
DARRIEUX = "The mother tongue of Danielle Darrieux is English."
FACTS = [
    DARRIEUX,
    "Danielle Darrieux was born in Paris.",
    "Danielle Darrieux is an actress.",
    "Danielle Darrieux speaks German.",
    "The Eiffel Tower is located in Rome.",
    "Toko Yasuda plays the piano.",
]


@pytest.fixture
def chat_lm(default_model: LoadedModel, default_ptokens: PTokens) -> EditableLM:
    """EditableLM on the real default model, P-Token mode, fresh in-RAM memory."""
    return EditableLM(default_model, default_ptokens, EditMemory(None), mode="ptokens")


@pytest.fixture(scope="session")
def fact_memory() -> EditMemory:
    """A read-only memory holding FACTS (real MiniLM embeddings); tests must not write to it."""
    mem = EditMemory(None)
    mem.add(FACTS)
    return mem


def mark_async_tests(*suites: type) -> None:
    """Mark the coroutine tests of standard suites with `pytest.mark.asyncio`.

    The suites' async tests carry no marker, and this project runs pytest-asyncio in its default
    strict mode. The mark is added to the suite's own function objects, so no standard test is
    overridden (which the suites' `test_no_overrides_DO_NOT_OVERRIDE` forbids).
    """
    for suite in suites:
        for klass in suite.__mro__:
            for name, fn in vars(klass).items():
                if name.startswith("test_") and inspect.iscoroutinefunction(fn):
                    marks = getattr(fn, "pytestmark", [])
                    if not any(m.name == "asyncio" for m in marks):
                        pytest.mark.asyncio(fn)
