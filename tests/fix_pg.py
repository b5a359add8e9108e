"""Database fixtures (a pytest plugin loaded from conftest.py).

``pg_dsn`` finds a database, in this order: ``BOUNDKIT_TEST_DSN``; a server on
127.0.0.1:5432, in a throwaway database created and dropped here; a throwaway
cluster started from the PostgreSQL binaries. ``pg_cluster`` is always such a
throwaway cluster: the only server tests may stop, restart or kill. Tests using
either get the ``pg`` marker. With no database (or a ``BOUNDKIT_TEST_DSN`` that
cannot be reached) they skip, unless ``CI`` is set: then they fail.

The helpers below the fixtures are shared by test_pg.py and test_pg_async.py.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fix_servers import free_port

psycopg = pytest.importorskip("psycopg")

_LOCAL = "host=127.0.0.1 port=5432 user=postgres connect_timeout=3"
_PG_FIXTURES = {"pg_dsn", "pg_cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _PG_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pg)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but no PostgreSQL for the tests: {reason}", pytrace=False)
    pytest.skip(reason)


def _bindirs() -> list[Path]:
    dirs = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        dirs.append(Path(out.stdout.strip()))
    if initdb := shutil.which("initdb"):
        dirs.append(Path(initdb).parent)
    dirs += [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    return [d for d in dirs if (d / "initdb").exists() and (d / "pg_ctl").exists()]


class Cluster:
    """A PostgreSQL cluster in a temporary directory, owned by the test session."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="boundkit-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = uuid.uuid4().hex
        self.dsn = (
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres "
            f"password={self.password} connect_timeout=3"
        )
        if os.geteuid() == 0:  # initdb and pg_ctl refuse root
            shutil.chown(self.root, "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        )

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.root, timeout=60)

    def _pg_ctl(self, action: str, *args: str) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c shared_buffers=16MB -c max_connections=40"
        )
        log = str(self.root / "log")
        self._run("pg_ctl", action, "-D", str(self.data), "-l", log, "-o", options, *args)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._pg_ctl("start", "-w")

    def stop(self) -> None:
        """Stop the server (fast mode: sessions are terminated)."""
        self._pg_ctl("stop", "-w", "-m", "fast")

    def restart(self) -> None:
        """Stop and start the server."""
        self._pg_ctl("restart", "-w", "-m", "fast")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _start_cluster() -> Cluster | None:
    bindirs = _bindirs()
    if not bindirs:
        return None
    cluster = Cluster(bindirs[0])
    try:
        cluster.start()
        # TCP logins need this password; the Unix socket in the temp dir trusts
        local = f"host={cluster.root} port={cluster.port} user=postgres dbname=postgres"
        with psycopg.connect(local, autocommit=True) as conn:
            conn.execute(f"ALTER USER postgres PASSWORD '{cluster.password}'")
    except Exception:
        cluster.remove()
        raise
    return cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A throwaway cluster started by this session: the one tests may stop or restart."""
    cluster = _start_cluster()
    if cluster is None:
        _unavailable("no PostgreSQL binaries (initdb, pg_ctl) to start a throwaway cluster")
        return
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def pg_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """A conninfo for a database the tests may fill; never an existing one on the server."""
    if dsn := os.environ.get("BOUNDKIT_TEST_DSN"):
        try:
            psycopg.connect(dsn).close()
        except psycopg.OperationalError as exc:
            # the message names host and port, never the password
            _unavailable(f"BOUNDKIT_TEST_DSN is set but cannot be reached: {exc}")
        yield dsn
        return
    try:
        admin = psycopg.connect(f"{_LOCAL} dbname=postgres", autocommit=True)
    except psycopg.OperationalError:
        yield request.getfixturevalue("pg_cluster").dsn
        return
    name = f"boundkit_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield f"{_LOCAL} dbname={name}"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["drain", "getconn"])
def replacing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How release_idle() replaces: psycopg_pool's drain() (3.3+), or without it (as on 3.2)."""
    psycopg_pool = pytest.importorskip("psycopg_pool")
    pools = (psycopg_pool.ConnectionPool, psycopg_pool.AsyncConnectionPool)
    if request.param == "getconn":
        for cls in pools:
            monkeypatch.delattr(cls, "drain", raising=False)
    elif not hasattr(pools[0], "drain"):
        pytest.skip(f"psycopg_pool {psycopg_pool.__version__} has no drain()")
    return str(request.param)


def login_user(dsn: str) -> str:
    """The role ``dsn`` logs in as: not always ``postgres`` (``BOUNDKIT_TEST_DSN``)."""
    with psycopg.connect(dsn) as conn:
        return str(conn.execute("SELECT session_user").fetchone()[0])


def terminate_backends(dsn: str, application_name: str) -> int:
    """Terminate the backends of ``application_name``; wait until they are gone."""
    query = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
    with psycopg.connect(dsn, autocommit=True) as admin:
        killed = len(admin.execute(query, (application_name,)).fetchall())
        for _ in range(200):  # the backends exit asynchronously
            gone = admin.execute(
                "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = %s",
                (application_name,),
            ).fetchone()[0]
            if gone:
                return killed
            time.sleep(0.01)
    raise AssertionError("terminated backends did not exit")


def terminate_backend(dsn: str, pid: int) -> None:
    """Terminate the backend ``pid`` and wait until it is gone."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(200):  # the backend exits asynchronously
            query = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s"
            if admin.execute(query, (pid,)).fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError(f"terminated backend {pid} did not exit")


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A local port that takes connections and never answers: a host that has gone away."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # the kernel completes the handshake; nothing ever replies
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A local port that refuses connections: bound, not listening, while the block runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
