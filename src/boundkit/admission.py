"""Admission: heavy work reserves its memory from one budget shared by the whole dyno.

``with reserve("150M"):`` (or ``async with``) waits until the dyno has room
for 150 MiB more, holds it for the block and gives it back at exit. Every
process of the dyno (gunicorn workers, Celery children, plain forks) shares
one small table in shared memory (``/dev/shm``): a slot per holder or waiter
with its pid, the pid's start time, the amount and a ticket. Updates are
made under a POSIX record lock of the file (``lockf``), which the kernel
drops when its holder dies and which a forked child never inherits. A slot
whose process is gone (even by SIGKILL) or whose pid now names another
process is freed by the next caller, so a dead holder never keeps its
reservation. Waiters are admitted strictly in ticket order (FIFO): a
large reservation is never starved by a stream of small ones. A wait longer
than ``timeout`` raises :class:`~boundkit.AdmissionTimeout`, which the web
middleware answers with 503 and ``Retry-After``.

No server, no thread: waiters poll the table (2 ms, doubling up to 50 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import math
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from . import dyno
from ._sizes import format_bytes, parse_bytes
from .errors import AdmissionTimeout, ConfigError
from .memory import dyno_memory
from .share import HEADROOM, MIN_HEADROOM

__all__ = [
    "ENV_ADMISSION_FILE",
    "Admission",
    "AdmissionStatus",
    "Reservation",
    "admission_budget",
    "default_admission",
    "pdf_reserve_default",
    "reserve",
    "reserve_for_pdf",
]

#: Names the shared file; processes that set the same path share one budget.
ENV_ADMISSION_FILE = "BOUNDKIT_ADMISSION_FILE"
_MAGIC = b"bkadm01\0"
_HEADER = struct.Struct("<8sqq")  # magic, next ticket, budget
_SLOT = struct.Struct("<iiqqq")  # state, pid, pid start time, amount, ticket
_FREE, _WAITING, _HELD = 0, 1, 2
_FIRST_POLL, _MAX_POLL = 0.002, 0.05
#: How long :func:`~boundkit.open_pdf` with ``reserve=`` waits for room.
PDF_TIMEOUT = 30.0
_MIB = 1024 * 1024


def _shared_dir() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def _default_path() -> Path:
    """The dyno's file: named by the environment, the governed dyno, else the process group."""
    named = os.environ.get(ENV_ADMISSION_FILE)
    if named:
        return Path(named)
    state = dyno.DynoState.from_environ()
    if state is not None:
        return state.directory / "admission"
    return _shared_dir() / f"boundkit-admission-{os.getuid()}-{os.getpgrp()}"


def _start_time(pid: int) -> int:
    """The pid's start time in clock ticks since boot (0 when unknown); -1 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rpartition(b")")[2].split()[19])
    except FileNotFoundError:
        return -1
    except (OSError, ValueError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return -1
        except PermissionError:
            pass
        return 0


def admission_budget() -> int:
    """The default budget: the dyno's room for heavy work, in bytes.

    In a worker under a share plan: the limit less the headroom, the arbiter
    and every worker's footprint and cache budget. Elsewhere: the dyno's
    limit less its current total (:func:`~boundkit.dyno_memory`) and a
    headroom of 8% (at least 24 MiB), measured once by the first process
    that opens the budget.
    """
    plan = dyno.current_plan()
    if plan is None and (state := dyno.DynoState.from_environ()):
        plan = state.read_plan()
    if plan is not None:
        warm = plan.workers * (plan.footprint + plan.cache_budget)
        return max(plan.limit - plan.headroom - plan.arbiter - warm, 0)
    total = dyno_memory(processes=False)
    return max(total.limit - total.used - max(int(total.limit * HEADROOM), MIN_HEADROOM), 0)


@dataclass(frozen=True)
class AdmissionStatus:
    """The shared table at one moment: ``budget``, ``held`` and ``waiting`` bytes, in bytes.

    ``holders`` and ``waiters`` count slots; ``queue`` lists the waiting
    ``(pid, amount)`` in admission order.
    """

    budget: int
    held: int
    holders: int
    waiting: int
    waiters: int
    queue: tuple[tuple[int, int], ...]

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (sizes in bytes, plus ``_mb`` figures)."""
        return {
            "budget": self.budget,
            "held": self.held,
            "holders": self.holders,
            "waiting": self.waiting,
            "waiters": self.waiters,
            "queue": [list(entry) for entry in self.queue],
            "budget_mb": round(self.budget / _MIB, 1),
            "held_mb": round(self.held / _MIB, 1),
        }


class _Table:
    """The shared file under its lock: the header and the occupied slots by index."""

    def __init__(self, fd: int, slots: int) -> None:
        self.fd = fd
        self.size = slots
        data = os.pread(fd, _HEADER.size + slots * _SLOT.size, 0)
        self.next_ticket, self.budget = 1, 0
        self.used: dict[int, list[int]] = {}
        self.changed: set[int] = set()
        self.header_changed = data[: len(_MAGIC)] != _MAGIC
        if not self.header_changed:
            _, self.next_ticket, self.budget = _HEADER.unpack_from(data)
            end = _HEADER.size + (len(data) - _HEADER.size) // _SLOT.size * _SLOT.size
            for index, slot in enumerate(_SLOT.iter_unpack(data[_HEADER.size : end])):
                if slot[0] != _FREE:
                    self.used[index] = list(slot)

    def set(self, index: int, slot: list[int] | None) -> None:
        if slot is None:
            self.used.pop(index, None)
        else:
            self.used[index] = slot
        self.changed.add(index)

    def take_ticket(self) -> int:
        ticket = self.next_ticket
        self.next_ticket += 1
        self.header_changed = True
        return int(ticket)

    def free_index(self) -> int | None:
        return next((i for i in range(self.size) if i not in self.used), None)

    def reap(self) -> None:
        """Free the slots of processes that are gone or whose pid was reused."""
        alive: dict[int, int] = {}
        for index, slot in list(self.used.items()):
            pid = slot[1]
            if pid not in alive:
                alive[pid] = _start_time(pid)
            if alive[pid] == -1 or (alive[pid] and slot[2] and alive[pid] != slot[2]):
                self.set(index, None)

    def held(self) -> int:
        return sum(slot[3] for slot in self.used.values() if slot[0] == _HELD)

    def queue(self) -> list[list[int]]:
        return sorted((s for s in self.used.values() if s[0] == _WAITING), key=lambda s: s[4])

    def write(self) -> None:
        if self.header_changed:
            os.pwrite(self.fd, _HEADER.pack(_MAGIC, self.next_ticket, self.budget), 0)
        for index in self.changed:
            slot = self.used.get(index, [_FREE, 0, 0, 0, 0])
            os.pwrite(self.fd, _SLOT.pack(*slot), _HEADER.size + index * _SLOT.size)


#: The record lock excludes other processes; this excludes the other threads of this one.
_threads = threading.Lock()


def _reset_after_fork() -> None:
    global _threads
    _threads = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)

#: Bytes this context (thread or task) already holds per table: nested reservations add only
#: what they need beyond it, so a render inside a reserved request does not wait for itself.
_held_here: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "boundkit_admission_held", default=None
)


#: What :func:`~boundkit.open_pdf` and :func:`~boundkit.render_pages` reserve when called
#: without ``reserve=``: False, except inside a task of a Celery app under
#: :func:`boundkit.celery.install` (True: each document reserves its page budget).
pdf_reserve_default: contextvars.ContextVar[bool | int | str] = contextvars.ContextVar(
    "boundkit_pdf_reserve_default", default=False
)


class Admission:
    """One budget shared by every process that opens the same file.

    ``path`` defaults to ``BOUNDKIT_ADMISSION_FILE``, else the governed
    dyno's directory, else a file per user and process group in
    ``/dev/shm`` (gunicorn workers, Celery children and forks share their
    parent's group). ``budget`` (bytes or a size such as ``"300M"``) is
    written to the file for every process; without it the file keeps the
    budget it has, or :func:`admission_budget` sets it. ``slots`` caps the
    holders and waiters at once. ``timer`` and ``sleep`` are injectable.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        budget: int | str | None = None,
        slots: int = 128,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ConfigError(f"slots must be an int >= 1, got {slots!r}")
        self.path = Path(path) if path is not None else _default_path()
        self.slots = slots
        self._timer = timer
        self._key = str(self.path)
        wanted = None if budget is None else parse_bytes(budget, name="budget")
        if wanted is not None and wanted <= 0:
            raise ConfigError(f"budget must be more than zero bytes, got {budget!r}")
        with self._locked() as table:
            if wanted is not None or table.budget <= 0:
                table.budget = wanted if wanted is not None else admission_budget()
                table.header_changed = True
        self._pid = os.getpid()
        self._start = _start_time(self._pid)

    def __repr__(self) -> str:
        return f"<Admission {self.path}>"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Table]:
        # a POSIX record lock belongs to the process: a child forked meanwhile does not hold
        # it (an flock would be shared with the child through the inherited descriptor)
        with _threads:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
                table = _Table(fd, self.slots)
                yield table
                table.write()
            finally:
                os.close(fd)  # drops the lock

    @property
    def budget(self) -> int:
        """The budget every process sharing the file admits against, in bytes."""
        with self._locked() as table:
            return int(table.budget)

    def status(self) -> AdmissionStatus:
        """The table now, with dead processes' slots freed."""
        with self._locked() as table:
            table.reap()
            waiting = table.queue()
            return AdmissionStatus(
                budget=int(table.budget),
                held=table.held(),
                holders=sum(1 for slot in table.used.values() if slot[0] == _HELD),
                waiting=sum(slot[3] for slot in waiting),
                waiters=len(waiting),
                queue=tuple((slot[1], slot[3]) for slot in waiting),
            )

    def reserve(self, amount: int | str, *, timeout: float = 30.0) -> Reservation:
        """Return a context manager (``with`` or ``async with``) holding ``amount`` bytes."""
        return Reservation(self, amount, timeout=timeout)

    # one step of the protocol each, all under the file's lock ------------------

    def _me(self) -> tuple[int, int]:
        pid = os.getpid()
        if pid != self._pid:  # forked since: this process has its own identity
            self._pid, self._start = pid, _start_time(pid)
        return self._pid, max(self._start, 0)

    def _enqueue(self, amount: int) -> tuple[int, int] | None:
        """Take a ticket and a slot, held at once if it is first and fits; None if none is free."""
        pid, start = self._me()
        with self._locked() as table:
            table.reap()
            if amount > table.budget:
                raise ConfigError(
                    f"cannot reserve {format_bytes(amount)}: the whole budget is "
                    f"{format_bytes(table.budget)}"
                )
            index = table.free_index()
            if index is None:
                return None
            ticket = table.take_ticket()
            fits = not table.queue() and table.held() + amount <= table.budget
            table.set(index, [_HELD if fits else _WAITING, pid, start, amount, ticket])
            return index, ticket

    def _try_admit(self, index: int, ticket: int) -> bool:
        """Hold the waiting slot if it heads the queue and fits."""
        with self._locked() as table:
            table.reap()
            slot = table.used.get(index)
            if slot is None or slot[4] != ticket:
                raise RuntimeError(f"admission slot lost: {self.path} was replaced or reset")
            if slot[0] == _HELD:
                return True
            if table.queue()[0] is not slot or table.held() + slot[3] > table.budget:
                return False
            slot[0] = _HELD
            table.changed.add(index)
            return True

    def _leave(self, index: int, ticket: int) -> None:
        with self._locked() as table:
            slot = table.used.get(index)
            if slot is not None and slot[4] == ticket:
                table.set(index, None)


class Reservation:
    """``amount`` bytes of an :class:`Admission`'s budget for one ``with`` block.

    Entering waits (FIFO) until the amount fits, for up to ``timeout``
    seconds, then raises :class:`~boundkit.AdmissionTimeout`; ``async
    with`` waits with ``asyncio.sleep``. Inside a block that already holds
    a reservation of the same budget, only the difference is reserved.
    ``waited`` is the seconds spent waiting.
    """

    def __init__(self, admission: Admission, amount: int | str, *, timeout: float) -> None:
        self.amount = parse_bytes(amount, name="amount")
        if self.amount < 0:
            raise ConfigError(f"amount must not be negative, got {amount!r}")
        ok = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
        if not ok or not timeout >= 0 or math.isinf(timeout):
            raise ConfigError(f"timeout must be finite seconds >= 0, got {timeout!r}")
        self.admission = admission
        self.timeout = float(timeout)
        self.waited = 0.0
        self._slot: tuple[int, int] | None = None
        self._token: contextvars.Token[dict[str, int] | None] | None = None
        self._need = 0

    def __repr__(self) -> str:
        state = "held" if self._slot is not None else "not held"
        return f"<Reservation {format_bytes(self.amount)} {state}>"

    def _plan(self) -> int:
        key = self.admission._key
        outer = _held_here.get() or {}
        self._need = max(self.amount - outer.get(key, 0), 0)
        self._token = _held_here.set({**outer, key: max(outer.get(key, 0), self.amount)})
        return self._need

    def _step(self, deadline: float) -> bool:
        admission = self.admission
        if self._slot is None:
            self._slot = admission._enqueue(self._need)
            if self._slot is None:
                return admission._timer() >= deadline and self._fail()
        if admission._try_admit(*self._slot):
            return True
        return admission._timer() >= deadline and self._fail()

    def _fail(self) -> bool:
        slot, self._slot = self._slot, None
        if slot is not None:
            self.admission._leave(*slot)
        self._restore()
        status = self.admission.status()
        raise AdmissionTimeout(
            f"no room for {format_bytes(self._need)} within {self.timeout:g} s: "
            f"{format_bytes(status.held)} of {format_bytes(status.budget)} held, "
            f"{status.waiters} waiting",
            retry_after=max(1, math.ceil(self.timeout)),
        )

    def _restore(self) -> None:
        if self._token is not None:
            _held_here.reset(self._token)
            self._token = None

    def _release(self) -> None:
        slot, self._slot = self._slot, None
        try:
            if slot is not None:
                self.admission._leave(*slot)
        finally:
            self._restore()

    def _attempts(self) -> Generator[float, None, None]:
        """Try to be admitted; between tries yield the seconds to sleep. Releases on any exit."""
        started = self.admission._timer()
        deadline = started + self.timeout
        poll = _FIRST_POLL
        try:
            while not self._step(deadline):
                yield poll
                poll = min(poll * 2, _MAX_POLL)
        except BaseException:  # the timeout, or the caller interrupted while sleeping
            self._release()
            raise
        finally:
            self.waited = self.admission._timer() - started

    def __enter__(self) -> Reservation:
        if self._plan():
            with contextlib.closing(self._attempts()) as attempts:
                for seconds in attempts:
                    time.sleep(seconds)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    async def __aenter__(self) -> Reservation:
        if self._plan():
            with contextlib.closing(self._attempts()) as attempts:
                for seconds in attempts:
                    await asyncio.sleep(seconds)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()


_default: Admission | None = None
_default_lock = threading.Lock()


def default_admission() -> Admission:
    """The admission :func:`reserve` uses: this dyno's file, opened on first use per process."""
    global _default
    with _default_lock:
        if _default is None or _default.path != _default_path():
            _default = Admission()
        return _default


def reserve(amount: int | str, *, timeout: float = 30.0) -> Reservation:
    """Hold ``amount`` (bytes or a size such as ``"150M"``) of the dyno's budget for a block.

    ``with reserve("150M"):`` or ``async with reserve("150M"):`` waits in
    FIFO order, up to ``timeout`` seconds, for room in the budget every
    process of the dyno shares (:func:`default_admission`), then raises
    :class:`~boundkit.AdmissionTimeout`.
    """
    return default_admission().reserve(amount, timeout=timeout)


def reserve_for_pdf(reserve: bool | int | str, budget: int) -> Reservation:
    """Enter and return the reservation of an ``open_pdf(..., reserve=...)`` block.

    ``reserve=True`` holds the block's page ``budget``; a size holds that
    amount. Waits up to ``PDF_TIMEOUT`` seconds.
    """
    if reserve is False:
        raise ConfigError("reserve_for_pdf() needs reserve=True or a size")
    reservation = default_admission().reserve(
        budget if reserve is True else reserve, timeout=PDF_TIMEOUT
    )
    return reservation.__enter__()
