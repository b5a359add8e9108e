"""boundkit.pdf_isolated: pages rendered in a bounded worker process, on generated PDFs."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

pytest.importorskip("pymupdf", reason="the pdf extra (PyMuPDF) is not installed")

from boundkit import _pdf_pool, pdf, pdf_isolated
from boundkit._pdf_worker import load_plain
from boundkit.errors import (
    ConfigError,
    PdfError,
    PdfLimitError,
    PdfPageError,
    PdfPasswordError,
    PdfWrongPasswordError,
)
from boundkit.memory import process_memory
from boundkit.testing import assert_no_growth
from fix_hostile_pdf import huge_page, page_tree_cycle, slow_page
from fix_pdf import (
    PASSWORD,
    late_repair_pdf,
    lying_page_count_pdf,
    page_tree_cycle_pdf,
    poster_pdf,
    truncated_pdf,
)

pytestmark = pytest.mark.pdf

isolated_render_pages = pdf_isolated.isolated_render_pages
isolated_iter_text = pdf_isolated.isolated_iter_text


def _children() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


@pytest.fixture(autouse=True)
def no_worker_left() -> Iterator[None]:
    """Every test ends with its workers stopped and reaped: no child, no zombie."""
    yield
    pdf_isolated.close_isolated_workers()
    assert [] == _children()


@pytest.fixture(params=["cgroup", "rlimit"])
def bound(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each way of bounding the worker: a memory cgroup, then RLIMIT_AS."""
    if request.param == "rlimit":
        monkeypatch.setattr(_pdf_pool, "create_memory_cgroup", lambda limit: None)
    else:
        probe = _pdf_pool.create_memory_cgroup(1 << 30)
        if probe is None:
            pytest.skip("no writable memory cgroup here (needs root and cgroup v1 or v2)")
        probe.remove()
    return str(request.param)


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hostile files these tests need, written once."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "huge.pdf").write_bytes(huge_page())
    (root / "slow.pdf").write_bytes(slow_page())
    (root / "cycle.pdf").write_bytes(page_tree_cycle())
    return root


def test_caller_never_imports_pymupdf(pdf_dir: Path) -> None:
    """Reading a file in isolated mode leaves PyMuPDF (and psycopg) out of the caller."""
    code = (
        "import sys, boundkit\n"
        "pages = list(boundkit.isolated_iter_text(sys.argv[1]))\n"
        "print(len(pages), 'pymupdf' in sys.modules, 'psycopg' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(pdf_dir / "text.pdf")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "3 False False" == out.stdout.strip()


@pytest.mark.parametrize("fmt", ["png", "raw"])
@pytest.mark.parametrize("name", ["text.pdf", "images.pdf", "font.pdf"])
def test_pages_equal_in_process(pdf_dir: Path, name: str, fmt: str) -> None:
    """Isolated pages are byte for byte those of render_pages, numbers included."""
    path = pdf_dir / name
    expected = list(pdf.render_pages(path, fmt=fmt, dpi=50))  # type: ignore[arg-type]
    assert expected == list(isolated_render_pages(path, fmt=fmt, dpi=50))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["text", "dict", "words", "blocks"])
def test_text_equals_in_process(pdf_dir: Path, mode: str) -> None:
    """Isolated text equals iter_text's in every mode, tuples and bytes included."""
    path = pdf_dir / "font.pdf"
    expected = list(pdf.iter_text(path, mode=mode))  # type: ignore[arg-type]
    assert expected == list(isolated_iter_text(path, mode=mode))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "skip"),
    [
        (truncated_pdf, False),  # repaired at open
        (late_repair_pdf, False),  # repaired when page 1 is read
        (page_tree_cycle_pdf, True),  # pages 1 and 2 fail: a new stream per failed page
        (lying_page_count_pdf, True),
    ],
)
def test_warnings_and_repair_equal_in_process(make: Any, skip: bool) -> None:
    """MuPDF's lines and the repair come back as iter_text's stream has them, also when
    failed pages made the worker open the file again."""
    data = make()
    expected = pdf.iter_text(data, skip_bad_pages=skip)
    pages = list(expected)
    isolated = isolated_iter_text(data, skip_bad_pages=skip)
    assert pages == list(isolated)
    assert expected.warnings == isolated.warnings
    assert expected.repaired == isolated.repaired
    assert [e.page for e in expected.skipped] == [e.page for e in isolated.skipped]
    assert isolated.warnings  # each of these files makes MuPDF say something


def test_strict_raises_as_in_process() -> None:
    """strict=True: a repair at open, or while a page is read, ends the stream with PdfError
    (not a page error, so skip_bad_pages does not skip it); the worker serves on."""
    with pytest.raises(PdfError, match=r"damaged.*to open it") as at_open:
        list(isolated_render_pages(truncated_pdf(), strict=True, dpi=20))
    assert not isinstance(at_open.value, PdfPageError)
    pages = isolated_iter_text(late_repair_pdf(), strict=True, skip_bad_pages=True)
    assert 0 == next(pages)[0]
    with pytest.raises(PdfError, match="while reading page 1") as later:
        next(pages)
    assert not isinstance(later.value, PdfPageError)
    assert pages.repaired
    (worker,) = _children()
    assert 2 == len(list(isolated_iter_text(late_repair_pdf())))
    assert [worker.pid] == [child.pid for child in _children()]


def test_pixel_bound_and_downscale_as_in_process() -> None:
    """A 30,000-pixel-square page is refused before rendering; max_pixels with downscale
    renders it smaller, byte for byte as render_pages does."""
    data = poster_pdf()
    with pytest.raises(PdfLimitError, match="30000 x 30000") as refused:
        list(isolated_render_pages(data))
    assert 0 == refused.value.page
    small = {"downscale": True, "max_pixels": 250_000}
    expected = list(pdf.render_pages(data, **small))  # type: ignore[arg-type]
    assert expected == list(isolated_render_pages(data, **small))  # type: ignore[arg-type]


def test_sources_and_page_selection(pdf_dir: Path) -> None:
    """Bytes and file objects work as paths do; pages keep the caller's order, -1 is the last."""
    data = (pdf_dir / "text.pdf").read_bytes()
    with open(pdf_dir / "text.pdf", "rb") as file:
        from_file = [n for n, _ in isolated_iter_text(file, pages=[2, 0])]
    assert [2, 0] == from_file
    assert [2, 0] == [n for n, _ in isolated_iter_text(data, pages=[-1, 0])]


def test_open_errors_are_typed(pdf_dir: Path, tmp_path: Path) -> None:
    """Password, corrupt, empty and missing sources raise the errors open_pdf raises."""
    encrypted = pdf_dir / "encrypted.pdf"
    with pytest.raises(PdfPasswordError):
        list(isolated_iter_text(encrypted))
    with pytest.raises(PdfWrongPasswordError):
        list(isolated_iter_text(encrypted, password="wrong"))
    assert 2 == len(list(isolated_iter_text(encrypted, password=PASSWORD)))
    with pytest.raises(PdfError, match=r"corrupt\.pdf"):
        list(isolated_iter_text(pdf_dir / "corrupt.pdf"))
    with pytest.raises(PdfError, match="empty"):
        list(isolated_iter_text(b""))
    with pytest.raises(FileNotFoundError):
        list(isolated_iter_text(tmp_path / "missing.pdf"))


def test_bad_arguments_are_config_errors(pdf_dir: Path) -> None:
    """Bad limits, timeouts, formats and modes raise ConfigError before any worker starts."""
    path = pdf_dir / "text.pdf"
    with pytest.raises(ConfigError, match="memory_limit"):
        isolated_render_pages(path, memory_limit="lots")
    with pytest.raises(ConfigError, match="page_timeout must be a number of seconds"):
        isolated_render_pages(path, page_timeout=0)
    with pytest.raises(ConfigError, match="file_timeout must be a number of seconds"):
        isolated_render_pages(path, file_timeout=float("nan"))
    with pytest.raises(ConfigError, match="fmt"):
        isolated_render_pages(path, fmt="jpeg")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mode"):
        isolated_iter_text(path, mode="html")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dpi"):
        isolated_render_pages(path, dpi=0)
    with pytest.raises(ConfigError, match="max_pixels"):
        isolated_render_pages(path, max_pixels=-1)
    with pytest.raises(ConfigError, match="budget"):
        isolated_iter_text(path, budget="lots")
    with pytest.raises(ConfigError, match="idle_timeout must be a number of seconds zero or more"):
        isolated_iter_text(path, idle_timeout=-1)
    assert [] == _children()


def test_too_small_a_limit_says_so(pdf_dir: Path, bound: str) -> None:
    """A limit the worker cannot even start under is a ConfigError that names the limit."""
    with pytest.raises(ConfigError, match="too small"):
        list(isolated_iter_text(pdf_dir / "text.pdf", memory_limit="8M"))


def test_memory_bomb_is_a_limit_error(hostile_dir: Path, bound: str) -> None:
    """A page needing ~876 MiB against a 256M limit raises PdfLimitError; the parent stays small."""
    before = process_memory().rss
    with pytest.raises(PdfLimitError, match=r"memory_limit=256\.0 MiB") as info:
        # a 1 GiB budget: no pixel bound derived from it refuses the page before it renders
        list(isolated_render_pages(hostile_dir / "huge.pdf", memory_limit="256M", budget=1 << 30))
    assert 0 == info.value.page
    assert process_memory().rss - before < 64 * 1024**2
    text = isolated_iter_text(hostile_dir / "huge.pdf", memory_limit="256M")
    assert "a very large page" in dict(text)[0]  # its text is cheap and still readable
    assert text.peak_memory is not None
    assert 0 < text.peak_memory <= 256 * 1024**2


def test_hang_is_a_limit_error_after_the_page_timeout(hostile_dir: Path) -> None:
    """A page that renders for hours raises PdfLimitError once page_timeout has passed."""
    pages = isolated_render_pages(hostile_dir / "slow.pdf", page_timeout=1.0, dpi=30)
    assert 0 == next(pages)[0]
    started = time.monotonic()
    with pytest.raises(PdfLimitError, match="page_timeout") as info:
        next(pages)
    assert 1 == info.value.page
    assert 1.0 <= time.monotonic() - started < 10


def test_file_timeout_ends_the_stream_even_when_skipping(hostile_dir: Path) -> None:
    """file_timeout bounds the whole file; skip_bad_pages does not skip past it."""
    pages = isolated_render_pages(
        hostile_dir / "slow.pdf", page_timeout=None, file_timeout=1.5, skip_bad_pages=True, dpi=30
    )
    with pytest.raises(PdfLimitError, match="file_timeout"):
        list(pages)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV])
def test_killed_worker_is_a_page_error(hostile_dir: Path, signum: signal.Signals) -> None:
    """A worker killed mid-page (SIGKILL, SIGSEGV) raises PdfPageError naming page and signal."""
    pages = isolated_render_pages(hostile_dir / "slow.pdf", page_timeout=60, dpi=30)
    assert 0 == next(pages)[0]
    (worker,) = _children()
    threading.Timer(0.5, os.kill, (worker.pid, signum)).start()
    with pytest.raises(PdfPageError, match=signum.name) as info:
        next(pages)
    assert 1 == info.value.page
    assert not isinstance(info.value, PdfLimitError)


def test_skip_bad_pages_goes_on_and_reports(hostile_dir: Path) -> None:
    """With skip_bad_pages a failing page and a hanging page are skipped and listed in skipped."""
    cycle = isolated_iter_text(hostile_dir / "cycle.pdf", skip_bad_pages=True)
    assert [0, 1] == [n for n, _ in cycle]
    assert [2] == [error.page for error in cycle.skipped]
    with pytest.raises(PdfPageError):
        list(isolated_iter_text(hostile_dir / "cycle.pdf"))
    slow = isolated_render_pages(hostile_dir / "slow.pdf", page_timeout=1.0, skip_bad_pages=True)
    assert [0] == [n for n, _ in slow]
    assert [PdfLimitError] == [type(error) for error in slow.skipped]


def _fail_mid_file(path: Path) -> None:
    with isolated_iter_text(path) as pages:
        next(pages)
        raise KeyError("the caller's own error")


def test_worker_is_reused_and_survives_an_early_close(pdf_dir: Path) -> None:
    """One worker serves file after file, also after the caller stopped or failed mid-file."""
    path = pdf_dir / "text.pdf"
    with isolated_iter_text(path) as pages:
        next(pages)
    (worker,) = _children()
    for _ in range(3):
        for _ in isolated_iter_text(path):
            break  # the generator is dropped: stops like close()
        with pytest.raises(KeyError):
            _fail_mid_file(path)
        assert 3 == len(list(isolated_iter_text(path)))
    assert [worker.pid] == [child.pid for child in _children()]
    assert psutil.STATUS_ZOMBIE != worker.status()


def _wait_for_no_child() -> list[psutil.Process]:
    deadline = time.monotonic() + 10
    while (children := _children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return children


def test_idle_worker_stops_after_idle_timeout(pdf_dir: Path) -> None:
    """A worker left idle for idle_timeout stops and is reaped (no zombie left); a call within
    it reuses the worker; idle_timeout=0 stops it at once; the next call starts a new one."""
    path = pdf_dir / "text.pdf"
    assert 3 == len(list(isolated_iter_text(path, idle_timeout=30)))
    (first,) = _children()
    assert 3 == len(list(isolated_iter_text(path, idle_timeout=0.2)))  # the 30 s timer is off
    assert [first.pid] == [child.pid for child in _children()]
    assert [] == _wait_for_no_child()
    assert 3 == len(list(isolated_iter_text(path, idle_timeout=0)))
    assert [] == _children()


def test_worker_dies_with_its_parent(pdf_dir: Path) -> None:
    """A parent killed outright leaves no orphan: the worker exits with it."""
    code = (
        "import sys, os, boundkit.pdf_isolated as p\n"
        "pages = p.isolated_iter_text(sys.argv[1]); next(pages)\n"
        "print(os.getpid(), flush=True); sys.stdin.read()"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code, str(pdf_dir / "text.pdf")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    (worker,) = psutil.Process(pid).children()
    parent.kill()
    parent.wait()
    parent.stdin.close()  # type: ignore[union-attr]
    parent.stdout.close()
    worker.wait(timeout=10)  # psutil raises TimeoutExpired if it outlives its parent
    assert not worker.is_running()


def test_plain_unpickler_refuses_classes() -> None:
    """What a worker sends is loaded without ever resolving a class or a function."""
    assert {"a": (1, b"x", [2.5])} == load_plain(pickle.dumps({"a": (1, b"x", [2.5])}))
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        load_plain(pickle.dumps(os.system))


def test_no_growth_over_repeated_files(pdf_dir: Path) -> None:
    """Rendering file after file through the worker holds the parent's memory flat."""
    path = pdf_dir / "images.pdf"
    assert_no_growth(
        lambda: list(isolated_render_pages(path, dpi=30)), calls=10, rounds=5, detach_logging=True
    )


def test_no_growth_over_failing_files(pdf_dir: Path, hostile_dir: Path) -> None:
    """Files that fail in the worker (corrupt, a bad page) hold the parent's memory flat."""

    def fail_each() -> None:
        with pytest.raises(PdfError):
            list(isolated_iter_text(pdf_dir / "corrupt.pdf"))
        with pytest.raises(PdfPageError):
            list(isolated_iter_text(hostile_dir / "cycle.pdf"))

    assert_no_growth(fail_each, calls=10, rounds=5, detach_logging=True)


def test_worker_logs_reach_the_parent(pdf_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The worker's warnings (a repaired file) are logged in the parent under boundkit.pdf."""
    with caplog.at_level("WARNING", logger="boundkit.pdf"):
        assert 3 == len(list(isolated_iter_text(pdf_dir / "truncated.pdf")))
    ours = [r for r in caplog.records if r.name == "boundkit.pdf"]
    assert ["WARNING"] == [r.levelname for r in ours]
    assert "repaired" in ours[0].getMessage()


def test_worker_from_an_edited_install_refuses(
    pdf_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose source differs from what the caller imported says so instead of serving."""
    monkeypatch.setattr(_pdf_pool, "PROTOCOL", "0" * 16)  # as if the file changed since import
    with pytest.raises(PdfError, match="not the one this process imported"):
        list(isolated_iter_text(pdf_dir / "text.pdf"))


def test_threads_each_get_a_worker(pdf_dir: Path) -> None:
    """Two threads reading at once each get their own worker; one stays idle afterwards."""
    path = pdf_dir / "text.pdf"
    expected = list(pdf.iter_text(path))
    results: list[object] = []
    barrier = threading.Barrier(2)

    def read() -> None:
        pages = isolated_iter_text(path)
        first = next(pages)
        barrier.wait()  # both hold a worker now
        results.append([first, *pages])

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [expected, expected] == results
    assert 1 == len(_children())


def test_forked_child_does_not_use_the_parents_worker(pdf_dir: Path) -> None:
    """After fork the child starts its own worker; the parent's stays the parent's."""
    path = pdf_dir / "text.pdf"
    list(isolated_iter_text(path))
    (worker,) = _children()
    pid = os.fork()
    if pid == 0:  # the child: no worker inherited, a new one works
        status = 0 if not _pdf_pool._idle and len(list(isolated_iter_text(path))) == 3 else 1
        pdf_isolated.close_isolated_workers()
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert 0 == os.waitstatus_to_exitcode(status)
    assert 3 == len(list(isolated_iter_text(path)))
    assert [worker.pid] == [child.pid for child in _children()]
