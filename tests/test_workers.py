"""Per-worker settings: BLAS/OpenMP thread limits and random seeds."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import pytest

import parmap
from parmap import pmap
from parmap._worker import THREAD_VARIABLES

from .conftest import START_METHODS


def draw(_: object) -> tuple[float, float]:
    return random.random(), float(np.random.random())


def test_seed_gives_the_same_numbers_on_every_engine(engine: dict[str, Any]) -> None:
    expected = pmap(draw, range(30), seed=42, backend="serial")
    assert pmap(draw, range(30), seed=42, chunksize=4, **engine) == expected
    assert pmap(draw, range(30), seed=43, backend="serial") != expected


def test_without_a_seed_forked_workers_draw_different_numbers() -> None:
    np.random.seed(0)  # the caller's state, which forked workers would all inherit
    out = pmap(draw, range(8), backend="process", workers=2, chunksize=1, start_method="fork")
    assert len({numpy_value for _, numpy_value in out}) == 8


def threads_variable(_: object) -> str | None:
    return os.environ.get("OMP_NUM_THREADS")


@pytest.mark.parametrize("start_method", START_METHODS)
def test_workers_limit_blas_threads(start_method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in THREAD_VARIABLES:  # (importing distributed sets some in this process)
        monkeypatch.delenv(variable, raising=False)
    parmap.shutdown()  # workers started before, with other variables, are not these
    cpus = len(os.sched_getaffinity(0))
    out = pmap(threads_variable, range(2), backend="process", workers=2, start_method=start_method)
    assert out == [str(max(1, cpus // 2))] * 2
    off = pmap(threads_variable, range(2), backend="pool", workers=2, start_method=start_method,
               limit_threads=False)  # fmt: skip
    assert off == [None, None]


def test_bad_seed_and_limit_threads() -> None:
    with pytest.raises(TypeError, match="seed must be an int or None, got str"):
        pmap(abs, [1], seed="1")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="limit_threads must be True or False"):
        pmap(abs, [1], limit_threads=1)  # type: ignore[call-overload]
