"""Tests of boundkit._sizes: parsing and formatting byte sizes."""

import doctest

import pytest

from boundkit import ConfigError, _sizes
from boundkit._sizes import format_bytes, parse_bytes


def test_doctests() -> None:
    """The examples in the module's docstrings hold."""
    result = doctest.testmod(_sizes)
    assert result.attempted > 0
    assert result.failed == 0


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
