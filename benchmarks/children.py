"""``run_processes`` and ``queue_collect`` timed from a source tree:
``python benchmarks/children.py SRC LABEL`` (run it on two trees, in turn, to compare them, e.g.
the commit before they moved onto the "process" backend, checked out with ``git worktree``).

Each call is run once untimed, then 15 times: median [min-max] milliseconds.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def square(x: int) -> int:
    return x * x


def produce(n: int, q: Any) -> None:
    for i in range(n):
        q.put(i)


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    from parmap import queue_collect, run_processes

    calls: dict[str, Callable[[], object]] = {
        "run_processes, 8 children": lambda: run_processes(square, [(i,) for i in range(8)]),
        "queue_collect, 4 x 1000 items, queue": lambda: queue_collect(produce, [(1000,)] * 4),
        "queue_collect, 4 x 1000 items, pipe": lambda: queue_collect(
            produce, [(1000,)] * 4, channel="pipe"
        ),
    }
    for name, call in calls.items():
        call()
        times = []
        for _ in range(15):
            began = time.perf_counter()
            call()
            times.append(time.perf_counter() - began)
        ms = [t * 1e3 for t in times]
        print(
            f"{sys.argv[2]}: {name}: {statistics.median(ms):.1f} ms [{min(ms):.1f}-{max(ms):.1f}]"
        )


if __name__ == "__main__":
    main()
