"""`editkit serve` on loopback with the real default model, driven by the official `openai`
client (unchanged) and plain HTTP for the edit endpoints."""
from __future__ import annotations

import socket
import time

import pytest

openai = pytest.importorskip("openai", reason="needs the dev extra (openai)")
uvicorn = pytest.importorskip("uvicorn", reason="needs editkit[serve]")
import httpx  # noqa: E402  (an openai dependency)

from editkit.serve import serve_in_thread  # noqa: E402

KEYS = {"key-alice": "alice", "key-bob": "bob"}
Q = "The mother tongue of Danielle Darrieux is"
NATURAL_Q = "What is the mother tongue of Danielle Darrieux?"


@pytest.fixture
def server(lm):
    lm.clear("alice")
    lm.clear("bob")
    srv, url = serve_in_thread(lm, KEYS)
    assert srv.started
    yield url
    srv.should_exit = True


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_an_edit_added_over_http_changes_the_chat_answer_for_its_key_only(server, lm):
    """A plain chat request (the question as a user message, no options) goes through the
    model's chat template and answers with the edited object, for the key that stored it."""
    r = httpx.post(f"{server}/v1/edits", json={"facts": ["The mother tongue of Danielle "
                                                         "Darrieux is English."]},
                   headers={"Authorization": "Bearer key-alice"})
    assert r.status_code == 200 and len(r.json()["data"]) == 1
    msgs = [{"role": "user", "content": NATURAL_Q}]
    alice = client(server, "key-alice").chat.completions.create(model="editkit", messages=msgs)
    bob = client(server, "key-bob").chat.completions.create(model="editkit", messages=msgs)
    answer = alice.choices[0].message.content
    assert "English" in answer and "English" not in bob.choices[0].message.content
    # the same prompt and tokens as the SDK's answer to the question (run to its end)
    assert answer == lm.ask(NATURAL_Q, namespace="alice", stop=(), max_new_tokens=16).text
    assert alice.usage.prompt_tokens > bob.usage.prompt_tokens  # alice's prompt holds the edit
    assert alice.usage.total_tokens == alice.usage.prompt_tokens + alice.usage.completion_tokens
    # /v1/completions continues raw text inline, as `ask(chat=False)` does
    done = client(server, "key-alice").completions.create(model="editkit", prompt=Q,
                                                          max_tokens=6)
    assert done.choices[0].text == lm.ask(Q, namespace="alice", chat=False, stop=(),
                                          max_new_tokens=6).text
    assert done.choices[0].text.startswith("English")


def test_streaming_chat_concatenates_to_the_whole_answer_with_usage_last(server):
    c = client(server, "key-alice")
    msgs = [{"role": "user", "content": "Name three colours."}]
    whole = c.chat.completions.create(model="editkit", messages=msgs, max_tokens=8)
    chunks = list(c.chat.completions.create(model="editkit", messages=msgs, max_tokens=8,
                                            stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_a_sampled_request_with_a_seed_repeats_and_matches_the_sdk(server, lm):
    c = client(server, "key-alice")
    msgs = [{"role": "user", "content": "Name a colour."}]
    kw = {"model": "editkit", "messages": msgs, "max_tokens": 8, "temperature": 1.3}
    first = c.chat.completions.create(seed=5, **kw).choices[0].message.content
    assert c.chat.completions.create(seed=5, **kw).choices[0].message.content == first
    p, _, _ = lm.prompt("Name a colour.", namespace="alice", history=[], max_new_tokens=8)
    assert lm.generate_batched(p, max_new_tokens=8, temperature=1.3, seed=5).text == first


def test_a_key_cannot_see_or_forget_another_keys_edits(server):
    alice = {"Authorization": "Bearer key-alice"}
    bob = {"Authorization": "Bearer key-bob"}
    eid = httpx.post(f"{server}/v1/edits", json={"facts": ["Toyota is owned by BMW."]},
                     headers=alice).json()["data"][0]["id"]
    assert httpx.get(f"{server}/v1/edits", headers=bob).json()["data"] == []
    r = httpx.delete(f"{server}/v1/edits/{eid}", headers=bob)
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    assert [e["id"] for e in httpx.get(f"{server}/v1/edits", headers=alice).json()["data"]] \
        == [eid]
    assert httpx.delete(f"{server}/v1/edits/{eid}", headers=alice).json()["deleted"] is True


def test_bad_requests_get_openai_shaped_4xx_errors(server):
    with pytest.raises(openai.AuthenticationError):
        client(server, "no-such-key").chat.completions.create(
            model="editkit", messages=[{"role": "user", "content": Q}])
    with pytest.raises(openai.BadRequestError) as exc:
        client(server, "key-alice").chat.completions.create(model="editkit", messages=[])
    assert "messages" in str(exc.value)
    r = httpx.post(f"{server}/v1/edits", json={"facts": ["   "]},
                   headers={"Authorization": "Bearer key-alice"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param",
                                                               "code"}
    c = client(server, "key-alice").completions.create(model="editkit", prompt=Q, max_tokens=4)
    assert c.choices[0].text is not None and c.usage.completion_tokens >= 1


def test_langchains_openai_chat_model_talks_to_the_server_unchanged(server, lm):
    lc = pytest.importorskip("langchain_openai", reason="needs the dev extra (langchain-openai)")
    httpx.post(f"{server}/v1/edits", json={"facts": ["The mother tongue of Danielle Darrieux "
                                                     "is English."]},
               headers={"Authorization": "Bearer key-alice"})
    chat = lc.ChatOpenAI(base_url=f"{server}/v1", api_key="key-alice", model="editkit",
                         max_tokens=6, temperature=0, max_retries=0)
    msg = chat.invoke(NATURAL_Q)
    assert msg.content == lm.ask(NATURAL_Q, namespace="alice", stop=(), max_new_tokens=6).text
    assert "".join(c.content for c in chat.stream(NATURAL_Q)) == msg.content
    assert msg.usage_metadata["input_tokens"] > 0


@pytest.mark.slow  # two cold server starts (~30 s)
def test_acknowledged_edits_survive_a_killed_server(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url, db = f"http://127.0.0.1:{port}", tmp_path / "edits.sqlite"
    cmd = [sys.executable, "-m", "editkit.cli", "serve", "--port", str(port), "--memory", str(db)]

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
        for _ in range(600):
            try:
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.1)
        proc.kill()
        raise AssertionError("the server did not start")

    proc = start()
    try:
        acked = [httpx.post(f"{url}/v1/edits", json={"facts": [f"Fact number {i} is {i}."]},
                            timeout=30).json()["data"][0]["id"] for i in range(20)]
    finally:
        proc.send_signal(signal.SIGKILL)  # no shutdown hook runs
        proc.wait(timeout=30)
    proc = start()
    try:
        kept = {e["id"] for e in httpx.get(f"{url}/v1/edits", timeout=30).json()["data"]}
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert set(acked) <= kept and len(kept) == 20
