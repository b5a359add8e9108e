"""What importing a module costs: resident memory, time and the heavy packages it pulls in.

Each module is imported in a fresh interpreter (``python -I -S``-like
isolation is not used: site-packages must be importable) that reads its own
``/proc/self/statm`` before and after, so nothing the measuring code needs is
counted. Packages the import pulls in are timed and sized inclusively (a
package's figures include what it imports in turn), like ``-X importtime``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ImportCost",
    "installed_modules",
    "measure_import",
    "measure_imports",
    "modules_from_requirements",
]

_MB = 1024 * 1024
#: A pulled-in package is listed as heavy from this RSS or this import time, at most this many.
HEAVY_BYTES, HEAVY_SECONDS, HEAVY_COUNT = 100 * 1024, 0.005, 10

# Runs in the fresh interpreter: stdlib already loaded at startup only, no json/re before
# the import under test. Prints one JSON line.
_CHILD = r"""
import os, sys, time
def rss():
    with open('/proc/self/statm', 'rb') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
costs = []
class Meter:
    def __init__(self, loader, name):
        self.loader, self.name = loader, name
    def __getattr__(self, attr):
        return getattr(self.loader, attr)
    def create_module(self, spec):
        return self.loader.create_module(spec)
    def exec_module(self, module):
        before, started = rss(), time.perf_counter()
        try:
            self.loader.exec_module(module)
        finally:
            costs.append((self.name, rss() - before, time.perf_counter() - started))
busy = set()
class Finder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        top, dot, rest = name.partition('.')
        if name in busy or name in (TARGET, sys.argv[1]):
            return None
        if dot and (top != TARGET or '.' in rest):
            return None
        busy.add(name)  # a finder below may import this name again while it looks
        try:
            for finder in sys.meta_path[1:]:
                spec = getattr(finder, 'find_spec', None)
                spec = spec and spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
                        spec.loader = Meter(spec.loader, name)
                    return spec
            return None
        finally:
            busy.discard(name)
TARGET = sys.argv[1].partition('.')[0]
sys.meta_path.insert(0, Finder)
known = set(sys.modules)
preloaded = sys.argv[1] in known
before, started = rss(), time.perf_counter()
error = None
try:
    __import__(sys.argv[1])
except BaseException as exc:
    error = '%s: %s' % (type(exc).__name__, exc)
seconds, after = time.perf_counter() - started, rss()
sys.meta_path.remove(Finder)
new = sorted(set(sys.modules) - known)
import json
print(json.dumps({'rss': after - before, 'seconds': seconds, 'error': error,
                  'modules': len(new), 'preloaded': preloaded, 'heavy': costs}))
"""


@dataclass(frozen=True)
class ImportCost:
    """What importing ``module`` cost in a fresh interpreter.

    ``rss`` is the growth of resident memory in bytes, ``seconds`` the wall
    time of the import, ``modules`` how many modules it loaded, ``heavy`` the
    top-level packages it pulled in (and the module's own subpackages), largest
    first, each with its inclusive ``rss_mb`` and ``seconds``: the ten largest
    of those costing at least 100 KiB or 5 ms.
    ``preloaded`` means the interpreter had already imported it at startup
    (through ``site``), so it cost nothing more. ``error`` is set when the
    import failed.
    """

    module: str
    rss: int
    seconds: float
    modules: int = 0
    heavy: list[dict[str, Any]] = field(default_factory=list)
    preloaded: bool = False
    error: str | None = None

    @property
    def rss_mb(self) -> float:
        """``rss`` in MiB."""
        return self.rss / _MB

    def as_dict(self) -> dict[str, Any]:
        """Return the documented JSON form (MiB and seconds)."""
        return {
            "module": self.module,
            "rss_mb": round(self.rss_mb, 2),
            "seconds": round(self.seconds, 4),
            "modules": self.modules,
            "heavy": self.heavy,
            "preloaded": self.preloaded,
            "error": self.error,
        }


def measure_import(
    module: str, *, python: str = sys.executable, timeout: float = 120
) -> ImportCost:
    """Import ``module`` in a fresh ``python`` and return what it cost."""
    try:
        done = subprocess.run(
            [python, "-c", _CHILD, module],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return ImportCost(module, 0, timeout, error=f"timed out after {timeout:g} s")
    except (ValueError, IndexError):
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return ImportCost(module, 0, 0.0, error=tail[0])
    heavy = sorted(
        (
            {"module": name, "rss_mb": round(rss / _MB, 2), "seconds": round(sec, 4)}
            for name, rss, sec in data["heavy"]
            if rss >= HEAVY_BYTES or sec >= HEAVY_SECONDS
        ),
        key=lambda d: (-d["rss_mb"], -d["seconds"]),
    )[:HEAVY_COUNT]
    return ImportCost(
        module,
        data["rss"],
        data["seconds"],
        data["modules"],
        heavy,
        data["preloaded"],
        data["error"],
    )


def measure_imports(modules: Any, *, progress: IO[str] | None = None) -> list[ImportCost]:
    """Measure each of ``modules`` in turn; return the costs, largest RSS first."""
    costs = []
    for name in modules:
        if progress is not None:
            print(f"importing {name}...", file=progress, flush=True)
        costs.append(measure_import(name))
    return sorted(costs, key=lambda c: (c.error is not None, -c.rss, -c.seconds))


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _top_level(distribution: str) -> list[str]:
    """The importable top-level names of an installed ``distribution`` (else its own name)."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return [re.sub(r"[-.]", "_", distribution).lower()]
    text = dist.read_text("top_level.txt")
    if text:
        names = [n for n in text.split() if n.isidentifier() and not n.startswith("_")]
        if names:
            return names
    if dist.files is None:  # no record of the installed files: guess from the name
        return [re.sub(r"[-.]", "_", dist.metadata["Name"]).lower()]
    found = set()
    for path in dist.files:
        parts = Path(str(path)).parts
        if len(parts) > 1 and parts[-1] == "__init__.py":
            found.add(parts[0])
        elif len(parts) == 1 and parts[0].endswith(".py"):
            found.add(parts[0].removesuffix(".py"))
    # stub-only distributions (types-*) install nothing importable: []
    return sorted(n for n in found if n.isidentifier() and not n.startswith("_"))


def modules_from_requirements(path: str | Path) -> list[str]:
    """The top-level modules of each requirement in a pip requirements file."""
    modules: list[str] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _REQUIREMENT.match(line)
        if match:
            modules += _top_level(match.group(1))
    return list(dict.fromkeys(modules))


def installed_modules() -> list[str]:
    """The top-level modules of every installed distribution."""
    modules: list[str] = []
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            modules += _top_level(name)
    return sorted(dict.fromkeys(modules))
