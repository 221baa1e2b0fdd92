"""Ctrl-C and a killed caller: every worker stops, one traceback, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import parmap
from parmap import pmap

from .conftest import ISOLATED, Engine, each_backend_and_method_once
from .helpers import busy_program, wait_gone

SCRIPT = Path(__file__).parent / "scripts" / "busy_map.py"
#: Every backend whose workers parmap starts, and every start method.
SIGNAL_ENGINES = [e.param() for e in each_backend_and_method_once(ISOLATED)]
BOUND = 3.0  # "within a couple of seconds"


@contextmanager
def busy_caller(
    backend: str, start_method: str, work: str = "sleep"
) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """A caller mapping slow items, and the pids of its two busy workers; killed at the end."""
    with busy_program(str(SCRIPT), backend, start_method, work) as running:
        yield running


@pytest.mark.parametrize("to_group", [False, True], ids=["caller-only", "process-group"])
@pytest.mark.parametrize("spec", SIGNAL_ENGINES)
def test_ctrl_c_stops_every_worker_with_one_traceback(spec: Engine, to_group: bool) -> None:
    with busy_caller(spec.name, str(spec.start_method)) as (proc, workers):
        began = time.monotonic()
        if to_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=BOUND * 3)
        assert time.monotonic() - began < BOUND
    text = err.decode()
    assert text.count("Traceback (most recent call last)") == 1, text
    assert text.rstrip().endswith("KeyboardInterrupt"), text
    for pid in workers:
        assert wait_gone(pid, BOUND), f"worker {pid} outlived the caller"


@pytest.mark.parametrize("spec", SIGNAL_ENGINES)
def test_killed_caller_leaves_no_orphans(spec: Engine) -> None:
    with busy_caller(spec.name, str(spec.start_method)) as (proc, workers):
        proc.kill()
        proc.wait()
        for pid in workers:
            assert wait_gone(pid, BOUND), f"worker {pid} outlived its killed caller"


GIL_ENGINES = [
    *((e.name, str(e.start_method)) for e in each_backend_and_method_once(ISOLATED)),
    ("pool", "forkserver"),
    ("futures", "spawn"),
]


@pytest.mark.parametrize(
    ("backend", "start_method"), GIL_ENGINES, ids=["-".join(e) for e in GIL_ENGINES]
)
def test_killed_caller_leaves_no_orphans_while_tasks_hold_the_gil(
    backend: str, start_method: str
) -> None:
    """A worker's watcher thread cannot run while a task holds the GIL: such workers ran on
    for a minute. The kernel kills them with their parent (see ``_worker.die_with_parent``)."""
    with busy_caller(backend, start_method, "hog") as (proc, workers):
        proc.kill()
        proc.wait()
        for pid in workers:
            assert wait_gone(pid, BOUND), f"worker {pid} outlived its killed caller"


def pid_of(_: object) -> int:
    return os.getpid()


def parent_death_signal(_: object) -> int:
    """The signal this process gets when its parent ends (0: none)."""
    import ctypes

    signal_number = ctypes.c_int()
    ctypes.CDLL(None).prctl(2, ctypes.byref(signal_number), 0, 0, 0)  # PR_GET_PDEATHSIG
    return signal_number.value


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_workers_the_main_thread_starts_die_with_their_parent(start_method: str) -> None:
    parmap.shutdown()
    signals = pmap(parent_death_signal, range(4), backend="process", workers=2,
                   start_method=start_method, chunksize=1)  # fmt: skip
    assert signals == [signal.SIGKILL] * 4


def test_warm_workers_a_thread_starts_outlive_it() -> None:
    """The kernel signals when the parent's *thread* ends: a thread's workers must not ask."""
    parmap.shutdown()
    found: list[int] = []

    def call() -> None:
        found.extend(pmap(parent_death_signal, range(4), backend="process", workers=2))
        found.extend(pmap(pid_of, range(4), backend="process", workers=2, chunksize=1))

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    assert found[:4] == [0] * 4
    again = pmap(pid_of, range(4), backend="process", workers=2, chunksize=1)
    assert set(again) == set(found[4:])  # the same warm workers, alive after the thread ended
