"""Recycle gunicorn workers by memory: hooks for ``gunicorn.conf.py``.

gunicorn recycles workers only by request count (``max_requests``). These
hooks retire a worker once its resident memory passes ``max_worker_memory``:
the worker finishes the request in hand and exits, and the arbiter starts a
fresh one. Nothing here imports gunicorn::

    # gunicorn.conf.py
    from boundkit.gunicorn import WorkerRecycler

    recycler = WorkerRecycler(max_worker_memory="300M", jitter=0.1)
    post_fork = recycler.post_fork
    post_request = recycler.post_request
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from ._sizes import format_bytes, parse_bytes
from .errors import ConfigError
from .memory import process_memory

__all__ = ["WorkerRecycler"]

logger = logging.getLogger("boundkit.gunicorn")


def _rss() -> int:
    return process_memory().rss


class WorkerRecycler:
    """gunicorn hooks that retire a worker whose RSS passes ``max_worker_memory``.

    Each worker draws its own threshold once, at fork, uniformly between
    ``max_worker_memory * (1 - jitter)`` and ``max_worker_memory``, so workers
    that grow alike do not all restart at once. ``check_every`` checks RSS
    after every n-th request (a check reads ``/proc/self/statm``: about a
    microsecond). ``reader`` and ``rng`` are injectable for tests. Messages
    go to the worker's gunicorn log (else the ``boundkit.gunicorn`` logger).
    """

    def __init__(
        self,
        *,
        max_worker_memory: int | str,
        jitter: float = 0.1,
        check_every: int = 1,
        reader: Callable[[], int] = _rss,
        rng: random.Random | None = None,
    ) -> None:
        self.max_worker_memory = parse_bytes(max_worker_memory, name="max_worker_memory")
        if self.max_worker_memory <= 0:
            raise ConfigError(f"max_worker_memory must be above zero, got {max_worker_memory!r}")
        if isinstance(jitter, bool) or not (isinstance(jitter, (int, float)) and 0 <= jitter < 1):
            raise ConfigError(f"jitter must be a fraction in [0, 1), got {jitter!r}")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ConfigError(f"check_every must be an int >= 1, got {check_every!r}")
        self.jitter = float(jitter)
        self.check_every = check_every
        self._reader = reader
        self._rng = rng or random.Random()
        self._reseed = rng is None
        self.threshold = self.draw_threshold()
        self._requests = 0

    def draw_threshold(self) -> int:
        """Draw a jittered threshold in bytes (done per worker in :meth:`post_fork`)."""
        low = self.max_worker_memory * (1 - self.jitter)
        return int(self._rng.uniform(low, self.max_worker_memory))

    def post_fork(self, server: Any, worker: Any) -> None:
        """gunicorn ``post_fork``: a fresh threshold and request count for the new worker.

        Pools need nothing here: :mod:`boundkit.pg` forgets the parent's pools in
        every forked child (``os.register_at_fork``), so each worker opens its own.
        """
        if self._reseed:
            self._rng.seed()  # otherwise every child would draw the parent's next number
        self.threshold = self.draw_threshold()
        self._requests = 0
        getattr(worker, "log", logger).info(
            "worker %s retires above %s of RSS",
            getattr(worker, "pid", "?"),
            format_bytes(self.threshold),
        )

    def post_request(self, worker: Any, req: Any, environ: Any, resp: Any) -> None:
        """gunicorn ``post_request``: retire the worker gracefully if over its threshold."""
        self._requests += 1
        if self._requests % self.check_every:
            return
        rss = self._reader()
        if rss >= self.threshold and getattr(worker, "alive", False):
            getattr(worker, "log", logger).warning(
                "worker %s: RSS %s is over %s; retiring it after this request",
                getattr(worker, "pid", "?"),
                format_bytes(rss),
                format_bytes(self.threshold),
            )
            worker.alive = False
