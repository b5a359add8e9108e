"""Fakes the tests inject where boundkit takes a clock or a memory reader."""

from __future__ import annotations

MB = 1024**2


class FakeTimer:
    """A clock that moves only when a test ticks it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


class FakeMemory:
    """A memory reader that reports what a test sets in ``used``."""

    def __init__(self, used: int = 10 * MB) -> None:
        self.used = used

    def __call__(self) -> int:
        return self.used
