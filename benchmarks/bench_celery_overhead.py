"""What boundkit.celery adds to each task, against bare Celery in the same run.

Run: ``PYTHONPATH=src python3 benchmarks/bench_celery_overhead.py``. No broker: an empty
task is applied eagerly (``apply()``: Celery's tracer and its signals, as in a worker)
1,000 times per repeat, 7 repeats, on two apps: bare, and under ``install()`` as in a
prefork child (figures published to /dev/shm, the per-task line logged at INFO to a
file). Prints the medians per task and their ratio.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from typing import Any

from celery import Celery

from boundkit._celery_files import ChildFiles
from boundkit.celery import install

TASKS = 1000
REPEATS = 7


def empty_task(installed: bool, shm: str) -> Any:
    app = Celery("bench", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.task_always_eager = True

    def empty() -> int:
        return 1

    task = app.task(name="bench.empty")(empty)
    if installed:
        memory = install(app)
        memory.files = ChildFiles(shm)
        memory.on_child_start()
    return task


def per_task(task: Any) -> float:
    started = time.perf_counter()
    for _ in range(TASKS):
        task.apply()
    return (time.perf_counter() - started) / TASKS


def main() -> None:
    with (
        tempfile.NamedTemporaryFile(suffix=".log") as log,
        tempfile.TemporaryDirectory(prefix="boundkit-bench-", dir="/dev/shm") as shm,
    ):
        logging.basicConfig(filename=log.name, level=logging.INFO)
        bare, installed = empty_task(False, shm), empty_task(True, shm)
        times: dict[str, list[float]] = {"bare": [], "installed": []}
        for _ in range(REPEATS):  # interleaved, so load changes hit both alike
            times["bare"].append(per_task(bare))
            times["installed"].append(per_task(installed))
    b, i = statistics.median(times["bare"]), statistics.median(times["installed"])
    print(f"{TASKS} eager tasks x {REPEATS} repeats, median per task:")
    print(f"  bare Celery          {b * 1e6:8.0f} us")
    print(f"  with install()       {i * 1e6:8.0f} us")
    print(f"  added by boundkit    {(i - b) * 1e6:8.0f} us  (ratio {i / b:.2f})")


if __name__ == "__main__":
    main()
