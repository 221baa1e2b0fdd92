"""pytest-benchmark versions of the bench workloads: ``pytest benchmarks/``.

Outside the test suite's paths (``testpaths = ["tests"]``): these measure, they assert only
that each run computed the right thing. Sizes are small so the folder runs in about a minute;
``python -m parmap bench`` is the full comparison.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing
from collections.abc import Callable
from typing import Any

import pytest

import parmap
from parmap._bench import calibrate, numpy_task, spin, spread, square, touch

N_TRIVIAL = 200_000
N_SPIN = calibrate(0.02)
COARSE = [N_SPIN] * 16
#: 160 items whose costs span 100x (0.2 ms to 20 ms), shuffled.
UNBALANCED = [max(1, int(N_SPIN * 100 ** (f - 1))) for f in spread(160)]
BIG = bytes(20 * 1024 * 1024)


def loop(fn: Callable[[Any], Any], items: Any) -> list[Any]:
    return [fn(x) for x in items]


def pool_map(fn: Callable[[Any], Any], items: Any) -> list[Any]:
    with multiprocessing.Pool(2) as pool:
        return pool.map(fn, items)


def executor_map(fn: Callable[[Any], Any], items: Any, chunksize: int = 1) -> list[Any]:
    with cf.ProcessPoolExecutor(2) as executor:
        return list(executor.map(fn, items, chunksize=chunksize))


RUNNERS: dict[str, Callable[[Callable[[Any], Any], Any], list[Any]]] = {
    "loop": loop,
    "parmap-auto": parmap.pmap,
    "parmap-process": functools.partial(parmap.pmap, backend="process"),
    "parmap-pool": functools.partial(parmap.pmap, backend="pool"),
    "parmap-futures": functools.partial(parmap.pmap, backend="futures"),
    "multiprocessing.Pool": pool_map,
}


@pytest.mark.parametrize("runner", RUNNERS)
def test_trivial(benchmark: Any, runner: str) -> None:
    out = benchmark.pedantic(RUNNERS[runner], (square, range(N_TRIVIAL)), rounds=3)
    assert out[-1] == (N_TRIVIAL - 1) ** 2


def test_trivial_executor_defaults(benchmark: Any) -> None:
    """ProcessPoolExecutor.map with its default chunksize of 1, on a tenth of the items."""
    out = benchmark.pedantic(executor_map, (square, range(N_TRIVIAL // 10)), rounds=1)
    assert len(out) == N_TRIVIAL // 10


@pytest.mark.parametrize("runner", RUNNERS)
def test_coarse(benchmark: Any, runner: str) -> None:
    out = benchmark.pedantic(RUNNERS[runner], (spin, COARSE), rounds=3)
    assert len(out) == len(COARSE)


@pytest.mark.parametrize("runner", RUNNERS)
def test_large_closure(benchmark: Any, runner: str) -> None:
    out = benchmark.pedantic(RUNNERS[runner], (functools.partial(touch, BIG), range(16)), rounds=3)
    assert out == list(range(16))


@pytest.mark.parametrize("runner", RUNNERS)
def test_unbalanced(benchmark: Any, runner: str) -> None:
    out = benchmark.pedantic(RUNNERS[runner], (spin, UNBALANCED), rounds=3)
    assert len(out) == len(UNBALANCED)


@pytest.mark.parametrize("runner", RUNNERS)
def test_numpy(benchmark: Any, runner: str) -> None:
    pytest.importorskip("numpy")
    out = benchmark.pedantic(RUNNERS[runner], (numpy_task, range(8)), rounds=3)
    assert len(out) == 8
