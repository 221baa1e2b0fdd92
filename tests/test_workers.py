"""Per-worker settings: BLAS/OpenMP thread limits and random seeds."""

from __future__ import annotations

import concurrent.futures as cf
import os
import random
from typing import Any

import numpy as np
import pytest

import parmap
from parmap import pmap
from parmap._worker import THREAD_VARIABLES

from .conftest import ISOLATED, START_METHODS, each_backend_and_method_once, with_engines


def draw(_: object) -> tuple[float, float]:
    return random.random(), float(np.random.random())


def _threads(engine: dict[str, Any]) -> bool:
    """Whether the engine runs items on several threads of this process."""
    backend = engine["backend"]
    return backend == "thread" or isinstance(backend, cf.ThreadPoolExecutor)


def test_seed_gives_the_same_numbers_on_every_engine(engine: dict[str, Any]) -> None:
    expected = pmap(draw, range(200), seed=42, backend="serial")
    if _threads(engine):
        with pytest.raises(ValueError, match=r"seed= cannot hold on 2 threads of one process"):
            pmap(draw, range(200), seed=42, **engine)
        return
    assert pmap(draw, range(200), seed=42, chunksize=4, **engine) == expected
    assert pmap(draw, range(200), seed=43, backend="serial") != expected


def test_seed_holds_on_a_single_thread() -> None:
    expected = pmap(draw, range(50), seed=7, backend="serial")
    assert pmap(draw, range(50), seed=7, backend="thread", workers=1) == expected


def test_without_a_seed_forked_workers_draw_different_numbers() -> None:
    np.random.seed(0)  # the caller's state, which forked workers would all inherit
    out = pmap(draw, range(8), backend="process", workers=2, chunksize=1, start_method="fork")
    assert len({numpy_value for _, numpy_value in out}) == 8


def threads_variable(_: object) -> str | None:
    return os.environ.get("OMP_NUM_THREADS")


@pytest.fixture
def no_thread_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of the BLAS/OpenMP thread variables set here (importing distributed sets some)."""
    for variable in THREAD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    parmap.shutdown()  # workers started before, with other variables, are not these


@pytest.mark.usefixtures("no_thread_variables")
@pytest.mark.parametrize("start_method", START_METHODS)
def test_workers_limit_blas_threads(start_method: str) -> None:
    cpus = len(os.sched_getaffinity(0))
    out = pmap(threads_variable, range(2), backend="process", workers=2, start_method=start_method)
    assert out == [str(max(1, cpus // 2))] * 2
    off = pmap(threads_variable, range(2), backend="pool", workers=2, start_method=start_method,
               limit_threads=False)  # fmt: skip
    assert off == [None, None]


def blas_threads(_: object) -> set[int]:
    from threadpoolctl import threadpool_info

    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


@pytest.mark.usefixtures("no_thread_variables")
@with_engines(each_backend_and_method_once(ISOLATED))
def test_workers_limit_the_blas_threads_the_caller_already_started(engine: dict[str, Any]) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        pytest.skip("one CPU: there is nothing to limit")
    np.ones((64, 64)) @ np.ones((64, 64))  # BLAS is loaded and started here
    with threadpoolctl.threadpool_limits(cpus):
        assert blas_threads(None) == {cpus}  # what a forked worker would inherit
        out = pmap(blas_threads, range(2), workers=2, chunksize=1, **engine)
    assert out == [{cpus // 2}] * 2


def test_bad_seed_and_limit_threads() -> None:
    with pytest.raises(TypeError, match="seed must be an int or None, got str"):
        pmap(abs, [1], seed="1")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="limit_threads must be True or False"):
        pmap(abs, [1], limit_threads=1)  # type: ignore[call-overload]
