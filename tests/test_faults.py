"""The fault catalogue, through the engines whose workers are processes parmap starts.

Each case: the error parmap raises, its message, the time it took (a bound, not a benchmark:
the issue promises "within a few seconds"), and that the next call on the same engine works.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import pytest

import parmap
from parmap import (
    BackendName,
    ResultPicklingError,
    ResultUnpicklingError,
    TaskExitError,
    TaskPicklingError,
    TaskTimeoutError,
    TaskUnpicklingError,
    WorkerCrashedError,
    pmap,
)

from . import faults
from .conftest import ENGINES, ISOLATED, each_backend_and_method_once, with_engines
from .faults import FailsToPickle, FailsToUnpickle

#: A fault must surface within this many seconds (process start included).
BOUND = 10.0


@dataclass(frozen=True)
class Fault:
    name: str
    fn: Callable[[Any], Any]
    items: Iterable[Any]
    error: type[BaseException]
    message: str

    def __str__(self) -> str:
        return self.name


CATALOGUE = [
    # the task direction: pickled in the caller ...
    Fault(
        "item raises when pickled",
        faults.identity,
        [1, FailsToPickle("raise"), 3],
        TaskPicklingError,
        r"item 1 could not be pickled: ValueError",
    ),
    Fault(
        "item calls sys.exit when pickled",
        faults.identity,
        [1, FailsToPickle("sys.exit")],
        TaskPicklingError,
        r"item 1 could not be pickled: SystemExit",
    ),
    # ... and unpickled in the worker
    Fault(
        "item raises when unpickled",
        faults.identity,
        [FailsToUnpickle("raise")],
        TaskUnpicklingError,
        r"item 0 could not be unpickled in the worker: ValueError",
    ),
    Fault(
        "item calls sys.exit when unpickled",
        faults.identity,
        [FailsToUnpickle("sys.exit")],
        TaskUnpicklingError,
        r"item 0 could not be unpickled in the worker: SystemExit",
    ),
    Fault(
        "item calls os._exit when unpickled",
        faults.identity,
        [FailsToUnpickle("os._exit")],
        WorkerCrashedError,
        r"while unpickling item 0 died with exit code 5",
    ),
    Fault(
        "item segfaults when unpickled",
        faults.identity,
        [FailsToUnpickle("segfault")],
        WorkerCrashedError,
        r"while unpickling item 0 died with signal SIGSEGV \(-11\)",
    ),
    # the result direction: pickled in the worker ...
    Fault(
        "result raises when pickled",
        faults.return_fails_to_pickle,
        ["raise"],
        ResultPicklingError,
        r"the result of item 0 could not be pickled: ValueError",
    ),
    Fault(
        "result calls sys.exit when pickled",
        faults.return_fails_to_pickle,
        ["sys.exit"],
        ResultPicklingError,
        r"the result of item 0 could not be pickled: SystemExit",
    ),
    Fault(
        "result calls os._exit when pickled",
        faults.return_fails_to_pickle,
        ["os._exit"],
        WorkerCrashedError,
        r"while returning the results of item 0 died with exit code 5",
    ),
    Fault(
        "result segfaults when pickled",
        faults.return_fails_to_pickle,
        ["segfault"],
        WorkerCrashedError,
        r"while returning the results of item 0 died with signal SIGSEGV",
    ),
    # ... and unpickled in the caller
    Fault(
        "result raises when unpickled",
        faults.return_fails_to_unpickle,
        ["raise"],
        ResultUnpicklingError,
        r"results of item 0 could not be unpickled: ValueError",
    ),
    Fault(
        "result calls sys.exit when unpickled",
        faults.return_fails_to_unpickle,
        ["sys.exit"],
        ResultUnpicklingError,
        r"results of item 0 could not be unpickled: SystemExit",
    ),
    # exceptions that cannot make the trip
    Fault(
        "exception cannot be pickled",
        faults.raise_unpicklable,
        [0],
        ResultPicklingError,
        r"the exception UnpicklableError: has a lock raised by item 0 could not be pickled",
    ),
    Fault(
        "exception cannot be rebuilt",
        faults.raise_unreconstructable,
        [0],
        ResultUnpicklingError,
        r"the exception raised by item 0 could not be unpickled",
    ),
    # the function itself
    Fault(
        "function calls sys.exit",
        faults.call_sys_exit,
        range(5),
        TaskExitError,
        r"item 2 called sys.exit\(4\)",
    ),
    Fault(
        "function calls os._exit",
        faults.call_os_exit,
        range(5),
        WorkerCrashedError,
        r"while running item 2 died with exit code 3",
    ),
    Fault(
        "function segfaults",
        faults.segfault_at,
        range(5),
        WorkerCrashedError,
        r"while running item 2 died with signal SIGSEGV \(-11\)",
    ),
    Fault(
        "function is killed by SIGKILL",
        faults.kill_self_at,
        range(5),
        WorkerCrashedError,
        r"while running item 2 died with signal SIGKILL \(-9\)",
    ),
]

#: The catalogue runs on every backend whose workers parmap starts, and on every start method.
FAULT_ENGINES = each_backend_and_method_once(ISOLATED)


@pytest.mark.parametrize("fault", CATALOGUE, ids=str)
@with_engines(FAULT_ENGINES)
def test_fault(fault: Fault, engine: dict[str, Any]) -> None:
    options: dict[str, Any] = {**engine, "workers": 2, "chunksize": 1}
    began = time.monotonic()
    with pytest.raises(fault.error, match=fault.message) as info:
        pmap(fault.fn, fault.items, **options)
    assert time.monotonic() - began < BOUND
    assert isinstance(info.value, parmap.ParmapError)
    if isinstance(info.value, WorkerCrashedError):
        assert info.value.exitcode is not None
        assert info.value.exitcode != 0
        assert info.value.index is not None
    assert pmap(abs, [-1, -2], **options) == [1, 2]


def _report_then_block(fd: int, x: int) -> int:
    os.write(fd, f"{os.getpid()}\n".encode())
    threading.Event().wait()
    return x


def _kill_the_reported_worker(read_fd: int, reply: Connection) -> None:
    """In a helper process: read the pid a worker reports, SIGKILL it, say which and when."""
    readable, _, _ = select.select([read_fd], [], [], BOUND)
    if readable:
        pid = int(os.read(read_fd, 100).split()[0])
        began = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process
        os.kill(pid, signal.SIGKILL)
        reply.send((pid, began))
    reply.close()


@pytest.mark.parametrize("backend", [e.name for e in ISOLATED if e.start_method == "fork"])
def test_worker_killed_from_outside(backend: BackendName) -> None:
    """The worker reports its pid through a pipe it inherits (fork) and blocks; a helper process
    kills it. The caller maps in its own main thread, as a program does."""
    ctx = multiprocessing.get_context("fork")
    read_end, write_end = os.pipe()
    ours, theirs = ctx.Pipe(duplex=False)
    killer = ctx.Process(target=_kill_the_reported_worker, args=(read_end, theirs))
    killer.start()
    theirs.close()
    try:
        with pytest.raises(WorkerCrashedError) as info:
            pmap(
                functools.partial(_report_then_block, write_end),
                [7],
                backend=backend,
                workers=1,
                start_method="fork",
            )
        ended = time.monotonic()
        assert ours.poll(BOUND), "the worker never started"
        pid, began = ours.recv()
        assert ended - began < BOUND
    finally:
        killer.join(BOUND)
        ours.close()
        os.close(read_end)
        os.close(write_end)
    assert info.value.exitcode == -signal.SIGKILL
    assert info.value.index == 0
    assert f"pid {pid}" in str(info.value)
    assert "SIGKILL" in str(info.value)
    assert pmap(abs, [-3], backend=backend, workers=1) == [3]


def _block_at(x: int) -> int:
    if x == 3:
        threading.Event().wait()
    return x


@with_engines([e for e in ENGINES if e.kills_on_timeout and e.default_method])
def test_item_that_never_returns_times_out(engine: dict[str, Any]) -> None:
    began = time.monotonic()
    with pytest.raises(TaskTimeoutError, match=r"item 3 ran longer than timeout=0.5s") as info:
        pmap(_block_at, range(6), timeout=0.5, chunksize=2, **engine)
    assert info.value.index == 3
    assert time.monotonic() - began < BOUND
    assert pmap(abs, [-1], timeout=5, **engine) == [1]


def test_thread_backend_times_out_and_leaves_the_thread_to_finish() -> None:
    release = threading.Event()

    def stuck(x: int) -> int:
        if x == 1:
            release.wait()
        return x

    before = set(threading.enumerate())
    with pytest.raises(TaskTimeoutError, match="item 1"):
        pmap(stuck, range(3), backend="thread", timeout=0.3, chunksize=1)
    release.set()
    for thread in set(threading.enumerate()) - before:
        thread.join(BOUND)
        assert not thread.is_alive()


def test_serial_backend_reports_an_overrun_when_the_item_returns() -> None:
    def slow(x: int) -> int:
        if x == 1:
            time.sleep(0.3)  # the work itself, not synchronisation
        return x

    with pytest.raises(TaskTimeoutError, match="item 1"):
        pmap(slow, range(3), backend="serial", timeout=0.1)


def test_segfault_dump_goes_to_the_workers_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    """A forked worker's fatal-error dump lands on its own stderr (captured here), not over the
    terminal: conftest points an inherited faulthandler at fd 2."""
    with pytest.raises(WorkerCrashedError, match="SIGSEGV"):
        pmap(faults.segfault_at, range(5), backend="pool", start_method="fork", chunksize=1)
    err = capfd.readouterr().err
    assert "Fatal Python error: Segmentation fault" in err
    assert "segfault_at" in err


def _fifty_ms(x: int) -> int:
    time.sleep(0.05)  # the work itself: each item takes 50 ms, five times the timeout
    return x


@with_engines([e for e in ENGINES if e.timeouts and e.default_method])
def test_a_short_timeout_is_enforced_on_items_that_return_late(engine: dict[str, Any]) -> None:
    """The caller looks at the board only every so often; an item that returns after its
    timeout, before the caller looked, is caught in the worker. The lowest late item is named."""
    before = set(threading.enumerate())
    with pytest.raises(TaskTimeoutError, match=r"item 0 ran longer than timeout=0.01s") as info:
        pmap(_fifty_ms, range(6), timeout=0.01, workers=2, **engine)
    assert info.value.index == 0
    # A thread cannot be killed: one of parmap's caught running late is left to finish its item
    # (an executor you pass keeps its threads: they are yours).
    for thread in set(threading.enumerate()) - before:
        if not thread.name.startswith("parmap"):
            continue
        thread.join(BOUND)
        assert not thread.is_alive()


TIMED_PHASE_ENGINES = [e for e in ISOLATED if e.default_method]


@pytest.mark.parametrize(
    ("what", "call", "message"),
    [
        (
            "initializer",
            {"fn": abs, "items": [-1, -2], "initializer": faults.block},
            r"the initializer ran longer than timeout=1s",
        ),
        (
            "unpickling",
            {"fn": faults.identity, "items": [FailsToUnpickle("block")]},
            r"unpickling the chunk at item 0 ran longer than timeout=1s",
        ),
        (
            "pickling",
            {"fn": faults.return_fails_to_pickle, "items": ["block"]},
            r"pickling the results of the chunk at item 0 ran longer than timeout=1s",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else "",
)
@with_engines(TIMED_PHASE_ENGINES)
def test_timeout_bounds_the_initializer_and_the_trip_of_an_item(
    engine: dict[str, Any], what: str, call: dict[str, Any], message: str
) -> None:
    """No part of an item's trip through a worker runs unbounded under ``timeout=``: the
    initializer, unpickling the item, pickling its result (each hung forever before)."""
    options: dict[str, Any] = {"timeout": 1, "workers": 2, "chunksize": 1}
    if "initializer" in call:
        options["initializer"] = call["initializer"]
    began = time.monotonic()
    with pytest.raises(TaskTimeoutError, match=message):
        pmap(call["fn"], call["items"], **options, **engine)
    assert time.monotonic() - began < BOUND
    assert pmap(abs, [-1, -2], timeout=5, **engine) == [1, 2]
