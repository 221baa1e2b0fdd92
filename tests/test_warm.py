"""The "process" backend keeps its workers warm between calls, and lets them go cleanly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import parmap
from parmap import pmap, run_processes

from .helpers import children, wait_gone


def pid_of(_: object) -> int:
    return os.getpid()


def test_repeated_calls_reuse_the_workers() -> None:
    first = set(pmap(pid_of, range(8), backend="process", workers=2, chunksize=1))
    second = set(pmap(pid_of, range(8), backend="process", workers=2, chunksize=1))
    assert first == second
    assert first <= children()


def test_a_failed_call_does_not_keep_its_workers() -> None:
    workers = set(pmap(pid_of, range(4), backend="process", workers=2, chunksize=1))

    def fail(x: int) -> int:
        raise KeyError(x)

    with pytest.raises(KeyError):
        pmap(fail, range(4), backend="process", workers=2)
    for pid in workers:
        assert wait_gone(pid, 5)
    assert pmap(abs, [-1], backend="process", workers=2) == [1]


def test_shutdown_stops_the_warm_workers() -> None:
    workers = set(pmap(pid_of, range(4), backend="process", workers=2, chunksize=1))
    parmap.shutdown()
    assert not workers & children()
    assert pmap(abs, [-2], backend="process", workers=2) == [2]


def _nested(n: int) -> list[int]:
    return pmap(abs, range(-n, 0), backend="process", workers=2)


def test_a_child_process_may_map_and_exit() -> None:
    """Warm workers in a multiprocessing child are stopped at its exit, not waited for."""
    pmap(abs, [1], backend="process", workers=2)  # the parent has warm workers too
    assert run_processes(_nested, [(3,), (2,)], timeout=30) == [[3, 2, 1], [2, 1]]


def test_a_script_exits_promptly_with_warm_workers() -> None:
    script = (
        "import os, parmap\n"
        "pids = set(parmap.pmap(lambda _: os.getpid(), range(6), backend='process', chunksize=1))\n"
        "print(' '.join(map(str, pids)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    for pid in map(int, done.stdout.split()):
        assert wait_gone(pid, 5)
