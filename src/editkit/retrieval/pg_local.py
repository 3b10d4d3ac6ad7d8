"""A throwaway PostgreSQL 16 + pgvector on this machine, from the `pgserver` wheel's binaries.

For tests, benchmarks and trying several `editkit serve` replicas without a database server:

    with LocalPostgres(Path("/tmp/pg")) as pg:         # initdb, start, wait until it answers
        url = pg.create_database("edits")              # postgresql://postgres@127.0.0.1:PORT/edits
        pg.restart()                                   # a real restart (fast shutdown, start)

The server listens on 127.0.0.1 (a free port) and on a unix socket in its folder, trusts local
connections (no password: loopback only), and is stopped by the process id this object started,
never by name. As root, PostgreSQL refuses to run, so it runs as the system user `pgserver`
(created with `useradd` if missing, as pgserver itself does). Needs `pip install pgserver`
(in editkit's dev extra).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import MemoryBackendMissingError, MemoryUnavailableError

_RUN_AS = "pgserver"  # the non-root user pgserver uses too


def _bin_dir() -> Path:
    """pgserver's PostgreSQL binaries, found without importing pgserver (whose import sets up
    its own server bookkeeping, which this module does not use)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise MemoryBackendMissingError(
            "A local PostgreSQL needs the pgserver wheel: pip install pgserver "
            "(included in editkit[dev]).")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """One PostgreSQL server in `root` (data in root/data, log in root/postgres.log)."""

    def __init__(self, root: Path, *, port: int | None = None,
                 settings: dict[str, str] | None = None) -> None:
        """settings: extra server settings (`-c name=value`), e.g. {"shared_buffers": "1GB"};
        {"fsync": "off"} for tests (commits still return only once written to the OS, and a
        shutdown or restart loses nothing; only an OS crash could)."""
        self.root = Path(root)
        self.data = self.root / "data"
        self.port = port or free_port()
        self.settings = {"fsync": "on", "max_connections": "200", **(settings or {})}
        self.bin = _bin_dir()
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while this object's server runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> None:
        """initdb on first use, then start the server and wait until it accepts connections."""
        if self.pid is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        if not (self.data / "PG_VERSION").exists():
            self.data.mkdir(exist_ok=True)
            self._own(self.data)
            no_sync = ["--no-sync"] if self.settings.get("fsync") == "off" else []
            self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                       "--auth=trust", "--encoding=UTF8", "--no-instructions", *no_sync])
        cmd = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
               "-h", "127.0.0.1", "-k", str(self.root)]
        for name, value in self.settings.items():
            cmd += ["-c", f"{name}={value}"]
        with open(self.root / "postgres.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         **self._as_user())
        self._wait_ready(timeout_s)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Fast shutdown (SIGINT: open transactions roll back, clients are disconnected) of the
        server this object started; SIGKILL if it has not exited in time."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.destroy()

    # ---- databases --------------------------------------------------------------------------
    def create_database(self, name: str) -> str:
        """Create an empty database (name: letters, digits, '_') and return its URL."""
        import psycopg

        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and '_' only")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    # ---- helpers ----------------------------------------------------------------------------
    def _wait_ready(self, timeout_s: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise MemoryUnavailableError(f"PostgreSQL in {self.data} exited at start; see "
                                             f"{self.root / 'postgres.log'}.")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise MemoryUnavailableError(
                        f"PostgreSQL in {self.data} did not accept connections within "
                        f"{timeout_s:.0f} s; see {self.root / 'postgres.log'}.") from None
                time.sleep(0.1)

    def _prepare_user(self) -> None:
        """As root: run as `pgserver`, which must be able to reach and write `root`."""
        if os.geteuid() != 0:
            return
        import pwd  # POSIX only, like running as root

        try:
            pwd.getpwnam(_RUN_AS)
        except KeyError:
            subprocess.run(["useradd", "-s", "/bin/bash", _RUN_AS], check=True,
                           capture_output=True)
        self._user = _RUN_AS
        # The data folder and the binaries (inside a virtualenv that may sit in a private 0700
        # folder, e.g. mktemp -d) must be traversable (o+x) by that user, as pgserver does it.
        for parent in {*[self.root, *self.root.parents], *self.bin.parents}:
            parent.chmod(parent.stat().st_mode | 0o011)
        self._own(self.root)

    def _own(self, path: Path) -> None:
        if self._user is not None:
            shutil.chown(path, self._user, self._user)

    def _as_user(self) -> dict[str, Any]:
        return {} if self._user is None else {"user": self._user, "group": self._user}

    def _run(self, cmd: list[str]) -> None:
        out = subprocess.run(cmd, capture_output=True, text=True, **self._as_user())
        if out.returncode != 0:
            raise MemoryUnavailableError(f"{Path(cmd[0]).name} failed: {out.stderr.strip()}")
