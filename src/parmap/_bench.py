"""``python -m parmap bench``: the serial loop, every backend and the peers, side by side.

Each workload runs as the serial loop (its time is the baseline), through every parmap backend
and through every installed peer (``multiprocessing.Pool``, ``ProcessPoolExecutor``, joblib,
mpire) at each worker count. Every run starts and stops its own workers, as a script that maps
once would see them: the peers' pools inside ``with``, parmap's with ``parmap.shutdown``
at the end of the run and nothing remembered from an earlier run. One more row,
``parmap:auto (repeated)``, is a repeated call: warm workers and the function's measured cost
kept from an untimed call right before it. ``parmap:serial`` runs in the caller: one row, at
1 worker.

The runs are interleaved: each round runs every runner once and the loop three times, spread
through it, each round starting at a different place in the list, so that a drift in the
machine's speed (or the wake of the run before) slows every runner alike rather than whichever
ran during it, and each runner is compared with the loop of its own round. (On the shared
2-core host parmap is developed on, the same loop varies by a quarter from one run to the next.)
Before the rounds, untimed, every runner maps four items once (imports, a forkserver: what only
a first call pays) and the loop runs once over each workload (its caches, a BLAS library's
threads).

The output starts with a line per workload saying what it maps. In the table, ms is the
wall-clock time of one run in milliseconds, the median over the rounds, the fastest and slowest
in brackets. speedup is the loop's median time over the row's (2.00: twice as fast as the loop;
0.50: half as fast), in brackets the lowest and highest ratio within one round. efficiency is
speedup / workers (1.00: every worker as busy as the loop). A row marked ~ is noise: its
speedup's range is wider than its distance from 1.00 (the rounds disagree), its speedup is above
its worker count (superlinear: a cache or the machine, not the map), or it was measured once;
it shows neither a speedup nor a slowdown, and no efficiency. The plot draws such a point
hollow.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import importlib.util
import itertools
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._api import default_workers
from ._auto import forget_costs
from ._bench_report import figure as figure
from ._bench_report import legend, machine, write
from ._bench_report import log_ticks as log_ticks
from ._bench_report import render as render
from ._bench_rows import LOOP as LOOP
from ._bench_rows import LOOP_RUNS as LOOP_RUNS
from ._bench_rows import Row as Row
from ._bench_rows import is_noise as is_noise
from ._bench_rows import loop_row as loop_row
from ._bench_rows import summarize as summarize
from ._maps import imap, pmap
from ._progress import bar_class
from .backends import BackendName, shutdown

__all__ = ["main"]

# The ``name as name`` imports above: the tests import these from here, where they were before the
# rows moved to ``_bench_rows`` and the table, files and plot to ``_bench_report``.


# -- workloads (module level: peers pickle them by reference) --------------------------------------


def spin(n: int) -> int:
    """Pure-Python CPU work: about ``n`` loop iterations."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def square(x: int) -> int:
    return x * x


def touch(data: bytes, x: int) -> int:
    return data[x % len(data)] + x


def numpy_task(seed: int, size: int = 800) -> float:
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.random((size, size))
    return float(np.linalg.norm(np.linalg.inv(a @ a.T + np.eye(size))))


def spread(count: int) -> list[float]:
    """``count`` numbers evenly spread over [0, 1], in a fixed shuffled order."""
    return [((i * 7919) % count) / max(1, count - 1) for i in range(count)]


def calibrate(seconds: float) -> int:
    """Loop iterations of ``spin`` that take about ``seconds`` here, by the fastest of three
    timings (one that another program slowed would make every task shorter than it says)."""
    n = 10_000
    while True:
        took = min(timed(functools.partial(spin, n)) for _ in range(3))
        if took > 0.02:
            return max(1, int(n * seconds / took))
        n *= 4


@dataclass
class Workload:
    name: str
    fn: Callable[[Any], Any]
    items: Callable[[], Iterable[Any]]
    describe: str


#: What ``--quick`` runs unless ``--workloads`` says otherwise: three rounds of these, at their
#: quick sizes, take under a minute on 2 cores (the unbalanced and shared ones add half a minute).
QUICK = ("cpu", "trivial", "small", "numpy")


def workloads(quick: bool, scale: float) -> dict[str, Workload]:
    """The suite, smaller when ``quick``."""
    cores = default_workers()
    task = 0.01 if quick else 0.2
    n_spin = calibrate(task)
    # Quick: ProcessPoolExecutor's default (one item per round trip) costs ~75 us an item.
    trivial = int((2_000 if quick else 1_000_000) * scale)
    coarse = int(8 * cores * scale) or 1
    uneven = coarse * (5 if quick else 10)
    big = bytes(50 * 1024 * 1024 if not quick else 10 * 1024 * 1024)
    side = 300 if quick else 800
    tasks = (2 if quick else 4) * cores
    out = {
        "cpu": Workload(
            "cpu",
            spin,
            lambda: [n_spin] * coarse,
            f"{coarse} pure-Python task{'s' * (coarse != 1)} of ~{task} s each",
        ),
        "trivial": Workload("trivial", square, lambda: range(trivial), f"{trivial:,} calls of x*x"),
        "small": Workload("small", square, lambda: range(10), "10 calls of x*x"),
        "unbalanced": Workload(
            "unbalanced",
            spin,
            lambda: [max(1, int(n_spin * 100 ** (f - 1))) for f in spread(uneven)],
            f"{uneven} pure-Python tasks from ~{task / 100:g} s to ~{task} s (100x), shuffled",
        ),
        "shared": Workload(
            "shared",
            functools.partial(touch, big),
            lambda: range(16),
            f"16 trivial tasks over a {len(big) >> 20} MB bytes object in a partial",
        ),
    }
    if importlib.util.find_spec("numpy") is not None:
        out["numpy"] = Workload(
            "numpy",
            functools.partial(numpy_task, size=side),
            lambda: range(tasks),
            f"{tasks} numpy {side}x{side} matrix products and inverses",
        )
    return out


# -- runners ---------------------------------------------------------------------------------------


@dataclass
class Runner:
    run: Callable[[Workload, int], Any]
    #: Call once, untimed, right before each timed run: the rows then show a repeated call.
    warm_up: bool = False
    #: False for a runner that ignores the worker count: it has one row, at 1 worker.
    parallel: bool = True


def _parmap(backend: BackendName, *, repeated: bool = False) -> Runner:
    def run(w: Workload, workers: int) -> Any:
        if repeated:
            return pmap(w.fn, w.items(), backend=backend, workers=workers)
        forget_costs()
        try:
            return pmap(w.fn, w.items(), backend=backend, workers=workers)
        finally:
            shutdown()  # the workers' stop is part of the run, as the peers' is

    return Runner(run, warm_up=repeated, parallel=backend != "serial")


def _pool(w: Workload, workers: int) -> Any:
    with multiprocessing.Pool(workers) as pool:
        return pool.map(w.fn, w.items())


def _executor(w: Workload, workers: int) -> Any:
    with cf.ProcessPoolExecutor(workers) as executor:
        return list(executor.map(w.fn, w.items()))


def _joblib(w: Workload, workers: int) -> Any:
    import joblib

    return joblib.Parallel(n_jobs=workers)(joblib.delayed(w.fn)(x) for x in w.items())


def _mpire(w: Workload, workers: int) -> Any:
    worker_pool: Any = importlib.import_module("mpire").WorkerPool
    with worker_pool(workers) as pool:
        return pool.map(w.fn, list(w.items()))


def runners() -> dict[str, Runner]:
    out = {
        f"parmap:{name}": _parmap(name)
        for name in ("auto", "process", "pool", "futures", "thread", "serial")
    }
    out["parmap:auto (repeated)"] = _parmap("auto", repeated=True)
    out["multiprocessing.Pool"] = Runner(_pool)
    out["ProcessPoolExecutor"] = Runner(_executor)
    if importlib.util.find_spec("joblib") is not None:
        out["joblib"] = Runner(_joblib)
    if importlib.util.find_spec("mpire") is not None:
        out["mpire"] = Runner(_mpire)
    return out


# -- the rounds ------------------------------------------------------------------------------------


def run_loop(w: Workload) -> list[Any]:
    """The baseline: the plainest fast loop (the function in a local, one comprehension)."""
    fn = w.fn
    return [fn(x) for x in w.items()]


#: A run longer than this is not repeated after its second round (ProcessPoolExecutor's defaults
#: on a million items).
NO_REPEAT_AFTER = 10.0


def timed(run: Callable[[], Any]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def stream(backend: BackendName, count: int) -> dict[str, Any]:
    """Growth of the caller's memory while ``imap`` streams ``count`` results from an endless
    generator (each result is consumed and dropped)."""
    before = rss_mb()
    peak = before
    began = time.perf_counter()
    with imap(square, itertools.count(), backend=backend) as results:
        for n, _ in enumerate(results, 1):
            if n % 100_000 == 0:
                peak = max(peak, rss_mb())
            if n == count:
                break
    return {
        "backend": backend,
        "results": count,
        "seconds": time.perf_counter() - began,
        "growth_mb": peak - before,
    }


@dataclass
class _Job:
    """One runner at one worker count over one workload: its run, and its seconds in each round
    (None: not run that round)."""

    runner: str
    workers: int
    run: Callable[[], Any]
    #: See ``Runner.warm_up``.
    warm_up: bool
    times: list[float | None]

    def time(self, round_: int) -> None:
        """Time one run in round ``round_``, unless its second or a later run took over
        ``NO_REPEAT_AFTER`` seconds."""
        so_far = [t for t in self.times if t is not None]
        if len(so_far) >= 2 and so_far[-1] > NO_REPEAT_AFTER:
            return
        if self.warm_up:  # right before: the other parmap runs stop warm workers
            self.run()
        self.times[round_] = timed(self.run)


def _counts(runner: Runner, counts: Sequence[int]) -> Sequence[int]:
    """The worker counts ``runner`` runs at: ``counts``, or 1 alone if it ignores them."""
    return counts if runner.parallel else [1]


def _warm_up(table: dict[str, Runner], counts: Sequence[int]) -> None:
    """Untimed, every runner maps four items once: imports, a forkserver, what only a first call
    pays."""
    tiny = Workload("warm-up", square, lambda: range(4), "4 calls of x*x")
    for runner in table.values():
        for workers in _counts(runner, counts):
            runner.run(tiny, workers)


def _round(
    name: str,
    jobs: Sequence[_Job],
    round_: int,
    loop: Callable[[], Any],
    step: Callable[[str], None],
) -> list[float]:
    """Round ``round_`` over workload ``name``: every job once, in the order given, and the loop
    ``LOOP_RUNS`` times spread through it. Returns the loop's seconds."""
    spots = [n * len(jobs) // LOOP_RUNS for n in range(LOOP_RUNS)]  # the loop runs before these
    loops: list[float] = []
    for n, job in enumerate(jobs):
        for _ in range(spots.count(n)):
            step(f"{name} / {LOOP} / 1 workers")
            loops.append(timed(loop))
        step(f"{name} / {job.runner} / {job.workers} workers")
        job.time(round_)
    return loops


def _workload(
    name: str,
    w: Workload,
    counts: Sequence[int],
    repeats: int,
    table: dict[str, Runner],
    step: Callable[[str], None],
) -> list[Row]:
    """The rows of one workload, the loop's first, from ``repeats`` interleaved rounds."""
    loop = functools.partial(run_loop, w)
    loop()  # warm up, untimed: imports, caches, a BLAS library's thread pool
    jobs = [
        _Job(
            runner_name,
            workers,
            functools.partial(runner.run, w, workers),
            runner.warm_up,
            [None] * repeats,
        )
        for runner_name, runner in table.items()
        for workers in _counts(runner, counts)
    ]
    loops: list[list[float]] = []
    for round_ in range(repeats):  # every runner once per round, so drift hits all alike,
        shift = round_ * len(jobs) // repeats  # each round starting elsewhere in the list
        loops.append(_round(name, jobs[shift:] + jobs[:shift], round_, loop, step))
    return [
        loop_row(name, loops),
        *(summarize(name, job.runner, job.workers, job.times, loops) for job in jobs),
    ]


def bench(
    suite: dict[str, Workload],
    chosen: Sequence[str],
    counts: Sequence[int],
    repeats: int,
    table: dict[str, Runner],
) -> list[Row]:
    """The ``chosen`` workloads' rows: every runner in ``table`` at each of ``counts`` (at 1 alone
    if it ignores them) and the loop, timed in ``repeats`` interleaved rounds."""
    runs = sum(len(_counts(runner, counts)) for runner in table.values())
    progress = bar(len(chosen) * repeats * (runs + LOOP_RUNS))
    progress(0, "warming up")
    _warm_up(table, counts)
    steps = itertools.count()

    def step(what: str) -> None:
        """Show what runs next, and count it."""
        progress(next(steps), what)

    rows: list[Row] = []
    for name in chosen:
        rows += _workload(name, suite[name], counts, repeats, table, step)
    step("done")
    shutdown()
    return rows


def bar(total: int) -> Callable[[int, str], None]:
    """The bench's progress: a tqdm bar when tqdm is installed (as ``progress=True`` draws),
    else a line per measurement."""
    try:
        shown = bar_class()(total=total, unit="run")
    except ImportError:
        return lambda done, what: print(f"[{done}/{total}] {what}", file=sys.stderr, flush=True)

    def update(done: int, what: str) -> None:
        shown.set_description_str(what)
        shown.update(done - shown.n)
        if done == total:
            shown.close()

    return update


# -- the command line ------------------------------------------------------------------------------


def describe(suite: dict[str, Workload], chosen: Iterable[str]) -> str:
    """One line per workload: what it maps."""
    return "\n".join(f"{name}: {suite[name].describe}" for name in chosen)


def _parser() -> argparse.ArgumentParser:
    """The command's options; its help is this module's docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m parmap bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smaller sizes, 3 rounds, the {', '.join(QUICK)} workloads: under a minute",
    )
    parser.add_argument(
        "--workloads",
        default=None,
        help="comma-separated, of cpu, trivial, small, unbalanced, shared, numpy (default: all;"
        " with --quick, those --quick names)",
    )
    parser.add_argument(
        "--runners", default=None, help="comma-separated names or prefixes (default: all)"
    )
    parser.add_argument(
        "--workers",
        default=None,
        help="comma-separated counts (default: 1 to the cores; with --quick, 1, half the cores"
        " and the cores)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="rounds (default 5; 3 with --quick)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply workload sizes")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="output folder (default: bench-results)",
    )
    return parser


def _chosen_workloads(
    parser: argparse.ArgumentParser, args: argparse.Namespace, suite: dict[str, Workload]
) -> list[str]:
    """The workloads ``--workloads`` names, else all (those in ``QUICK`` with ``--quick``)."""
    every = [w for w in suite if w in QUICK] if args.quick else list(suite)
    chosen: list[str] = args.workloads.split(",") if args.workloads else every
    unknown = [w for w in chosen if w not in suite]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; valid: {', '.join(suite)}")
    return chosen


def _chosen_runners(parser: argparse.ArgumentParser, names: str | None) -> dict[str, Runner]:
    """The runners whose names start with one of the comma-separated ``names``, else all."""
    table = runners()
    if names:
        wanted = names.split(",")
        table = {k: r for k, r in table.items() if any(k.startswith(w) for w in wanted)}
        if not table:
            parser.error(f"no runner matches {names!r}; valid: {', '.join(runners())}")
    return table


def _worker_counts(workers: str | None, quick: bool) -> list[int]:
    """The counts ``--workers`` names, else 1 to the cores (with ``--quick``: 1, half the cores
    and the cores)."""
    cores = default_workers()
    if workers:
        return [int(n) for n in workers.split(",")]
    if quick:  # three at most, whatever the machine
        return sorted({1, max(1, cores // 2), cores})
    return list(range(1, cores + 1))


def _repeats(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--repeats``, else 5 (3 with ``--quick``)."""
    repeats: int = args.repeats or (3 if args.quick else 5)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    return repeats


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    suite = workloads(args.quick, args.scale)
    chosen = _chosen_workloads(parser, args, suite)
    table = _chosen_runners(parser, args.runners)
    counts = _worker_counts(args.workers, args.quick)
    repeats = _repeats(parser, args)
    print(f"parmap bench on {machine()}", file=sys.stderr)
    print(describe(suite, chosen), flush=True)  # first, while the rounds run
    rows = bench(suite, chosen, counts, repeats, table)
    print()
    print(legend(rows))
    print()
    print(render(rows))
    streams = [stream(b, 200_000 if args.quick else 2_000_000) for b in ("auto", "process")]
    for s in streams:
        print(
            f"imap over an endless generator, {s['results']:,} results, {s['backend']}: "
            f"{s['seconds']:.2f} s, caller memory growth {s['growth_mb']:.1f} MB"
        )
    command = " ".join(["python -m parmap bench", *(argv if argv is not None else sys.argv[2:])])
    descriptions = {name: w.describe for name, w in suite.items()}
    for path in write(rows, args.out, descriptions, streams, command):
        print(f"wrote {path}", file=sys.stderr)
    return 0
