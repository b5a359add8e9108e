"""The optional C accelerator, ``boundkit._speedups``, or None to run in pure Python.

It is used unless it failed to build, the environment variable
``BOUNDKIT_PURE_PYTHON`` is set (to anything but ``""`` or ``"0"``) when boundkit
is imported, or CPython runs without the GIL (its lock-free hit path relies on
the GIL). Both implementations behave the same; the C one is faster.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

#: False on a free-threaded CPython running without the GIL: hits then take the lock.
GIL_ENABLED: bool = getattr(sys, "_is_gil_enabled", lambda: True)()


def _load() -> ModuleType | None:
    if os.environ.get("BOUNDKIT_PURE_PYTHON", "") not in ("", "0") or not GIL_ENABLED:
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups


speedups = _load()
