"""Byte sizes: estimate what a value occupies, parse human sizes ("512M"), format byte counts.

One convention everywhere in boundkit: every size argument takes bytes or a
string whose unit is binary (``M``, ``MB``, ``MiB`` all mean 1024**2 bytes,
as memory limits are), every log line formats with :func:`format_bytes`
(``"200.0 MiB"``), and every JSON key ending ``_mb`` is in MiB. Stdlib only.
"""

from __future__ import annotations

import gc
import math
import re
import sys
import types
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from ._accel import speedups
from .errors import ConfigError

__all__ = ["estimate_size", "format_bytes", "parse_bytes"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SUFFIXES = ("KiB", "MiB", "GiB", "TiB")
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*")


def parse_bytes(text: str | int, *, name: str = "size") -> int:
    """Return the number of bytes that ``text`` names.

    Units are binary (``K`` = 1024), as memory limits are; ``name`` is used in
    the error message.

    >>> parse_bytes("512M")
    536870912
    >>> parse_bytes("1.5G")
    1610612736
    >>> parse_bytes("512MiB") == parse_bytes("512mb") == 512 * 1024**2
    True
    >>> parse_bytes("4096")
    4096
    """
    if isinstance(text, bool):
        raise ConfigError(f"{name} must be a size such as 512M, not {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"{name} must not be negative, got {text!r}")
        return text
    match = _SIZE.fullmatch(str(text))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(f"{name} must be a size such as 512M, 1.5G or 4096, got {text!r}")
    value = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(value):
        raise ConfigError(f"{name} is out of range: {text!r}")
    return int(value)


def format_bytes(n: float) -> str:
    """Format a byte count with a binary unit, keeping the sign.

    >>> format_bytes(512)
    '512 B'
    >>> format_bytes(1536)
    '1.5 KiB'
    >>> format_bytes(-3 * 1024**2)
    '-3.0 MiB'
    """
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n):
        raise ConfigError(f"format_bytes needs a finite number of bytes, got {n!r}")
    sign = "-" if n < 0 else ""
    value = abs(float(n))
    if value < 1024:
        return f"{sign}{int(value)} B"
    exponent = min(int(math.log(value, 1024)), len(_SUFFIXES))
    return f"{sign}{value / 1024**exponent:.1f} {_SUFFIXES[exponent - 1]}"


# Flat values: their own size is all there is, and nothing inside needs walking.
_FLAT = frozenset({str, bytes, bytearray, int, float, complex, bool, type(None)})
# Program structure shared by the whole process, never counted as a value's size.
_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
# Fast paths for the commonest flat values, which skip sys.getsizeof's method lookup.
_ASCII_STR_HEADER = sys.getsizeof("") + 7
_BYTES_HEADER = sys.getsizeof(b"") + 7
_FLOAT_SIZE = (sys.getsizeof(0.0) + 7) & ~7
_SEQUENCES = (list, tuple, set, frozenset, deque)
_CONTAINERS = (dict, *_SEQUENCES)
# Containers sized without the walker when their items are all flat.
_FLAT_CONTAINERS = frozenset({dict, list, tuple, set, frozenset})
# Containers with more items than this are estimated from an evenly spaced sample.
_SAMPLE_ABOVE = 16
_SAMPLE_ITEMS = 16
# ...or, when their first items are flat, more than this: walking them is cheaper.
_SAMPLE_FLAT_ABOVE = 128
# Objects one estimate descends into; what lies deeper is not counted.
_MAX_OBJECTS = 10_000
_MAX_SAMPLING_DEPTH = 8
_MANAGED_DICT_FLAG = 1 << 4  # Py_TPFLAGS_MANAGED_DICT (CPython 3.11+)
_HAVE_GC = 1 << 14  # Py_TPFLAGS_HAVE_GC: sys.getsizeof adds the collector's header
_GC_HEADER = sys.getsizeof([]) - [].__sizeof__()


def _unshared_refcount() -> int:
    """sys.getrefcount of a loop item that only its container references, on this Python."""
    for item in [object()]:
        return sys.getrefcount(item)
    raise AssertionError("unreachable")


_UNSHARED = _unshared_refcount()


def _attribute_storage(attributes: int) -> int:
    """Estimate the hidden values array of an instance with ``attributes`` attributes.

    On CPython 3.11+ a plain instance keeps its attributes in a values array
    that neither ``sys.getsizeof(obj)`` nor ``gc.get_referents(obj)`` shows;
    tracemalloc puts it at about one pointer per attribute plus 16 bytes.
    Reading ``obj.__dict__`` to measure it would build a dict that stays
    attached, growing what is measured, so the estimator never does.
    """
    return 16 + 8 * attributes


def estimate_size(obj: object) -> int:
    """Estimate the bytes ``obj`` and everything it references occupy.

    Each object counts ``sys.getsizeof`` rounded up to 8 bytes; shared and
    cyclic objects are counted once; classes, modules and functions are
    program structure and are not counted. Flat values (str, bytes,
    bytearray, numbers, None) and dicts, lists, tuples and sets of up to 64
    flat items take a fast path (in C with ``boundkit._speedups``). A container of
    more than 16 items (128 when its items look flat) is estimated from 16
    evenly spaced items unless the sample shows shared items, and one estimate descends into at most
    10,000 objects: what lies deeper is not counted. An instance's attributes are
    found through ``gc.get_referents``, never by reading ``__dict__``, so
    estimating does not change the object. The result is an estimate,
    typically within 10% of ``pympler.asizeof`` except for instances,
    whose split ``__dict__`` pympler overstates (docs/cache.md has figures).

    >>> estimate_size(b"x" * 100)  # sys.getsizeof says 133
    136
    >>> shared = "y" * 1000
    >>> estimate_size([shared, shared]) < 2 * sys.getsizeof(shared)
    True
    >>> cycle = []
    >>> cycle.append(cycle)
    >>> estimate_size(cycle) == sys.getsizeof(cycle)
    True
    """
    size = _flat_size(obj)
    return _Estimate().measure(obj) if size is None else size


def _py_flat_size(obj: object) -> int | None:
    """Size a flat value, or a small dict, list, tuple or set of flat items; None otherwise.

    The pure-Python twin of ``boundkit._speedups.flat_size``: both give the walker's result.
    """
    cls = type(obj)
    if cls is str:
        if obj.isascii():  # type: ignore[attr-defined]
            return (len(obj) + _ASCII_STR_HEADER) & ~7  # type: ignore[arg-type]
    elif cls is bytes:
        return (len(obj) + _BYTES_HEADER) & ~7  # type: ignore[arg-type]
    elif cls is float:
        return _FLOAT_SIZE
    if cls in _FLAT:
        return (obj.__sizeof__() + 7) & ~7
    if cls in _FLAT_CONTAINERS:
        return _small_flat_container(obj)  # type: ignore[arg-type]
    return None


def _small_flat_container(
    obj: dict[object, object] | list[object] | tuple[object, ...] | set[object],
) -> int | None:
    """Size a small container of flat items without the walker; None otherwise."""
    if len(obj) > _MAX_FLAT_ITEMS:
        return None
    parts = (obj.keys(), obj.values()) if type(obj) is dict else (obj,)
    total = (obj.__sizeof__() + _GC_HEADER + 7) & ~7
    seen: set[int] | None = None
    for part in parts:
        for item in part:
            if type(item) not in _FLAT:
                return None
            if sys.getrefcount(item) > _UNSHARED:  # perhaps met twice: count it once
                ident = id(item)
                if seen is None:
                    seen = {ident}
                elif ident in seen:
                    continue
                else:
                    seen.add(ident)
            total += (item.__sizeof__() + 7) & ~7
    return total


# A container of up to this many flat items (a dict: twice as many) is walked at once.
_MAX_FLAT_ITEMS = _SAMPLE_FLAT_ABOVE // 2
_flat_size: Callable[[object], int | None] = _py_flat_size
# The walker's step on an instance: (obj, seen, stack, managed, header) -> its size or None.
_instance_size: Callable[[object, set[int], list[object], bool, int], int | None] | None = None
# The walker's loop over a list, tuple or dict: (children, seen, stack) -> flat items' size or None.
_add_items: Callable[[object, set[int], list[object]], int | None] | None = None
# The walker's step on a list, tuple or dict: (obj, seen, stack, header) -> its size or None.
_container_size: Callable[[object, set[int], list[object], int], int | None] | None = None
if speedups is not None:
    speedups.set_flat_limits(_GC_HEADER, _MAX_FLAT_ITEMS, _SAMPLE_ABOVE, _SHARED)
    _flat_size = speedups.flat_size
    _instance_size = speedups.instance_size
    _add_items = speedups.add_items
    _container_size = speedups.container_size


# How the walker treats an object, by type: what it iterates (if anything) and what
# sys.getsizeof adds to __sizeof__ (the collector's header) plus 7, for rounding up.
_MAPPING, _SEQUENCE, _SKIP, _VIEW, _INSTANCE, _MANAGED_INSTANCE = range(6)
_Kind = tuple[int, int, bool]  # kind, header + 7, whether isinstance could say otherwise
_KINDS: dict[type, _Kind] = {}
_MAX_KINDS = 256  # types remembered; the table starts over beyond this
_EXACT = frozenset({dict, *_SEQUENCES})


def _kind(obj: object, cls: type) -> _Kind:
    """Classify ``obj`` as isinstance does, remembering the answer for ``cls``.

    isinstance consults ``obj.__class__`` when ``cls`` is not a subclass, so the
    answer is remembered only where that attribute is ``cls`` itself, and a
    remembered answer that depends on it is used only while it still is.
    """
    if isinstance(obj, dict):
        kind = _MAPPING
    elif cls in _SEQUENCES or isinstance(obj, _CONTAINERS):
        kind = _SEQUENCE
    elif isinstance(obj, _SHARED):
        kind = _SKIP
    elif isinstance(obj, memoryview):
        kind = _VIEW
    else:
        kind = _MANAGED_INSTANCE if cls.__flags__ & _MANAGED_DICT_FLAG else _INSTANCE
    exact = cls in _EXACT or issubclass(cls, dict)
    info = (kind, (_GC_HEADER if cls.__flags__ & _HAVE_GC else 0) + 7, not exact)
    if exact or obj.__class__ is cls:
        if len(_KINDS) >= _MAX_KINDS:
            _KINDS.clear()
        _KINDS[cls] = info
    return info


class _Estimate:
    """One deep estimate: the objects already counted and the work left."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.budget = _MAX_OBJECTS
        self.depth = 0

    def measure(self, root: object) -> int:
        """Return the size of ``root`` and what it references not yet counted."""
        seen = self.seen
        if id(root) in seen:
            return 0
        seen.add(id(root))
        total = 0
        stack = [root]
        flat = _FLAT
        kinds = _KINDS
        shared = _SHARED
        instance_size = _instance_size
        add_items = _add_items
        container_size = _container_size
        getrefcount = sys.getrefcount
        while stack:
            obj = stack.pop()
            cls = type(obj)
            info = kinds.get(cls)
            if info is None or (info[2] and obj.__class__ is not cls):
                info = _kind(obj, cls)
            kind = info[0]
            children: Sequence[object]
            if kind <= _SEQUENCE:
                if container_size is not None and self.budget > 1:
                    size = container_size(obj, seen, stack, info[1])
                    if size is not None:  # a small list, tuple or dict, in C
                        total += size
                        self.budget -= 1
                        continue
                children = obj  # type: ignore[assignment]
            elif kind == _SKIP:
                continue
            elif kind == _VIEW:
                children = [] if obj.obj is None else [obj.obj]  # type: ignore[attr-defined]
            else:
                if instance_size is not None and self.budget > 1:
                    size = instance_size(obj, seen, stack, kind == _MANAGED_INSTANCE, info[1])
                    if size is not None:  # the instance and its flat attributes, in C
                        total += size
                        self.budget -= 1
                        continue
                children = [
                    ref
                    for ref in gc.get_referents(obj)
                    if type(ref) in flat or not isinstance(ref, shared)
                ]
                if kind == _MANAGED_INSTANCE and not _holds_dict_only(children):
                    total += _attribute_storage(len(children))
            # what sys.getsizeof says, without its slow special-method lookup
            total += (obj.__sizeof__() + info[1]) & ~7
            self.budget -= 1
            if self.budget <= 0:
                continue
            parts: tuple[Iterable[object], ...]
            if kind == _MAPPING:
                parts, count = (children.keys(), children.values()), 2 * len(children)  # type: ignore[attr-defined]
            else:
                parts, count = (children,), len(children)
            if (
                count > _SAMPLE_ABOVE
                and self.depth < _MAX_SAMPLING_DEPTH
                and (count > _SAMPLE_FLAT_ABOVE or not _looks_flat(parts))
            ):
                items = [*parts[0], *parts[1]] if len(parts) == 2 else [*parts[0]]
                sampled = self._sampled(items)
                if sampled is not None:
                    total += sampled
                    continue
                del items  # its references would hide which items are unshared
            if add_items is not None:
                flat_items = add_items(children, seen, stack)
                if flat_items is not None:  # the loop below, in C
                    total += flat_items
                    continue
            for part in parts:
                for child in part:
                    # an item nothing else references cannot be met again: skip the
                    # bookkeeping that counts shared objects once
                    if getrefcount(child) > _UNSHARED:
                        ident = id(child)
                        if ident in seen:
                            continue
                        seen.add(ident)
                    if type(child) in flat:
                        total += (child.__sizeof__() + 7) & ~7
                    else:
                        stack.append(child)
        return total

    def _sampled(self, children: Sequence[object]) -> int | None:
        """Extrapolate the size of ``children`` from a sample, or None if they share items."""
        step = len(children) / _SAMPLE_ITEMS
        sample = [children[int(i * step)] for i in range(_SAMPLE_ITEMS)]
        seen = self.seen
        ids = set(map(id, sample))
        if len(ids) < _SAMPLE_ITEMS or not seen.isdisjoint(ids):
            return None
        self.depth += 1
        sampled = 0
        flat = _FLAT
        for child in sample:
            if type(child) in flat:
                seen.add(id(child))
                sampled += (child.__sizeof__() + 7) & ~7
            else:
                sampled += self.measure(child)
        self.depth -= 1
        return (sampled * len(children) // _SAMPLE_ITEMS + 7) & ~7


def _looks_flat(parts: tuple[Iterable[object], ...]) -> bool:
    """Whether the first item of each part (a dict's first key and value) is flat."""
    for part in parts:
        for item in part:
            if type(item) not in _FLAT:
                return False
            break
    return True


def _holds_dict_only(children: Sequence[object]) -> bool:
    """Whether an instance's referents are just its materialised ``__dict__``."""
    return len(children) == 1 and type(children[0]) is dict
