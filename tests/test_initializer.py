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

from .conftest import ISOLATED, with_engines


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
