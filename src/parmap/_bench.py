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
import csv
import functools
import importlib.util
import itertools
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._api import default_workers, imap, pmap
from ._progress import bar_class
from .backends import BackendName, shutdown
from .backends._auto import forget_costs

__all__ = ["main"]


# -- workloads (module level: peers pickle them by reference) -------------------------------------


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


# -- runners --------------------------------------------------------------------------------------


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


# -- what the rounds show -------------------------------------------------------------------------

LOOP = "serial loop"


@dataclass
class Row:
    """One runner at one worker count over one workload, summarized over the rounds."""

    workload: str
    runner: str
    workers: int
    #: Rounds this row was measured in (a run over ``NO_REPEAT_AFTER`` stops repeating).
    rounds: int
    #: Wall-clock seconds of one run: the median over the rounds, the fastest, the slowest.
    seconds: float
    seconds_min: float
    seconds_max: float
    #: The loop's median seconds over this row's; the range is the lowest and highest ratio of
    #: the loop's median in a round to this row's time in the same round.
    speedup: float
    speedup_min: float
    speedup_max: float
    #: See ``is_noise``: the row shows neither a speedup nor a slowdown.
    noise: bool
    #: ``speedup / workers``; None for a noise row.
    efficiency: float | None


def is_noise(speedup: float, low: float, high: float, workers: int, rounds: int) -> bool:
    """Whether a speedup measured over ``rounds`` rounds, per-round ratios from ``low`` to
    ``high``, tells nothing: the range is wider than the speedup's distance from 1 (the rounds
    disagree on how much faster or slower than the loop it is, or on which), the speedup is above
    the worker count (superlinear: a cache or the machine's drift, not the map; efficiency above
    1), or there was only one round to judge by."""
    return rounds < 2 or high - low > abs(speedup - 1) or speedup > workers


def summarize(
    workload: str,
    runner: str,
    workers: int,
    taken: Sequence[float | None],
    loop: Sequence[Sequence[float]],
) -> Row:
    """The row for one runner: ``taken`` is its seconds in each round (None: not run that
    round), ``loop`` the loop's seconds in each round (it runs ``LOOP_RUNS`` times a
    round). The speedup is the loop's median over the runner's; its range, the lowest and
    highest ratio of the loop's median in a round to the runner's time in the same round."""
    times = [max(t, 1e-9) for t in taken if t is not None]
    baseline = statistics.median(t for ts in loop for t in ts)
    seconds = statistics.median(times)
    speedup = baseline / seconds
    ratios = [
        statistics.median(ts) / max(t, 1e-9)
        for ts, t in zip(loop, taken, strict=True)
        if ts and t is not None
    ]
    low, high = min(speedup, *ratios), max(speedup, *ratios)
    noise = is_noise(speedup, low, high, workers, len(ratios))
    return Row(
        workload,
        runner,
        workers,
        len(times),
        seconds,
        min(times),
        max(times),
        speedup,
        low,
        high,
        noise,
        None if noise else speedup / workers,
    )


def loop_row(workload: str, loop: Sequence[Sequence[float]]) -> Row:
    """The loop's own row: its every run's seconds, a speedup of 1 by definition."""
    every = [t for ts in loop for t in ts]
    seconds = statistics.median(every)
    rounds = sum(1 for ts in loop if ts)
    return Row(
        workload, LOOP, 1, rounds, seconds, min(every), max(every), 1.0, 1.0, 1.0, False, 1.0
    )


def run_loop(w: Workload) -> list[Any]:
    """The baseline: the plainest fast loop (the function in a local, one comprehension)."""
    fn = w.fn
    return [fn(x) for x in w.items()]


#: A run longer than this is not repeated after its second round (ProcessPoolExecutor's defaults
#: on a million items).
NO_REPEAT_AFTER = 10.0

#: The loop runs this many times a round, spread through it, and each round compares the
#: runners with the median of its loop runs: one loop run that the machine slowed (another
#: program woke, the BLAS library's threads lost a core) would otherwise skew a whole round.
LOOP_RUNS = 3


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


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": default_workers(),
        "processor": platform.processor() or platform.machine(),
    }


# -- output ---------------------------------------------------------------------------------------


def num(x: float) -> str:
    """``x`` to three significant digits, in plain notation (no exponent)."""
    if x <= 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.{min(9, max(0, 2 - math.floor(math.log10(x))))}f}"


def describe(suite: dict[str, Workload], chosen: Iterable[str]) -> str:
    """One line per workload: what it maps."""
    return "\n".join(f"{name}: {suite[name].describe}" for name in chosen)


def legend(rows: list[Row]) -> str:
    """What the table's columns mean, in its own units."""
    rounds = max((r.rounds for r in rows), default=0)
    return "\n".join(
        [
            f"ms: wall-clock milliseconds of one run (its workers' start and stop included), the "
            f"median of {rounds} interleaved round{'s' * (rounds != 1)} (the loop's: of its "
            f"{LOOP_RUNS} runs a round), [fastest-slowest].",
            "speedup: the serial loop's median ms / the row's (2.00: twice as fast as the loop, "
            "0.50: half as fast), [lowest-highest ratio within a round].",
            "efficiency: speedup / workers (1.00: every worker as busy as the loop).",
            "~ noise: the speedup's range is wider than its distance from 1.00, or it is above the "
            "worker count, or it was measured once: neither a speedup nor a slowdown.",
        ]
    )


def _ms(r: Row) -> tuple[str, str]:
    return num(r.seconds * 1000), f"{num(r.seconds_min * 1000)}-{num(r.seconds_max * 1000)}"


def _speedup(r: Row) -> tuple[str, str]:
    if r.runner == LOOP:
        return num(r.speedup), ""
    return num(r.speedup), f"{num(r.speedup_min)}-{num(r.speedup_max)}"


def _efficiency(r: Row) -> str:
    if r.efficiency is None:
        return "~"
    return f"{r.efficiency:.2f}" if r.efficiency >= 0.01 else "<0.01"


def render(rows: list[Row]) -> str:
    """The table, a row per runner and worker count, columns as wide as their cells."""
    head = [
        "workload",
        "runner",
        "workers",
        "ms",
        "[min-max]",
        "",
        "speedup",
        "[min-max]",
        "efficiency",
    ]
    cells = [head]
    for r in rows:
        ms, ms_range = _ms(r)
        speedup, speedup_range = _speedup(r)
        cells.append(
            [r.workload, r.runner, str(r.workers), ms, f"[{ms_range}]", "~" if r.noise else "",
             speedup, f"[{speedup_range}]" if speedup_range else "", _efficiency(r)]
        )  # fmt: skip
    widths = [max(len(line[i]) for line in cells) for i in range(len(head))]
    right = {2, 3, 6, 8}  # the numbers; the ranges start right after theirs
    return "\n".join(
        " ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    )


def write(
    rows: list[Row],
    out: Path,
    suite: dict[str, Workload],
    streams: list[dict[str, Any]],
    command: str,
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "bench.json", out / "bench.csv"]
    chosen = dict.fromkeys(r.workload for r in rows)
    meta: dict[str, Any] = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command,
        "workloads": {k: suite[k].describe for k in chosen},
        "legend": legend(rows).splitlines(),
        "streams": streams,
    }
    written[0].write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2))
    with written[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    written.append(out / "bench.md")
    written[-1].write_text(markdown(rows, meta))
    if importlib.util.find_spec("matplotlib") is not None:
        written.append(plot(rows, out / "speedup.png", meta["workloads"]))
    return written


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    """The results as Markdown: the machine, the columns' meaning, one table per workload."""
    m = meta["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs ({m['processor']}), {m['platform']}, Python {m['python']}.",
        f"Run on {meta['date']} with `{meta['command']}`.",
        "",
        *(f"- {line}" for line in meta["legend"]),
        "",
    ]
    for name, what in meta["workloads"].items():
        chosen = [r for r in rows if r.workload == name]
        if not chosen:
            continue
        lines += [f"### {name}: {what}", "", "| runner | workers | ms | [min-max] | speedup |"
                  " [min-max] | efficiency |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in chosen:
            ms, ms_range = _ms(r)
            speedup, speedup_range = _speedup(r)
            lines.append(
                f"| {r.runner} | {r.workers} | {ms} | {ms_range} | {'~ ' * r.noise}{speedup} | "
                f"{speedup_range} | {_efficiency(r)} |"
            )
        lines.append("")
    for s in meta["streams"]:
        lines.append(
            f"- `imap` over an endless generator, {s['results']:,} results, `{s['backend']}`: "
            f"{s['seconds']:.2f} s, caller memory growth {s['growth_mb']:.1f} MB"
        )
    return "\n".join(lines) + "\n"


#: Okabe and Ito's colours, told apart with any colour vision (their yellow left out: too pale
#: on white); each runner also has its own marker, and the peers dashed lines.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*"]
PEER_LINES = ["--", "-.", ":", (0, (5, 2, 1, 2, 1, 2))]


def log_ticks(low: float, high: float) -> list[float]:
    """Ticks for a log axis from ``low`` to ``high``: 1, 2 and 5 a decade, finer where that
    leaves fewer than four (0.8, 1, 1.2, 1.5, 2 rather than 1 and 2 alone)."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for subs in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [round(m * 10.0**e, 12) for e in decades for m in subs]
        ticks = [t for t in ticks if low <= t <= high]
        if len(ticks) >= 4:
            break
    return ticks


def plot(rows: list[Row], path: Path, workloads: dict[str, str] | None = None) -> Path:
    """``figure``, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure(rows, workloads)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _styles(runners: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each runner's colour, marker and line: parmap's solid, each peer's its own dashes."""
    style: dict[str, dict[str, Any]] = {}
    peers = 0
    for n, runner in enumerate(runners):
        if runner.startswith("parmap"):
            line: Any = "-"
        else:
            line, peers = PEER_LINES[peers % len(PEER_LINES)], peers + 1
        style[runner] = {
            "color": PALETTE[n % len(PALETTE)],
            "marker": MARKERS[n % len(MARKERS)],
            "linestyle": line,
        }
    return style


def _plain(v: float, _: Any) -> str:
    """A tick label in plain notation: 0.00005, not 5e-05."""
    return f"{v:.12f}".rstrip("0").rstrip(".")


def _points(ax: Any, mine: Sequence[Row], x: Sequence[float], s: dict[str, Any]) -> None:
    """One runner's speedups at ``x``: the line through them, each one's range over the rounds,
    and its marker, hollow for noise."""
    y = [r.speedup for r in mine]
    ax.plot(x, y, color=s["color"], linestyle=s["linestyle"], linewidth=1.2)
    ax.errorbar(
        x,
        y,
        yerr=[[r.speedup - r.speedup_min for r in mine],
              [r.speedup_max - r.speedup for r in mine]],
        fmt="none", ecolor=s["color"], elinewidth=0.8, capsize=2, alpha=0.7,
    )  # fmt: skip
    for r, xi in zip(mine, x, strict=True):
        ax.plot(
            xi,
            r.speedup,
            marker=s["marker"],
            color=s["color"],
            markerfacecolor="white" if r.noise else s["color"],
            markersize=6,
            linestyle="none",
        )


def _axes(ax: Any, counts: Sequence[int]) -> None:
    """A logarithmic speedup axis with plain numbers, a tick at each whole worker count."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator(log_ticks(*ax.get_ylim())))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(counts) - 0.4, max(counts) + 0.4)


def _noise_note(ax: Any, chosen: Sequence[Row]) -> None:
    """How many of the panel's points are noise, in the corner; in colour and bold if half or
    more."""
    noisy = sum(r.noise for r in chosen)
    most = 2 * noisy >= len(chosen)
    ax.text(
        0.02, 0.97,
        f"{noisy} of {len(chosen)} points noise (hollow)" if noisy else "no point is noise",
        transform=ax.transAxes, va="top", fontsize=8,
        color=PALETTE[3] if most else "dimgrey",
        fontweight="bold" if most else "normal",
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1},
    )  # fmt: skip


def _grid(panels: int) -> tuple[int, int]:
    """The lines and columns of panels: two columns for four panels, else up to three."""
    columns = 2 if panels == 4 else min(3, panels)
    return -(-panels // columns), columns


def _panel(
    ax: Any,
    name: str,
    rows: Sequence[Row],
    style: dict[str, dict[str, Any]],
    counts: Sequence[int],
    workloads: dict[str, str],
) -> None:
    """Workload ``name``'s panel, titled with its description in ``workloads`` if any."""
    chosen = [r for r in rows if r.workload == name and r.runner != LOOP]
    ax.plot(counts, counts, ":", color="grey", linewidth=1.2)  # the ideal
    ax.axhline(1.0, color="grey", linewidth=0.8)  # the loop
    for n, (runner, s) in enumerate(style.items()):
        mine = [r for r in chosen if r.runner == runner]
        if mine:  # dodged a little sideways, so that the ranges do not hide each other
            _points(ax, mine, [r.workers + (n - (len(style) - 1) / 2) * 0.015 for r in mine], s)
    _axes(ax, counts)
    title = f"{name}: {workloads[name]}" if name in workloads else name
    ax.set_title(textwrap.fill(title, 60), fontsize=9)
    _noise_note(ax, chosen)
    ax.set_xlabel("workers")
    ax.set_ylabel("speedup over the serial loop")
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)


def _handles(style: dict[str, dict[str, Any]]) -> list[Any]:
    """The legend: each runner, then what the lines, the hollow points and the bars mean."""
    from matplotlib.lines import Line2D

    handles: list[Any] = [
        Line2D([], [], marker=s["marker"], color=s["color"], linestyle=s["linestyle"], label=r)
        for r, s in style.items()
    ]
    handles += [
        Line2D([], [], linestyle=":", color="grey", label="ideal: speedup = workers"),
        Line2D([], [], color="grey", linewidth=0.8, label="the serial loop (1)"),
        Line2D([], [], marker="o", color="black", markerfacecolor="white", linestyle="none",
               label="hollow: noise, not a speedup"),
        Line2D([], [], marker="|", color="black", linestyle="none", markersize=10,
               label="bar: range over the rounds"),
    ]  # fmt: skip
    return handles


def figure(rows: list[Row], workloads: dict[str, str] | None = None) -> Any:
    """Speedup over the loop against workers, a panel per workload, each point with its range
    over the rounds and a noise point hollow (each panel's title counts them). The speedup axis
    is logarithmic (the small and shared workloads' speedups are far below one) with plain
    numbers; the dotted line is the ideal, speedup = workers, the grey one the loop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = workloads or {}
    names = list(dict.fromkeys(r.workload for r in rows))
    style = _styles([n for n in dict.fromkeys(r.runner for r in rows) if n != LOOP])
    counts = sorted({r.workers for r in rows})
    lines, columns = _grid(len(names))
    height = 3.9 * lines + 1.4
    fig, axes = plt.subplots(lines, columns, figsize=(5.2 * columns, height), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        _panel(ax, name, rows, style, counts, workloads)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.legend(handles=_handles(style), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 1.3 / height, 1, 1))
    return fig


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
    for path in write(rows, args.out, suite, streams, command):
        print(f"wrote {path}", file=sys.stderr)
    return 0
