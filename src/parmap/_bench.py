"""``python -m parmap bench``: the serial loop, every backend and the peers, side by side.

Each workload runs as the serial loop (its time is the baseline), through every parmap backend
and through every installed peer (``multiprocessing.Pool``, ``ProcessPoolExecutor``, joblib,
mpire) at each worker count. Every run starts and stops its own workers, as a script that maps
once would see them: the peers' pools inside ``with``, parmap's with ``parmap.shutdown``
at the end of the run and nothing remembered from an earlier run. One more row,
``parmap:auto (repeated)``, is a repeated call: warm workers and the function's measured cost
kept from an untimed call right before it.

The runs are interleaved: each round runs the loop and every runner once, each round starting
at a different place in the list, and each time reported is the median over the rounds, so that
a drift in the machine's speed (or the wake of the run before) slows every runner alike rather
than whichever ran during it. (On the shared 2-core host parmap is developed
on, the same loop varies by a quarter from one run to the next.)
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import functools
import importlib.util
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._api import default_workers, imap, pmap
from ._progress import bar_class
from .backends import shutdown
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
    """Loop iterations of ``spin`` that take about ``seconds`` here."""
    n = 10_000
    while True:
        began = time.perf_counter()
        spin(n)
        took = time.perf_counter() - began
        if took > 0.02:
            return max(1, int(n * seconds / took))
        n *= 4


@dataclass
class Workload:
    name: str
    fn: Callable[[Any], Any]
    items: Callable[[], Iterable[Any]]
    describe: str


def workloads(quick: bool, scale: float) -> dict[str, Workload]:
    cores = default_workers()
    task = 0.02 if quick else 0.2
    n_spin = calibrate(task)
    # Quick: ProcessPoolExecutor's default (one item per round trip) costs ~75 us an item.
    trivial = int((20_000 if quick else 1_000_000) * scale)
    coarse = int(8 * cores * scale) or 1
    big = bytes(50 * 1024 * 1024 if not quick else 10 * 1024 * 1024)
    side = 400 if quick else 800
    out = {
        "cpu": Workload(
            "cpu", spin, lambda: [n_spin] * coarse, f"{coarse} pure-Python tasks of ~{task} s"
        ),
        "trivial": Workload("trivial", square, lambda: range(trivial), f"{trivial:,} calls of x*x"),
        "small": Workload("small", square, lambda: range(10), "10 calls of x*x"),
        "unbalanced": Workload(
            "unbalanced",
            spin,
            lambda: [max(1, int(n_spin * 100 ** (f - 1))) for f in spread(coarse * 10)],
            f"{coarse * 10} tasks from ~{task / 100:g} s to ~{task} s (100x), shuffled",
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
            lambda: range(4 * cores),
            f"{4 * cores} {side}x{side} matmul+inverse",
        )
    return out


# -- runners --------------------------------------------------------------------------------------


@dataclass
class Runner:
    run: Callable[[Workload, int], Any]
    #: Call once, untimed, right before each timed run: the rows then show a repeated call.
    warm_up: bool = False


def _parmap(backend: str, *, repeated: bool = False) -> Runner:
    def run(w: Workload, workers: int) -> Any:
        if repeated:
            return pmap(w.fn, w.items(), backend=backend, workers=workers)
        forget_costs()
        try:
            return pmap(w.fn, w.items(), backend=backend, workers=workers)
        finally:
            shutdown()  # the workers' stop is part of the run, as the peers' is

    return Runner(run, warm_up=repeated)


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


@dataclass
class Row:
    workload: str
    runner: str
    workers: int
    seconds: float
    speedup: float
    efficiency: float


def run_loop(w: Workload) -> list[Any]:
    """The baseline: the plainest fast loop (the function in a local, one comprehension)."""
    fn = w.fn
    return [fn(x) for x in w.items()]


#: A run longer than this is not repeated (ProcessPoolExecutor's defaults on a million items).
NO_REPEAT_AFTER = 10.0


def timed(run: Callable[[], Any]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def stream(backend: str, count: int) -> dict[str, Any]:
    """Growth of the caller's memory while ``imap`` streams ``count`` results from an endless
    generator (each result is consumed and dropped)."""
    import itertools

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


def bench(
    chosen: Sequence[str],
    counts: Sequence[int],
    repeats: int,
    quick: bool,
    scale: float,
    table: dict[str, Runner],
) -> list[Row]:
    suite = workloads(quick, scale)
    rows: list[Row] = []
    progress = bar(len(chosen) * repeats * (1 + len(table) * len(counts)))
    done = 0
    for name in chosen:
        w = suite[name]
        loop = functools.partial(run_loop, w)
        loop()  # warm up: imports, caches, a BLAS library's thread pool
        jobs: dict[tuple[str, int], tuple[Callable[[], Any], bool]] = {
            ("serial loop", 1): (loop, False)
        }
        for runner_name, runner in table.items():
            for workers in counts:
                jobs[runner_name, workers] = (
                    functools.partial(runner.run, w, workers),
                    runner.warm_up,
                )
        times: dict[tuple[str, int], list[float]] = {key: [] for key in jobs}
        order = list(jobs.items())
        for round_ in range(repeats):  # every runner once per round, so drift hits all alike,
            shift = round_ * len(order) // repeats  # each round starting elsewhere in the list
            for key, (run, warm_up) in order[shift:] + order[:shift]:
                progress(done, f"{name} / {key[0]} / {key[1]} workers")
                done += 1
                if times[key] and times[key][-1] > NO_REPEAT_AFTER:
                    continue
                if warm_up:  # right before: the other parmap runs stop warm workers
                    run()
                times[key].append(timed(run))
        baseline = statistics.median(times["serial loop", 1])
        for (runner_name, workers), taken in times.items():
            seconds = statistics.median(taken)
            speedup = baseline / seconds
            rows.append(Row(name, runner_name, workers, seconds, speedup, speedup / workers))
    progress(done, "done")
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


def render(rows: list[Row]) -> str:
    lines = [
        f"{'workload':<11} {'runner':<24} {'workers':>7} {'seconds':>9} {'speedup':>8} "
        f"{'efficiency':>10}"
    ]
    for r in rows:
        lines.append(
            f"{r.workload:<11} {r.runner:<24} {r.workers:>7} {r.seconds:>9.4f} "
            f"{r.speedup:>8.2f} {r.efficiency:>10.2f}"
        )
    return "\n".join(lines)


def write(
    rows: list[Row],
    out: Path,
    suite: dict[str, Workload],
    streams: list[dict[str, Any]],
    command: str,
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "bench.json", out / "bench.csv"]
    meta = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command,
        "workloads": {k: w.describe for k, w in suite.items()},
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
        written.append(plot(rows, out / "speedup.png"))
    return written


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    """The results as Markdown: the machine, the workloads, one table per workload."""
    m = meta["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs ({m['processor']}), {m['platform']}, Python {m['python']}.",
        f"Run on {meta['date']} with `{meta['command']}`.",
        "",
    ]
    for name, describe in meta["workloads"].items():
        chosen = [r for r in rows if r.workload == name]
        if not chosen:
            continue
        lines += [f"### {name}: {describe}", "", "| runner | workers | seconds | speedup |"
                  " efficiency |", "|---|---:|---:|---:|---:|"]  # fmt: skip
        lines += [
            f"| {r.runner} | {r.workers} | {r.seconds:.4f} | {r.speedup:.2f} | {r.efficiency:.2f} |"
            for r in chosen
        ]
        lines.append("")
    for s in meta["streams"]:
        lines.append(
            f"- `imap` over an endless generator, {s['results']:,} results, `{s['backend']}`: "
            f"{s['seconds']:.2f} s, caller memory growth {s['growth_mb']:.1f} MB"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> Path:
    """Speedup over the loop against workers, a panel per workload (log scale: the small and
    shared workloads' speedups are far below one); parmap solid, peers dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r.workload for r in rows))
    runners = [n for n in dict.fromkeys(r.runner for r in rows) if n != "serial loop"]
    colors = plt.get_cmap("tab20")
    columns = min(3, len(names))
    lines = -(-len(names) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.5 * columns, 3.5 * lines), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for n, runner in enumerate(runners):
            points = [
                (r.workers, r.speedup) for r in rows if (r.workload, r.runner) == (name, runner)
            ]
            if points:
                style = "-" if runner.startswith("parmap") else "--"
                ax.plot(
                    *zip(*points, strict=True), style, marker="o", color=colors(n), label=runner
                )
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("workers")
        ax.set_ylabel("speedup over the loop")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.08 if lines > 1 else 0.15, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m parmap bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: under a minute")
    parser.add_argument("--workloads", default=None, help="comma-separated (default: all)")
    parser.add_argument(
        "--runners", default=None, help="comma-separated names or prefixes (default: all)"
    )
    parser.add_argument("--workers", default=None, help="comma-separated counts (default 1..cores)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="rounds (default 5; 1 with --quick)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply workload sizes")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder")
    args = parser.parse_args(argv)
    suite = workloads(args.quick, args.scale)
    chosen = args.workloads.split(",") if args.workloads else list(suite)
    unknown = [w for w in chosen if w not in suite]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; valid: {', '.join(suite)}")
    table = runners()
    if args.runners:
        wanted = args.runners.split(",")
        table = {k: r for k, r in table.items() if any(k.startswith(w) for w in wanted)}
        if not table:
            parser.error(f"no runner matches {args.runners!r}; valid: {', '.join(runners())}")
    cores = default_workers()
    counts = (
        [int(n) for n in args.workers.split(",")] if args.workers else list(range(1, cores + 1))
    )
    repeats = args.repeats or (1 if args.quick else 5)
    print(f"parmap bench on {machine()}", file=sys.stderr)
    rows = bench(chosen, counts, repeats, args.quick, args.scale, table)
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
