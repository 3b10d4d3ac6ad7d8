"""Facts that change, through every door, on the real default model: the SDK (both backends),
the server, the CLI and LangChain. A user edits a fact, then edits it again: the answer follows
the newer value, the older one is history, forgetting the newer brings the older back, and
`as_of` answers as the assistant did then."""
from __future__ import annotations

import time

import httpx
import pytest

from editkit import EditableLM, EditMemory

OLD = "Our warehouse in Ghent ships orders within 2 days."
NEW = "Our warehouse in Ghent ships orders within 5 days."
Q = "How fast does the Ghent warehouse ship orders?"


def test_an_update_is_answered_then_forgotten_then_audited_on_both_backends(
        default_model, shipped_ptokens, make_store):
    """No key, no triple: the shipped slot judge decides that the second fact updates the
    first (what a new user types)."""
    lm = EditableLM(default_model, shipped_ptokens, make_store())
    old = lm.add_edits(OLD)[0]
    time.sleep(0.02)
    new = lm.add_edits(NEW)[0]
    assert new.supersedes == (old.id,)
    assert [e.id for e in lm.edits()] == [new.id] and len(lm.edits(history=True)) == 2
    answer = lm.ask(Q)
    assert "5 days" in answer.text and "2 days" not in answer.text
    assert answer.edit.edit.id == new.id and answer.distractors == []
    between = (old.created_at + new.created_at) / 2
    assert "2 days" in lm.ask(Q, as_of=between).text
    assert [e.id for e in lm.edits(as_of=between)] == [old.id]
    lm.forget(new.id)
    assert "2 days" in lm.ask(Q).text


def test_refuse_and_keep_both_are_chosen_per_model_and_per_call(default_model, shipped_ptokens):
    from editkit.errors import EditConflictError

    lm = EditableLM(default_model, shipped_ptokens, EditMemory(None), on_update="refuse")
    lm.edit(OLD, key="warehouse/ghent")
    with pytest.raises(EditConflictError, match="refuse"):
        lm.edit(NEW, key="warehouse/ghent")
    lm.edit(NEW, key="warehouse/ghent", on_update="keep-both")
    assert len(lm.edits()) == 2
    with pytest.raises(Exception, match="one fact"):
        lm.edit([OLD, NEW], key="warehouse/ghent")


@pytest.fixture
def server(default_model, shipped_ptokens):
    pytest.importorskip("uvicorn", reason="needs editkit[serve]")
    from editkit.serve import serve_in_thread

    lm = EditableLM(default_model, shipped_ptokens, EditMemory(None))
    srv, url = serve_in_thread(lm, {"key-alice": "alice"})
    yield url
    srv.should_exit = True


def test_the_server_reports_supersession_history_restoration_and_answers_as_of(server):
    auth = {"Authorization": "Bearer key-alice"}

    def post(facts, **extra):
        return httpx.post(f"{server}/v1/edits", json={"facts": facts, **extra}, headers=auth,
                          timeout=60)

    def chat(**extra):
        r = httpx.post(f"{server}/v1/chat/completions", headers=auth, timeout=120,
                       json={"messages": [{"role": "user", "content": Q}], "max_tokens": 24,
                             **extra})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    old = post([{"text": OLD, "key": "warehouse/ghent"}]).json()["data"][0]
    time.sleep(0.02)
    r = post([{"text": NEW, "key": "warehouse/ghent"}])
    assert r.status_code == 200 and r.json()["superseded"] == [old["id"]]
    new = r.json()["data"][0]
    assert new["supersedes"] == [old["id"]] and new["live"]
    live = httpx.get(f"{server}/v1/edits", headers=auth).json()["data"]
    assert [e["id"] for e in live] == [new["id"]]
    hist = httpx.get(f"{server}/v1/edits", params={"history": 1}, headers=auth).json()["data"]
    assert {e["id"]: e["superseded_by"] for e in hist} == {old["id"]: new["id"], new["id"]: None}
    assert "5 days" in chat()
    assert "2 days" in chat(as_of=(old["created_at"] + new["created_at"]) / 2)
    refused = post([{"text": "Our warehouse in Ghent ships orders within 9 days.",
                     "key": "warehouse/ghent"}], on_update="refuse")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "edit_conflict"
    assert [c["id"] for c in refused.json()["error"]["conflicts"]] == [new["id"]]
    gone = httpx.delete(f"{server}/v1/edits/{new['id']}", headers=auth).json()
    assert gone["restored"] == [old["id"]]
    assert "2 days" in chat()


def test_the_cli_lists_live_edits_and_with_history_what_replaced_what(tmp_path):
    from typer.testing import CliRunner

    from editkit.cli import app

    path = tmp_path / "m.sqlite"
    with EditMemory(path) as mem:
        old = mem.add({"text": OLD, "key": "warehouse/ghent"})[0]
        new = mem.add({"text": NEW, "key": "warehouse/ghent"})[0]
    runner = CliRunner()
    live = runner.invoke(app, ["edits", str(path)])
    assert live.exit_code == 0 and "5 days" in live.output and "2 days" not in live.output
    hist = runner.invoke(app, ["edits", str(path), "--history"])
    assert hist.exit_code == 0 and "2 edits" in hist.output and "superseded" in hist.output
    js = runner.invoke(app, ["edits", str(path), "--history", "--json"])
    assert {e["id"]: e["superseded_by"] for e in __import__("json").loads(js.output)} == {
        old.id: new.id, new.id: None}
    bad = runner.invoke(app, ["edits", str(path), "--as-of", "last tuesday"])
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


def test_langchain_retrievers_and_vector_store_memory_never_return_a_superseded_edit():
    pytest.importorskip("langchain_core")
    from langchain_core.vectorstores import InMemoryVectorStore

    from editkit.integrations.langchain import (
        EditkitEmbeddings,
        EditMemoryRetriever,
        VectorStoreEditMemory,
    )

    for mem in (EditMemory(None), VectorStoreEditMemory(InMemoryVectorStore(EditkitEmbeddings()))):
        old = mem.add(OLD)[0]
        new = mem.add(NEW)[0]
        assert new.supersedes == (old.id,)
        docs = EditMemoryRetriever(memory=mem, k=5, threshold=0.0, gate="threshold").invoke(Q)
        assert [d.metadata["id"] for d in docs] == [new.id]
        assert {e.id for e in mem.edits(history=True)} == {old.id, new.id}
        mem.forget(new.id)
        docs = EditMemoryRetriever(memory=mem, k=5, threshold=0.0, gate="threshold").invoke(Q)
        assert [d.metadata["id"] for d in docs] == [old.id]
