"""The rows of ``python -m parmap bench``'s table: a runner's seconds over the rounds against the
serial loop's, the speedup's range, and the rule that says which rows are noise."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: The baseline's name in the rows: the plain loop over the items, in the caller.
LOOP = "serial loop"

#: The loop runs this many times a round, spread through it, and each round compares the
#: runners with the median of its loop runs: one loop run that the machine slowed (another
#: program woke, the BLAS library's threads lost a core) would otherwise skew a whole round.
LOOP_RUNS = 3


@dataclass
class Row:
    """One runner at one worker count over one workload, summarized over the rounds."""

    workload: str
    runner: str
    workers: int
    #: Rounds this row was measured in (a run over ``_bench.NO_REPEAT_AFTER`` stops repeating).
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
