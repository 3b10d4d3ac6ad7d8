"""Two `editkit serve` processes (the real default model) on one PostgreSQL memory, on
different ports of 127.0.0.1: what one replica acknowledges, the other serves; a killed replica
loses nothing it acknowledged; a database restart is an outage with typed errors, then full
service. Slow: two cold server starts (the model loads in each)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("psycopg", reason="needs editkit[postgres] (dev extra)")
pytest.importorskip("uvicorn", reason="needs editkit[serve]")
import httpx  # noqa: E402

from editkit.retrieval.pg_local import free_port  # noqa: E402
from editkit.retrieval.postgres import PostgresEditMemory  # noqa: E402
from pg_fixtures import new_local_pg  # noqa: E402

pytestmark = pytest.mark.slow

KEYS = {"key-alice": "alice", "key-bob": "bob"}
FACT = "The mother tongue of Danielle Darrieux is English."
QUESTION = "What is the mother tongue of Danielle Darrieux?"


class Replica:
    """`python -m editkit.cli serve --memory <url>` on a port of its own."""

    def __init__(self, memory: str, keys: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "editkit.cli", "serve", "--port", str(self.port),
                 "--memory", memory, "--keys", str(keys)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def wait_ready(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the replica exited at start"
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the replica did not start")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)  # no shutdown hook runs
        self.proc.wait(timeout=30)

    def add(self, fact: str, key: str = "key-alice") -> httpx.Response:
        return httpx.post(f"{self.url}/v1/edits", json={"facts": [fact]}, timeout=60,
                          headers={"Authorization": f"Bearer {key}"})

    def edit_ids(self, key: str = "key-alice") -> list[str]:
        """Every edit the key's namespace keeps, live or superseded (history=1)."""
        r = httpx.get(f"{self.url}/v1/edits", headers={"Authorization": f"Bearer {key}"},
                      params={"history": 1}, timeout=60)
        assert r.status_code == 200, r.text
        return [e["id"] for e in r.json()["data"]]

    def answer(self, key: str) -> str:
        r = httpx.post(f"{self.url}/v1/chat/completions", timeout=120,
                       headers={"Authorization": f"Bearer {key}"},
                       json={"model": "editkit", "max_tokens": 16,
                             "messages": [{"role": "user", "content": QUESTION}]})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A database server of its own (a test restarts it) and two replicas started together."""
    pg = new_local_pg()
    tmp = tmp_path_factory.mktemp("replicas")
    keys = tmp / "keys.json"
    keys.write_text(json.dumps(KEYS))
    memory = pg.create_database("replicas")
    replicas = [Replica(memory, keys, tmp / f"replica-{i}.log") for i in (1, 2)]
    try:
        for r in replicas:
            r.wait_ready()
        yield pg, memory, replicas[0], replicas[1]
    finally:
        for r in replicas:
            r.kill()
        pg.destroy()


def test_an_edit_posted_to_one_replica_is_answered_by_the_other_until_forgotten(cluster):
    _, _, one, two = cluster
    assert "English" not in two.answer("key-alice")
    r = one.add(FACT)
    assert r.status_code == 200, r.text
    [eid] = [e["id"] for e in r.json()["data"]]
    assert two.edit_ids() == [eid]
    assert "English" in two.answer("key-alice")
    assert "English" not in two.answer("key-bob")  # tenants stay apart across replicas
    gone = httpx.delete(f"{two.url}/v1/edits/{eid}", timeout=60,
                        headers={"Authorization": "Bearer key-alice"})
    assert gone.json()["deleted"] is True
    assert one.edit_ids() == [] and "English" not in one.answer("key-alice")


def test_a_replica_killed_during_a_stream_of_adds_loses_no_acknowledged_edit(cluster):
    _, memory, one, two = cluster
    acked: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        n = 0
        while not stop.is_set():
            try:
                r = one.add(f"Fact number {n} is {n}.")
            except httpx.HTTPError:
                time.sleep(0.05)  # the replica is gone: nothing more is acknowledged
                continue
            if r.status_code == 200:
                acked.extend(e["id"] for e in r.json()["data"])
            n += 1

    writer = threading.Thread(target=stream)
    writer.start()
    deadline = time.monotonic() + 120
    while len(acked) < 15 and time.monotonic() < deadline:
        time.sleep(0.05)
    one.kill()  # requests are in flight
    stop.set()
    writer.join(timeout=60)
    stored = set(two.edit_ids())
    assert len(acked) >= 15 and set(acked) <= stored
    direct = PostgresEditMemory(memory)
    assert set(acked) <= {e.id for e in direct.edits("alice", history=True)}
    direct.close()


def test_a_database_restart_is_an_outage_with_typed_errors_then_full_service(cluster):
    pg, _, _, two = cluster
    before = set(two.edit_ids())
    pg.stop()
    try:
        r = two.add("Written while the database is down.")
        assert r.status_code == 503, r.text  # MemoryUnavailableError: retry later
        assert "is unavailable" in r.json()["error"]["message"]
    finally:
        pg.start()
    r = two.add(FACT)  # the first call after the restart reconnects
    assert r.status_code == 200, r.text
    [eid] = [e["id"] for e in r.json()["data"]]
    assert set(two.edit_ids()) == before | {eid}
    assert "English" in two.answer("key-alice")
