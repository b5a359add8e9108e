"""Where a Celery worker's prefork children publish their figures for the health command.

Public through :mod:`boundkit.celery`. One directory per worker in shared memory
(``/dev/shm/boundkit-celery-<main pid>``), one JSON file per child, written
atomically (:class:`~boundkit.dyno.DynoState`).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from .dyno import DynoState, _shared_memory_dir

__all__ = ["PUBLISHER", "PUBLISH_EVERY", "ChildFiles"]

logger = logging.getLogger("boundkit.celery")

#: A child publishes its figures at most this often (seconds).
PUBLISH_EVERY = 1.0
#: The name of the thread that publishes a child's figures once PUBLISH_EVERY has passed.
PUBLISHER = "boundkit-celery-publish"


class ChildFiles:
    """A worker's directory of child files: each child writes its own, the main process reads.

    A child writes at most once per ``every`` seconds; when a write is due
    later, a timer thread (named ``PUBLISHER``) makes it then, so the last
    figures arrive even if no task follows.
    """

    def __init__(self, directory: str | os.PathLike[str], *, every: float = PUBLISH_EVERY) -> None:
        self.directory = Path(directory)
        self.every = every
        self._state = DynoState(self.directory)
        self._next = 0.0
        self._timer: threading.Timer | None = None

    @classmethod
    def create(cls) -> ChildFiles:
        """Make the directory of this worker (the calling process is its main process)."""
        files = cls(_shared_memory_dir() / f"boundkit-celery-{os.getpid()}")
        files.directory.mkdir(mode=0o700, exist_ok=True)
        return files

    def after_fork(self) -> None:
        """In a new child: no write made or pending yet."""
        self._next = 0.0
        self._timer = None

    def publish(self, figures: dict[str, Any]) -> None:
        """Write this process's ``figures`` now."""
        try:
            self._state.write(self._state.worker_path(os.getpid()), figures)
        except OSError as exc:
            logger.warning("boundkit: cannot publish task stats: %s", exc)

    def publish_soon(self, figures: Callable[[], dict[str, Any]], *, now: bool = False) -> None:
        """Publish ``figures()`` now if ``now`` or the last write is ``every`` old, else then."""
        clock = time.monotonic()
        if now or clock >= self._next:
            self._next = clock + self.every
            self.publish(figures())
        elif self._timer is None:
            self._timer = threading.Timer(self._next - clock, self._pending, (figures,))
            self._timer.name = PUBLISHER
            self._timer.daemon = True
            self._timer.start()

    def _pending(self, figures: Callable[[], dict[str, Any]]) -> None:
        self._timer = None
        self.publish_soon(figures)

    def remove_own(self) -> None:
        """Remove this process's file (a child that exits)."""
        self._state.remove(self._state.worker_path(os.getpid()))

    def live(self) -> list[dict[str, Any]]:
        """The files of live children; those of children gone (killed, say) are removed."""
        found = []
        for path in sorted(self.directory.glob("worker-*.json")):
            pid = path.stem.removeprefix("worker-")
            if not (pid.isdigit() and psutil.pid_exists(int(pid))):
                self._state.remove(path)
                continue
            data = self._state.read(path)
            if isinstance(data, dict):
                found.append(data)
        return found

    def remove_all(self) -> None:
        """Remove the directory, when this process made it (the worker's main process)."""
        if self.directory.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(self.directory, ignore_errors=True)
