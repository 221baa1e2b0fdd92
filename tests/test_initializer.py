"""initializer= / initargs= run once per worker; worker_state() reaches what they built."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import pytest

import parmap
from parmap import (
    InitializerError,
    ParmapError,
    WorkerCrashedError,
    pmap,
    worker_state,
)

from .conftest import ENGINES, ISOLATED, with_engines


def load(token: str) -> dict[str, Any]:
    return {"token": token, "built_by": (os.getpid(), threading.get_ident()), "id": object()}


def use(x: int) -> tuple[str, tuple[int, int], int, int]:
    state = worker_state()
    return state["token"], state["built_by"], id(state["id"]), x


def test_each_worker_builds_its_state_once(engine: dict[str, Any]) -> None:
    out = pmap(use, range(40), chunksize=3, initializer=load, initargs=("model-7",), **engine)
    assert [x for *_, x in out] == list(range(40))
    assert {token for token, *_ in out} == {"model-7"}
    states_by_worker: dict[tuple[int, int], set[int]] = {}
    for _, worker, state_id, _ in out:
        states_by_worker.setdefault(worker, set()).add(state_id)
    assert all(len(ids) == 1 for ids in states_by_worker.values()), states_by_worker


def fail_to_load(path: str) -> None:
    raise FileNotFoundError(path)


def test_an_initializer_that_raises_is_named(engine: dict[str, Any]) -> None:
    with pytest.raises(InitializerError, match=r"the initializer fail_to_load raised "
                       r"FileNotFoundError: /nowhere"):  # fmt: skip
        pmap(abs, range(10), initializer=fail_to_load, initargs=("/nowhere",), **engine)
    assert pmap(abs, [-1], **engine) == [1]


def exit_in_init() -> None:
    sys.exit(3)


def test_an_initializer_that_exits_is_named(process_engine: dict[str, Any]) -> None:
    with pytest.raises(InitializerError, match="exit_in_init raised SystemExit"):
        pmap(abs, range(10), initializer=exit_in_init, **process_engine)


def die_in_init() -> None:
    os._exit(9)


@with_engines([e for e in ISOLATED if e.default_method])
def test_an_initializer_that_kills_its_worker_ends_the_call(engine: dict[str, Any]) -> None:
    began = time.monotonic()
    with pytest.raises(WorkerCrashedError, match="running the initializer die_in_init") as info:
        pmap(abs, range(10), workers=2, initializer=die_in_init, **engine)
    assert info.value.exitcode == 9
    assert time.monotonic() - began < 10  # no endless respawning, as multiprocessing.Pool does
    assert pmap(abs, [-2], workers=2, **engine) == [2]


def test_worker_state_without_an_initializer() -> None:
    with pytest.raises(ParmapError, match="no initializer= ran"):
        pmap(lambda _: worker_state(), [1, 2], backend="thread")


def test_bad_initializer_arguments() -> None:
    with pytest.raises(TypeError, match="the initializer must be callable"):
        pmap(abs, [1], initializer=3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="initargs must be a tuple, got list"):
        pmap(abs, [1], initializer=load, initargs=["x"])  # type: ignore[call-overload]


def test_auto_runs_the_initializer_in_the_caller_too() -> None:
    out = parmap.pmap(use, range(5), initializer=load, initargs=("t",))
    assert {token for token, *_ in out} == {"t"}


def _keep(lock: Any, counter: Any, barrier: Any) -> tuple[Any, Any]:
    return lock, counter


def _count_under_the_lock(x: int) -> int:
    lock, counter = parmap.worker_state()
    with lock:
        counter.value += 1
    return x


@with_engines([*ISOLATED, *(e for e in ENGINES if e.name == "auto")])
def test_initargs_holding_locks_and_values_travel_as_workers_start(
    engine: dict[str, Any],
) -> None:
    """As with ``multiprocessing.Pool(initializer, initargs=(lock,))``: synchronisation
    primitives cannot be pickled, but pass to a process as it starts."""
    import multiprocessing

    ctx = multiprocessing.get_context(engine.get("start_method"))
    lock, counter, barrier = ctx.Lock(), ctx.Value("i", 0), ctx.Barrier(2)
    results = pmap(
        _count_under_the_lock,
        range(20),
        initializer=_keep,
        initargs=(lock, counter, barrier),
        chunksize=1,
        **engine,
    )
    assert results == list(range(20))
    assert counter.value == 20


def test_initargs_that_only_travel_by_inheritance_are_refused_where_they_cannot() -> None:
    import concurrent.futures as cf
    import multiprocessing

    with (
        cf.ProcessPoolExecutor(1) as executor,
        pytest.raises(parmap.TaskPicklingError, match="through inheritance"),
    ):
        pmap(abs, [1], backend=executor, initializer=_keep, initargs=(multiprocessing.Lock(), 0, 0))


def test_process_executor_initargs_with_a_lock() -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")  # the executor's default start method
    counter = ctx.Value("i", 0)
    initargs = (ctx.Lock(), counter, None)
    with parmap.ProcessExecutor(2, initializer=_keep, initargs=initargs) as executor:
        assert list(executor.map(_count_under_the_lock, range(6))) == list(range(6))
    assert counter.value == 6
