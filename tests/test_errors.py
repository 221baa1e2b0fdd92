"""Every public exception pickles with its type, message and attributes, so an error raised in
a nested map (a map inside a worker) reaches the outer caller as itself."""

from __future__ import annotations

import os
import pickle
import signal
from typing import Any

import pytest

import parmap
from parmap import ParmapError, RemoteTraceback, WorkerCrashedError
from parmap._errors import CheckpointError


def _all_subclasses(cls: type[BaseException]) -> list[type[BaseException]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _all_subclasses(sub)
    return found


PUBLIC = {name: getattr(parmap, name) for name in parmap.__all__}
ERRORS = [c for c in _all_subclasses(ParmapError) if PUBLIC.get(c.__name__) is c]

#: A way to build each, with keyword-only attributes where the class has them.
EXAMPLES: dict[str, Any] = {
    "WorkerCrashedError": lambda: WorkerCrashedError("a worker", exitcode=-9, index=3, pid=42),
    "TaskTimeoutError": lambda: parmap.TaskTimeoutError("item 2", timeout=0.5, index=2),
    "TaskExitError": lambda: parmap.TaskExitError("item 1", code=4, index=1),
    "CheckpointError": lambda: CheckpointError("run.sqlite", "in use", index=2),
}


def test_every_public_error_is_covered() -> None:
    assert {c.__name__ for c in ERRORS} >= {
        "ParmapError",
        "WorkerCrashedError",
        "TaskTimeoutError",
        "TaskExitError",
        "InitializerError",
        "SerializationError",
        "TaskPicklingError",
        "TaskUnpicklingError",
        "ResultPicklingError",
        "ResultUnpicklingError",
        "BackendUnavailableError",
    }


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_error_round_trips_through_pickle(cls: type[ParmapError]) -> None:
    make = EXAMPLES.get(cls.__name__)
    if make is not None:
        error = make()
    elif issubclass(cls, (parmap.SerializationError, parmap.InitializerError)):
        error = cls("something went wrong", index=5)
    else:
        error = cls("something went wrong")
    error.extra = "kept"
    if hasattr(error, "add_note"):
        error.add_note("a note")
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(error, protocol))
        assert type(back) is cls
        assert str(back) == str(error)
        assert back.args == error.args
        assert vars(back) == vars(error)
        if isinstance(error, ImportError):
            assert isinstance(back, ImportError)
            assert back.msg == error.msg


def test_remote_traceback_round_trips() -> None:
    back = pickle.loads(pickle.dumps(RemoteTraceback("Traceback ...\nValueError: x\n")))
    assert back.tb == "Traceback ...\nValueError: x\n"


def _inner_kills_its_worker(x: int) -> list[int]:
    def die(y: int) -> int:
        if y == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return y

    return parmap.pmap(die, range(3), backend="process", workers=2, chunksize=1)


@pytest.mark.parametrize("outer", ["process", "futures"])
def test_nested_map_whose_inner_worker_dies_raises_worker_crashed(outer: Any) -> None:
    with pytest.raises(WorkerCrashedError) as info:
        parmap.pmap(_inner_kills_its_worker, [0], backend=outer, workers=1)
    assert info.value.exitcode == -signal.SIGKILL
    assert info.value.index == 1  # the inner map's item
    assert "SIGKILL" in str(info.value)
