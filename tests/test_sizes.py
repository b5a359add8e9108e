"""Tests of boundkit._sizes: parsing and formatting byte sizes."""

import gc
import sys
import time
from dataclasses import dataclass

import pytest

from boundkit import ConfigError, _sizes
from boundkit._sizes import estimate_size, format_bytes, parse_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1k", 1024),
        ("1 KiB", 1024),
        ("2GB", 2 * 1024**3),
        (".5M", 512 * 1024),
        (" 7 ", 7),
        (123, 123),
    ],
)
def test_parse_bytes_accepts_units(text: str | int, expected: int) -> None:
    """Binary units, spaces, fractions and plain integers are understood."""
    assert expected == parse_bytes(text)


@pytest.mark.parametrize("text", ["lots", "", "12 parsecs", "-5M", "1e9", "NaN", -1, True])
def test_parse_bytes_rejects_nonsense_naming_the_value(text: object) -> None:
    """A value that is not a size raises ConfigError naming the value and the setting."""
    with pytest.raises(ConfigError, match="limit") as info:
        parse_bytes(text, name="limit")  # type: ignore[arg-type]
    assert repr(text) in str(info.value)


def test_format_bytes_picks_the_largest_unit_below_1024() -> None:
    """Each unit is used up to 1024 of it."""
    assert "1023 B" == format_bytes(1023)
    assert "1.0 MiB" == format_bytes(1024**2)
    assert "2.0 TiB" == format_bytes(2 * 1024**4)


# -- estimate_size -------------------------------------------------------------------


def aligned(obj: object) -> int:
    """What estimate_size counts for one object on its own."""
    return (sys.getsizeof(obj) + 7) & ~7


@pytest.mark.parametrize(
    "value", ["", "ascii text", "non-ascii é", b"", b"bytes", bytearray(b"abc"), 0, 2**100, 1.5, 3j]
)
def test_flat_values_cost_their_own_size(value: object) -> None:
    """A flat value counts sys.getsizeof rounded up to 8 bytes, however it is reached."""
    assert aligned(value) == estimate_size(value)


def test_containers_add_their_items() -> None:
    """A list, tuple, set, frozenset or dict counts itself plus each distinct item."""
    items = ["alpha" * 3, "beta" * 4, 10**20]
    expected_items = sum(aligned(item) for item in items)
    for container in (list(items), tuple(items), set(items), frozenset(items)):
        assert aligned(container) + expected_items == estimate_size(container)
    mapping = {"key one": items[0], "key two": items[1]}
    keys = aligned("key one") + aligned("key two")
    assert aligned(mapping) + keys + aligned(items[0]) + aligned(items[1]) == estimate_size(mapping)


def test_shared_objects_are_counted_once() -> None:
    """An object referenced twice is counted once."""
    shared = "s" * 1000
    assert aligned([shared, shared]) + aligned(shared) == estimate_size([shared, shared])


def test_cycles_terminate_and_count_each_object_once() -> None:
    """A self-referencing structure is finite in size."""
    a: list[object] = []
    b: dict[str, object] = {"a": a}
    a.append(b)
    assert aligned(a) + aligned(b) + aligned("a") == estimate_size(a)


@dataclass
class Point:
    x: int
    label: str


class Slotted:
    __slots__ = ("data", "name")

    def __init__(self) -> None:
        self.name = "slotted name"
        self.data = [10**30, 10**31]


def test_slots_objects_count_their_slot_values() -> None:
    """An object with __slots__ counts itself and what its slots hold."""
    obj = Slotted()
    expected = aligned(obj) + aligned(obj.name) + aligned(obj.data)
    expected += aligned(10**30) + aligned(10**31)
    assert expected == estimate_size(obj)


def test_instances_are_measured_without_materialising_their_dict() -> None:
    """Estimating a plain instance counts its attributes and leaves no __dict__ behind."""
    point = Point(10**20, "a label that is long")
    size = estimate_size(point)
    assert size >= aligned(point) + aligned(point.x) + aligned(point.label)
    referents = gc.get_referents(point)
    assert not any(type(ref) is dict for ref in referents), "estimate_size built a __dict__"
    assert size == estimate_size(point)


def test_memoryview_counts_the_buffer_it_views() -> None:
    """A memoryview counts itself and its underlying object."""
    data = b"m" * 5000
    view = memoryview(data)
    assert aligned(view) + aligned(data) == estimate_size(view)


def test_classes_and_functions_are_not_counted() -> None:
    """Program structure (types, functions, modules) is shared, not the value's size."""
    structure = [int, len, sys, aligned]
    assert aligned(structure) == estimate_size(structure)


def test_large_homogeneous_containers_are_sampled_close_to_exact() -> None:
    """A big list of similar records is estimated from a sample, within 10% of a full walk."""
    records = [{"id": 10**6 + i, "name": f"record number {i}"} for i in range(5000)]
    exact = aligned(records) + sum(
        aligned(r) + aligned(r["id"]) + aligned(r["name"]) for r in records
    )
    exact += aligned("id") + aligned("name")
    assert abs(estimate_size(records) - exact) < 0.1 * exact


def test_sampling_falls_back_when_items_are_shared() -> None:
    """A big list repeating one object is not extrapolated from the sample."""
    shared = "x" * 10_000
    many = [shared] * 1000
    assert aligned(many) + aligned(shared) == estimate_size(many)


def test_huge_and_deep_inputs_are_bounded_work() -> None:
    """200,000 items and 100,000 levels of nesting finish quickly without recursion."""
    huge = [[i, str(i)] for i in range(200_000)]
    started = time.perf_counter()
    assert estimate_size(huge) > 200_000 * 50
    deep: list[object] = []
    node = deep
    for _ in range(100_000):
        child: list[object] = []
        node.append(child)
        node = child
    assert estimate_size(deep) >= aligned([])
    assert time.perf_counter() - started < 10, "estimate_size did not cap its work"


@pytest.mark.parametrize(
    "value",
    [
        {"a": "a", "b": 10**20},
        {f"key{i}": i * 1000 for i in range(10)},
        ["x" * 50, "x" * 50, b"y", 1.5, None, True],
        ("shared", "shared", 3),
        [],
    ],
)
def test_small_flat_fast_path_agrees_with_the_walker(value: object) -> None:
    """Small containers of flat values, sized without the walker, come out the same."""
    assert _sizes._Estimate().measure(value) == estimate_size(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1", None, True])
def test_format_bytes_refuses_what_is_not_a_finite_number(value: object) -> None:
    """format_bytes raises ConfigError naming a value that is not a finite number."""
    with pytest.raises(ConfigError, match=f"finite number of bytes, got {value!r}"):
        format_bytes(value)  # type: ignore[arg-type]
