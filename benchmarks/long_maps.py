"""What the long-map options cost per item: ``python benchmarks/long_maps.py [--rounds N]
[--backend NAME]``.

Each round runs every variant once, in turn (interleaved, so that a noisy neighbour slows all
of them alike), on the ``"process"`` backend with warm workers (or the one named: ``"pool"`` and
``"futures"`` start their workers per call, and recycle by running each chunk on a fresh worker,
so their recycling rows include a process start per chunk); the table gives the median and
the range over the rounds, and each option's cost per item against the plain map of the same
round. Workloads: ``trivial`` (``square`` over 100,000 ints: the per-item path alone) and
``coarse`` (16 items of ~20 ms of pure Python each).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import parmap
from parmap import BackendName
from parmap._bench import calibrate, spin, square

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "retries=2": {"retries": 2},
    'errors="return"': {"errors": "return"},
    "max_tasks_per_worker=10**6": {"max_tasks_per_worker": 10**6},
    'max_memory_per_worker="64GiB"': {"max_memory_per_worker": "64GiB"},
    "checkpoint (new file)": {"checkpoint": None},
    "checkpoint (rerun, all stored)": {"checkpoint": "rerun"},
}


def run(
    fn: Callable[[Any], Any],
    items: list[Any],
    options: dict[str, Any],
    tmp: str,
    backend: BackendName,
) -> float:
    options = dict(options)
    if "checkpoint" in options:
        path = os.path.join(tmp, f"{fn.__name__}.sqlite")
        if options["checkpoint"] is None and os.path.exists(path):
            os.remove(path)
        elif options["checkpoint"] == "rerun" and not os.path.exists(path):
            parmap.pmap(fn, items, backend=backend, workers=2, checkpoint=path)
        options["checkpoint"] = path
    began = time.perf_counter()
    parmap.pmap(fn, items, backend=backend, workers=2, **options)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", default="process", choices=["process", "pool", "futures"])
    args = parser.parse_args()
    n = calibrate(0.02)
    workloads: dict[str, tuple[Callable[[Any], Any], list[Any]]] = {
        "trivial": (square, list(range(100_000))),
        "coarse": (spin, [n] * 16),
    }
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    warm = ", warm workers" if args.backend == "process" else ""
    print(f"# {args.rounds} interleaved rounds, backend={args.backend!r}, workers=2{warm}\n")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (fn, items) in workloads.items():
            backend: BackendName = args.backend
            run(fn, items, {}, tmp, backend)  # warm the workers
            times: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(args.rounds):
                for variant, options in VARIANTS.items():
                    times[variant].append(run(fn, items, options, tmp, backend))
            plain = times["plain"]
            print(f"## {name}: {len(items)} items\n")
            print("| variant | median ms [min-max] | cost per item, us [min-max] |")
            print("|---|---|---|")
            for variant, seconds in times.items():
                extra = [(s - p) / len(items) * 1e6 for s, p in zip(seconds, plain, strict=True)]
                cost = (
                    "-"
                    if variant == "plain"
                    else f"{statistics.median(extra):.2f} [{min(extra):.2f}..{max(extra):.2f}]"
                )
                print(
                    f"| {variant} | {statistics.median(seconds) * 1e3:.1f} "
                    f"[{min(seconds) * 1e3:.1f}-{max(seconds) * 1e3:.1f}] | {cost} |"
                )
            print()
    parmap.shutdown()


if __name__ == "__main__":
    main()
