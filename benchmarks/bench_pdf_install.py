"""pymupdf-lite against full pymupdf, as the ``pdf`` extra: install size and import cost.

Run: ``python3 benchmarks/bench_pdf_install.py [--repeats 3] [--keep DIR]``

Builds throwaway venvs (needs PyPI): ``lite`` is a fresh venv with ``boundkit[pdf]``;
``full`` has ``pymupdf`` first, then ``boundkit`` without the extra (the recipe of
docs/pdf.md); ``both`` has ``pymupdf`` first, then ``boundkit[pdf]``, the state boundkit
warns about. For each it prints the pymupdf distributions pip lists, ``pip check``, the size
of site-packages, whether ``render_pages`` works, and the median over ``--repeats`` fresh
processes of ``import pymupdf``'s wall time and peak RSS added, with the ratio to ``lite``
measured in the same run. Then, in ``both``, it uninstalls ``pymupdf-lite`` and shows the
error boundkit gives.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fix_pdf import text_pdf  # noqa: E402

_IMPORT_COST = """
import json, sys, time
def status(key):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(key))
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the peak starts here, not at the parent's peak inherited through fork
base = status("VmRSS:")
start = time.perf_counter()
import pymupdf
print(json.dumps({"seconds": time.perf_counter() - start, "rss_kib": status("VmHWM:") - base,
    "onnxruntime": "onnxruntime" in sys.modules}))
"""

_RENDER = """
import sys, warnings
warnings.simplefilter("always")
from boundkit.pdf import render_pages
print("render_pages ok:", [number for number, _ in render_pages(sys.argv[1], dpi=20)])
"""

SETUPS = {
    "lite": [[f"{ROOT}[pdf]"]],
    "full": [["pymupdf"], [str(ROOT)]],
    "both": [["pymupdf"], [f"{ROOT}[pdf]"]],
}


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True)


def _venv(root: Path, name: str) -> Path:
    path = root / name
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    for packages in SETUPS[name]:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


def _state(python: Path, sample: Path) -> None:
    listed = _run(str(python), "-m", "pip", "list", "--format", "json").stdout
    names = [f"{p['name']} {p['version']}" for p in json.loads(listed)]
    print("  pip lists:", ", ".join(n for n in names if "mupdf" in n.lower() or "onnx" in n))
    print("  pip check:", _run(str(python), "-m", "pip", "check").stdout.strip())
    site = next(python.parent.parent.glob("lib/python*/site-packages"))
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    print(f"  site-packages: {size / 1e6:.0f} MB")
    out = _run(str(python), "-c", _RENDER, str(sample))
    print("  " + (out.stdout.strip() or out.stderr.strip().splitlines()[-1]))
    for line in out.stderr.splitlines():
        if "RuntimeWarning" in line:
            print("  " + line.strip())


def _import_cost(python: Path, repeats: int) -> tuple[float, float, bool]:
    runs = [json.loads(_run(str(python), "-c", _IMPORT_COST).stdout) for _ in range(repeats)]
    print("  import pymupdf:", ", ".join(f"{r['seconds'] * 1000:.0f} ms" for r in runs))
    print("  peak RSS added:", ", ".join(f"{r['rss_kib'] / 1024:.1f} MiB" for r in runs))
    seconds = statistics.median(run["seconds"] for run in runs)
    mib = statistics.median(run["rss_kib"] for run in runs) / 1024
    return seconds, mib, any(run["onnxruntime"] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the venvs here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        sample = root / "sample.pdf"
        sample.write_bytes(text_pdf(2))
        costs = {}
        for name in SETUPS:
            print(f"== {name}: " + " then ".join(" ".join(p) for p in SETUPS[name]))
            python = _venv(root, name)
            _state(python, sample)
            costs[name] = _import_cost(python, args.repeats)
        lite_seconds, lite_mib, _ = costs["lite"]
        print(f"\nimport pymupdf, median of {args.repeats} fresh processes")
        print(f"{'venv':6} {'ms':>7} {'x lite':>7} {'MiB':>7} {'x lite':>7}  onnxruntime")
        for name, (seconds, mib, onnx) in costs.items():
            print(
                f"{name:6} {seconds * 1000:7.0f} {seconds / lite_seconds:7.2f} "
                f"{mib:7.1f} {mib / lite_mib:7.2f}  {onnx}"
            )
        print("\n== both, then pip uninstall -y pymupdf-lite")
        python = root / "both" / "bin" / "python"
        subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "pymupdf-lite"])
        _state(python, sample)


if __name__ == "__main__":
    main()
