"""Redis for the tests: the shared server's databases 9-13, and throwaway servers.

``redis_db(n)`` connects to database ``n`` of 127.0.0.1:6379 and flushes it
before and after; ``redis_server()`` starts a ``redis-server`` of the test's
own on a free port (the only kind a test may stop or restart);
``tracking_server()`` starts one that redis-py's client-side cache accepts
(7.4+, from ``BOUNDKIT_REDIS_SERVER``). Without Redis the tests skip, unless
``CI`` is set: then they fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fix_servers import free_port

HOST, PORT = "127.0.0.1", 6379


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def redis_db(number: int) -> Iterator[Any]:
    """A client of database ``number`` (9-13 are this project's), flushed around the test."""
    redis = pytest.importorskip("redis")
    client = redis.Redis(host=HOST, port=PORT, db=number, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        _unavailable(f"no Redis at {HOST}:{PORT}: {exc}")
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


class RedisServer:
    """A redis-server this test started (no persistence), which it may stop and start;
    ``options`` are more command-line settings (``"--enable-debug-command", "yes"``)."""

    def __init__(
        self, directory: Path, binary: str = "redis-server", options: tuple[str, ...] = ()
    ) -> None:
        self.binary = binary
        self.options = options
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", HOST, "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.directory), *self.options]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        redis = pytest.importorskip("redis")
        client = redis.Redis(host=HOST, port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@contextlib.contextmanager
def _running(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, stopped at the end."""
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not installed")
    with _running(RedisServer(tmp_path)) as server:
        yield server


#: redis-py refuses client-side caching with an older server (or one not Redis).
TRACKING_VERSION = (7, 4)


def _binary_version(binary: str) -> tuple[int, ...] | None:
    """The version of the Redis server ``binary`` (``--version``), None if it is none."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    found = re.match(r"Redis server v=(\d+)\.(\d+)\.(\d+)", done.stdout)
    return tuple(int(part) for part in found.groups()) if found else None


def tracking_binary() -> str:
    """The redis-server 7.4+ that ``BOUNDKIT_REDIS_SERVER`` names, else skip (fail under CI).

    ``python3 .ci/redis_server.py`` builds one from Debian's source and prints its path.
    """
    binary = os.environ.get("BOUNDKIT_REDIS_SERVER")
    if not binary:
        _unavailable(
            "redis-py needs Redis 7.4+ for client-side caching and BOUNDKIT_REDIS_SERVER "
            "names no such redis-server (python3 .ci/redis_server.py builds one)"
        )
    found = _binary_version(binary)
    if found is None or found < TRACKING_VERSION:
        version = "not a Redis server" if found is None else ".".join(map(str, found))
        _unavailable(f"BOUNDKIT_REDIS_SERVER={binary} is not a redis-server 7.4+ ({version})")
    return binary


@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server 7.4+ of this test's own (``BOUNDKIT_REDIS_SERVER``), stopped at the end."""
    with _running(RedisServer(tmp_path, tracking_binary())) as server:
        yield server


def _version(client: Any) -> tuple[int, ...]:
    return tuple(int(part) for part in str(client.info("server")["redis_version"]).split("."))


@pytest.fixture
def tracking_redis(tmp_path: Path) -> Iterator[str]:
    """The URL of a Redis that redis-py's client-side cache accepts (7.4 or later).

    Database 11 of 127.0.0.1:6379 when that server is new enough, else a server
    of the test's own from :func:`tracking_binary`.
    """
    with redis_db(11) as client:
        if _version(client) >= TRACKING_VERSION:
            yield f"redis://{HOST}:{PORT}/11"
            return
    with _running(RedisServer(tmp_path, tracking_binary())) as server:
        yield server.url
