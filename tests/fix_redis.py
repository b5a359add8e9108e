"""Redis for the tests: the shared server's databases 9-13, and throwaway servers.

``redis_db(n)`` connects to database ``n`` of 127.0.0.1:6379 and flushes it
before and after; ``redis_server()`` starts a ``redis-server`` of the test's
own on a free port (the only kind a test may stop or restart). Without Redis
the tests skip, unless ``CI`` is set: then they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, stopped at the end."""
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _version(client: Any) -> tuple[int, ...]:
    return tuple(int(part) for part in str(client.info("server")["redis_version"]).split("."))


@pytest.fixture
def tracking_redis(tmp_path: Path) -> Iterator[str]:
    """The URL of a Redis that redis-py's client-side cache accepts (7.4 or later).

    Database 11 of 127.0.0.1:6379 when that server is new enough, else a server
    of the test's own from the binary named by ``BOUNDKIT_REDIS_SERVER``; the
    test skips without either (redis-py refuses older servers).
    """
    redis = pytest.importorskip("redis")
    with redis_db(11) as client:
        found = ".".join(map(str, _version(client)))
        if _version(client) >= (7, 4):
            yield f"redis://{HOST}:{PORT}/11"
            return
    binary = os.environ.get("BOUNDKIT_REDIS_SERVER")
    if not binary:
        pytest.skip(
            f"redis-py {redis.__version__} needs Redis 7.4+ for client-side caching; "
            f"127.0.0.1:6379 runs {found} and BOUNDKIT_REDIS_SERVER names no newer redis-server"
        )
    server = RedisServer(tmp_path, binary)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
