"""ProcessExecutor next to ProcessPoolExecutor: ``python benchmarks/executor_roundtrip.py``.

Workloads, each on warm executors of ``--workers`` processes (started before the rounds):

* ``submit().result()``: one task at a time, the round trip per task (``--tasks`` of them);
* ``map trivial``: ``square`` over 100,000 ints (ProcessExecutor sizes its chunks itself;
  ProcessPoolExecutor is given ``chunksize=1``, its default, and ``chunksize=1000``);
* ``map coarse``: 16 items of ~0.2 s of pure Python each.

Each round runs every variant once, in turn (interleaved, so that a noisy neighbour slows all
of them alike); the table gives the median and the range over the rounds.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable

import parmap
from parmap._bench import calibrate, spin, square


def roundtrip(executor: cf.Executor, tasks: int) -> Callable[[], float]:
    def run() -> float:
        began = time.perf_counter()
        for i in range(tasks):
            assert executor.submit(square, i).result() == i * i
        return (time.perf_counter() - began) / tasks

    return run


def mapped(executor: cf.Executor, fn: Callable[[int], int], items: list[int],
           chunksize: int | None) -> Callable[[], float]:  # fmt: skip
    expected = [fn(x) for x in items] if fn is square else None

    def run() -> float:
        began = time.perf_counter()
        if chunksize is None:
            results = list(executor.map(fn, items))
        else:
            results = list(executor.map(fn, items, chunksize=chunksize))
        took = time.perf_counter() - began
        assert expected is None or results == expected
        assert len(results) == len(items)
        return took

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tasks", type=int, default=500)
    args = parser.parse_args()
    n = calibrate(0.2)
    coarse = [n] * 16
    trivial = list(range(100_000))
    # The same start method for both: forkserver, ProcessExecutor's default.
    ctx = multiprocessing.get_context("forkserver")
    ours = parmap.ProcessExecutor(args.workers)
    theirs = cf.ProcessPoolExecutor(args.workers, mp_context=ctx)
    for executor in (ours, theirs):  # start every worker before timing
        list(executor.map(square, range(4 * args.workers)))
    variants: dict[tuple[str, str], Callable[[], float]] = {
        ("submit().result() per task", "ProcessExecutor"): roundtrip(ours, args.tasks),
        ("submit().result() per task", "ProcessPoolExecutor"): roundtrip(theirs, args.tasks),
        ("map trivial 100,000", "ProcessExecutor"): mapped(ours, square, trivial, None),
        ("map trivial 100,000", "ProcessPoolExecutor"): mapped(theirs, square, trivial, 1),
        ("map trivial 100,000", "ProcessPoolExecutor chunksize=1000"): mapped(
            theirs, square, trivial, 1000
        ),
        ("map coarse 16 x 0.2 s", "ProcessExecutor"): mapped(ours, spin, coarse, None),
        ("map coarse 16 x 0.2 s", "ProcessPoolExecutor"): mapped(theirs, spin, coarse, 1),
    }
    times: dict[tuple[str, str], list[float]] = {key: [] for key in variants}
    try:
        for _ in range(args.rounds):
            for key, run in variants.items():
                times[key].append(run())
    finally:
        ours.shutdown()
        theirs.shutdown()
    print(f"{platform.python_version()}, {os.cpu_count()} CPUs, {args.workers} workers, "
          f"{args.rounds} rounds (median, range)")  # fmt: skip
    for (workload, engine), values in times.items():
        unit, scale = ("us", 1e6) if workload.startswith("submit") else ("s", 1.0)
        median = statistics.median(values) * scale
        low, high = min(values) * scale, max(values) * scale
        print(f"{workload:28} {engine:36} {median:9.3f} {unit}  ({low:.3f}..{high:.3f})")


if __name__ == "__main__":
    main()
