"""The worker processes of :mod:`boundkit.pdf_isolated`: start, talk to, kill and reuse them.

A worker is a fresh interpreter (``subprocess``: posix_spawn or vfork, so
neither the parent's heap nor its threads are copied) that imports PyMuPDF
once and then serves file after file. An idle worker is kept per memory limit
and reused until it has been idle for the call's ``idle_timeout``; a worker
that died, timed out, hit its limit or grew past half of it is killed and
reaped, and its cgroup removed. Idle workers stop at exit and
are forgotten by forked children, and a worker dies with its parent
(``PR_SET_PDEATHSIG``), so none is left orphaned or unreaped.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import io
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import cast

from ._memcg import MemoryCgroup, create_memory_cgroup
from ._pdf_worker import (
    DONE,
    HEADER,
    LOG,
    NO_MEMORY_STATUS,
    PROTOCOL,
    READY,
    STOP,
    USAGE,
    WRONG_PROTOCOL_STATUS,
    load_plain,
)
from ._sizes import format_bytes
from .errors import ConfigError, PdfError

__all__ = [
    "Worker",
    "WorkerDied",
    "WorkerTimedOut",
    "checkin",
    "checkout",
    "close_isolated_workers",
]

#: Seconds a new worker may take to import PyMuPDF and say it is ready.
START_TIMEOUT = 60.0
#: Seconds a worker told to stop may take to finish cleaning up.
STOP_TIMEOUT = 2.0
_CHUNK = 1 << 20
#: The read buffer is kept between frames up to this size (a 150 dpi letter page is 6 MiB).
_KEEP_BUFFER = 16 << 20


class WorkerDied(Exception):
    """The worker exited (crash, kill, OOM) while an answer was awaited."""


class WorkerTimedOut(Exception):
    """The worker did not answer before the deadline; it has been killed."""


class Worker:
    """One worker process bound to ``limit`` bytes, by a memory cgroup or ``RLIMIT_AS``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.idle_timer: threading.Timer | None = None  # stops it when kept idle too long
        self.cgroup: MemoryCgroup | None = create_memory_cgroup(limit)
        self.resident = 0
        self._buffer = bytearray()
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        cgroup = str(self.cgroup.path) if self.cgroup else "-"
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "boundkit._pdf_worker",
                    PROTOCOL,
                    str(limit),
                    cgroup,
                    str(os.getpid()),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,
                env=env,
            )
        except BaseException:
            if self.cgroup is not None:
                self.cgroup.remove()
            raise
        with contextlib.suppress(OSError):  # fewer, larger reads for big pages
            fcntl.fcntl(self.process.stdout.fileno(), fcntl.F_SETPIPE_SZ, _CHUNK)  # type: ignore[union-attr]
        try:
            kind, _ = self.receive(time.monotonic() + START_TIMEOUT)
        except (WorkerDied, WorkerTimedOut) as exc:
            cause = self.death_cause()
            starved = self.ran_out_of_memory() or self.process.returncode == NO_MEMORY_STATUS
            self.kill()
            if starved:
                raise ConfigError(
                    f"memory_limit {format_bytes(limit)} is too small for the worker to start"
                    f" ({self.bound}): give it at least 128M"
                ) from exc
            if self.process.returncode == WRONG_PROTOCOL_STATUS:
                cause = "the boundkit installed now is not the one this process imported"
            raise PdfError(f"the isolated PDF worker could not start: {cause}") from exc
        if kind != READY:
            self.kill()
            raise PdfError(f"the isolated PDF worker sent {kind!r} instead of ready")

    @property
    def bound(self) -> str:
        """What enforces the limit: ``"cgroup v1"``, ``"cgroup v2"`` or ``"RLIMIT_AS"``."""
        return str(self.cgroup) if self.cgroup else "RLIMIT_AS"

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, message: object) -> None:
        """Write a pickled command; a worker that is gone raises :class:`WorkerDied`."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(pickle.dumps(message, protocol=5))
        except (BrokenPipeError, ValueError) as exc:
            raise WorkerDied("the worker closed its input") from exc

    def receive(self, deadline: float) -> tuple[bytes, bytes]:
        """Read one frame before ``deadline`` (monotonic seconds): ``(kind, payload)``.

        Log records the worker forwards are logged here on the way.
        """
        while True:
            kind, length = HEADER.unpack(self._read(HEADER.size, deadline))
            if length > max(self.limit, _CHUNK):  # the worker cannot have held more than this
                raise WorkerDied(f"the worker sent a frame of {length} bytes")
            payload = self._read(length, deadline)
            if kind != LOG:
                return kind, payload
            name, level, message = load_plain(payload)
            logging.getLogger(str(name)).log(int(level), "%s", message)

    def _read(self, size: int, deadline: float) -> bytes:
        """Read ``size`` bytes into the file's reused buffer (already paged in), return a copy."""
        stream = cast(io.FileIO, self.process.stdout)
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        with memoryview(self._buffer) as view:
            done = 0
            while done < size:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
                    raise WorkerTimedOut(f"no answer in time ({size - done} bytes awaited)")
                count = stream.readinto(view[done : min(size, done + _CHUNK)])
                if not count:
                    raise WorkerDied("the worker closed its output")
                done += count
            data = bytes(view[:size])
        if size > _KEEP_BUFFER:  # not held while the caller works on a very large page
            self.release_buffer()
        return data

    def release_buffer(self) -> None:
        """Drop the read buffer (as large as the largest page of the last file)."""
        self._buffer = bytearray()

    def stop(self) -> None:
        """Close the worker's input so it exits; kill it if it does not within a moment."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(STOP_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def kill(self) -> None:
        """Kill the worker (if still running), reap it, close the pipes, remove its cgroup."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.close_pipes()
        if self.cgroup is not None:
            self.cgroup.remove()

    def close_pipes(self) -> None:
        """Close this process's ends of the worker's pipes."""
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def ran_out_of_memory(self) -> bool:
        """True when the kernel killed the worker for exceeding its cgroup's limit."""
        return self.cgroup is not None and self.cgroup.oom_kills() > 0

    def death_cause(self) -> str:
        """How the worker ended, after it died: a signal name or an exit status."""
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return "it broke the protocol and was killed"
        if code < 0:
            return f"it was killed by {signal.Signals(-code).name}"
        return f"it exited with status {code}"


_lock = threading.Lock()
_idle: dict[int, Worker] = {}


def checkout(limit: int) -> Worker:
    """An idle worker bound to ``limit`` bytes, or a new one."""
    with _lock:
        worker = _idle.pop(limit, None)
    if worker is not None and worker.idle_timer is not None:
        worker.idle_timer.cancel()
    if worker is not None and worker.alive():
        return worker
    if worker is not None:
        worker.kill()
    return Worker(limit)


def checkin(worker: Worker, idle_timeout: float | None) -> None:
    """Keep a worker that finished a request cleanly for the next one, for ``idle_timeout``
    seconds (``None``: until stopped); stop it otherwise."""
    worker.release_buffer()
    if worker.alive() and worker.resident <= worker.limit // 2 and idle_timeout != 0:
        with _lock:
            if worker.limit not in _idle:
                _idle[worker.limit] = worker
                if idle_timeout is not None:
                    worker.idle_timer = threading.Timer(idle_timeout, _stop_idle, (worker,))
                    worker.idle_timer.daemon = True
                    worker.idle_timer.start()
                return
    worker.stop()


def _stop_idle(worker: Worker) -> None:
    """Stop ``worker`` if it is still idle since this timer started (a checkout may have
    taken it meanwhile, and a checkin started another timer)."""
    with _lock:
        if (
            _idle.get(worker.limit) is not worker
            or worker.idle_timer is not threading.current_thread()
        ):
            return
        del _idle[worker.limit]
    worker.stop()


def stop_gracefully(worker: Worker, idle_timeout: float | None) -> None:
    """Tell a worker in the middle of a request to stop it, then keep or kill the worker."""
    try:
        worker.send(STOP)
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            kind, payload = worker.receive(deadline)
            if kind == DONE:
                worker.resident = USAGE.unpack(payload)[0]
                break
    except (WorkerDied, WorkerTimedOut):
        worker.kill()
        return
    checkin(worker, idle_timeout)


def close_isolated_workers() -> None:
    """Stop the idle isolated PDF workers (they are also stopped at exit).

    Each idle worker holds the interpreter and PyMuPDF (about 50 MiB
    resident); the next isolated call starts a new one.
    """
    with _lock:
        workers = list(_idle.values())
        _idle.clear()
    for worker in workers:
        if worker.idle_timer is not None:
            worker.idle_timer.cancel()
        worker.stop()


_inherited: list[Worker] = []


def _forget_after_fork() -> None:
    """A forked child must not use, nor kill, its parent's workers, nor hold their pipes open."""
    global _lock
    _lock = threading.Lock()
    for worker in _idle.values():
        worker.close_pipes()
        _inherited.append(worker)  # never collected here: Popen would warn it still runs
    _idle.clear()


atexit.register(close_isolated_workers)
os.register_at_fork(after_in_child=_forget_after_fork)
