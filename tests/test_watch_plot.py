"""Tests of the watch plot: each format is a valid file that shows what the report holds."""

from __future__ import annotations

import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from boundkit.errors import ConfigError
from boundkit.testing import assert_no_growth
from boundkit.watch import Sample, WatchReport, summarise
from boundkit.watch_plot import render_svg, write_plot

MIB = 1024 * 1024
SVG = "{http://www.w3.org/2000/svg}"


def leaking_report() -> WatchReport:
    samples = [
        Sample(5.0 * i, 180 * MIB + int(MIB / 12 * i) + 6 * MIB * (i % 23) // 23, 1)
        for i in range(240)
    ]
    return summarise("app", samples, interval=5, ended="duration", limit=512 * MIB,
                     limit_source="test")  # fmt: skip


def test_svg_parses_and_shows_samples_trend_thresholds_and_limit(tmp_path: Path) -> None:
    """The SVG is well-formed XML with one point per sample, a trend and the three lines."""
    path = write_plot(leaking_report(), tmp_path / "w.svg")
    root = ET.parse(path).getroot()
    assert f"{SVG}svg" == root.tag
    points = root.find(f"{SVG}polyline")
    assert points is not None
    assert 240 == len(points.attrib["points"].split())
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "app: growing" in texts[0]
    for label in ("warning 410 MiB", "critical 461 MiB", "limit 512 MiB", "trend (Theil-Sen)"):
        assert label in texts


def test_limit_far_above_the_data_is_marked_off_scale(tmp_path: Path) -> None:
    """A limit far above the samples is named, not drawn, so the samples stay readable."""
    samples = [Sample(float(i), 50 * MIB, 1) for i in range(30)]
    report = summarise("x", samples, interval=1, ended="duration", limit=16 * 1024 * MIB,
                       limit_source="test")  # fmt: skip
    root = ET.parse(write_plot(report, tmp_path / "w.svg")).getroot()
    assert "limit 16384 MiB (above the scale)" in [t.text for t in root.iter(f"{SVG}text")]


def test_html_is_a_page_with_the_svg_and_the_figures(tmp_path: Path) -> None:
    """The HTML page parses, embeds the SVG and tabulates the verdict."""
    text = write_plot(leaking_report(), tmp_path / "w.html").read_text()
    tags: list[str] = []
    cells: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: object) -> None:
            tags.append(tag)

        def handle_data(self, data: str) -> None:
            cells.append(data)

    Collect().feed(text)
    assert {"html", "svg", "polyline", "table"} <= set(tags)
    assert "growing" in cells


def test_png_is_a_valid_png_of_the_declared_size(tmp_path: Path) -> None:
    """The PNG has the signature and an IHDR of 800x400 pixels."""
    pytest.importorskip("matplotlib")
    data = write_plot(leaking_report(), tmp_path / "w.png").read_bytes()
    assert b"\x89PNG\r\n\x1a\n" == data[:8]
    assert b"IHDR" == data[12:16]
    assert (800, 400) == struct.unpack(">II", data[16:24])
    assert b"IEND" in data[-12:]


def test_unknown_suffix_and_empty_report_are_refused(tmp_path: Path) -> None:
    """A suffix other than .png/.svg/.html, or a report without samples, is a ConfigError."""
    with pytest.raises(ConfigError, match=r"\.png, \.svg or \.html"):
        write_plot(leaking_report(), tmp_path / "w.pdf")
    empty = WatchReport("x", 1.0, "duration", [], MIB, "test", 0.0, "unknown", 0.0,
                        None, None, None, None, None, None)  # fmt: skip
    with pytest.raises(ConfigError, match="no samples"):
        write_plot(empty, tmp_path / "w.svg")
    assert not (tmp_path / "w.svg").exists()


def test_svg_and_html_do_not_import_matplotlib(tmp_path: Path) -> None:
    """Drawing SVG and HTML in a fresh interpreter leaves matplotlib unimported."""
    code = (
        "import sys\nfrom boundkit.watch import Sample, summarise\n"
        "from boundkit.watch_plot import write_plot\n"
        "s = [Sample(float(i), 1000000 + i, 1) for i in range(20)]\n"
        "r = summarise('x', s, interval=1, ended='duration', limit=10**9, limit_source='t')\n"
        f"write_plot(r, {str(tmp_path / 'a.svg')!r}); write_plot(r, {str(tmp_path / 'a.html')!r})\n"
        "print('matplotlib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "False" == out.stdout.strip()


def test_png_without_matplotlib_names_the_extra(tmp_path: Path) -> None:
    """With matplotlib missing, a PNG plot is a ConfigError naming the ``plot`` extra."""
    code = (
        "import sys\nsys.modules['matplotlib'] = None  # as if not installed\n"
        "from boundkit.watch import Sample, summarise\n"
        "from boundkit.watch_plot import write_plot\n"
        "s = [Sample(float(i), 1000000 + i, 1) for i in range(20)]\n"
        "r = summarise('x', s, interval=1, ended='duration', limit=10**9, limit_source='t')\n"
        "try:\n"
        f"    write_plot(r, {str(tmp_path / 'a.png')!r})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ConfigError")
    assert "pip install 'boundkit[plot]'" in out.stdout
    assert not (tmp_path / "a.png").exists()


def test_summarising_and_drawing_hold_no_memory() -> None:
    """Judging a 240-sample series and rendering its SVG leave nothing behind."""
    report = leaking_report()
    samples = report.samples

    def judge_and_draw() -> None:
        again = summarise("app", samples, interval=5, ended="duration", limit=512 * MIB,
                          limit_source="test")  # fmt: skip
        render_svg(again)

    assert_no_growth(judge_and_draw, calls=20, rounds=5)


def test_cli_plot_option_writes_the_file_and_refuses_a_bad_suffix(tmp_path: Path) -> None:
    """``boundkit watch --plot`` writes a parseable SVG; a .pdf name exits 1 before watching."""
    command = ["--", sys.executable, "-c", "import time; time.sleep(30)"]
    base = [sys.executable, "-m", "boundkit", "watch", "--interval", "0.1", "--duration", "1"]
    done = subprocess.run(
        [*base, "--quiet", "--plot", str(tmp_path / "w.svg"), *command],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    root = ET.parse(tmp_path / "w.svg").getroot()
    assert f"{SVG}svg" == root.tag
    assert done.stdout.split()[0] in (root.find(f"{SVG}text").text or "")  # type: ignore[union-attr]
    bad = subprocess.run(
        [*base, "--quiet", "--plot", str(tmp_path / "w.pdf"), *command],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert 1 == bad.returncode
    assert "--plot must end in .png, .svg or .html" in bad.stderr
    assert "" == bad.stdout  # refused at once: no sample was taken
