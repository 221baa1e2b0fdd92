"""Ctrl-C and a killed caller: every worker stops, one traceback, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from .helpers import Lines, wait_gone

SCRIPT = Path(__file__).parent / "scripts" / "busy_map.py"
ENGINES = [
    ("process", "fork"),
    ("process", "spawn"),
    ("pool", "fork"),
    ("futures", "fork"),
    ("process", "forkserver"),
]
IDS = ["-".join(e) for e in ENGINES]
BOUND = 3.0  # "within a couple of seconds"


@contextmanager
def busy_caller(
    backend: str, start_method: str
) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """A caller mapping slow items, and the pids of its two busy workers; killed at the end."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), backend, start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        lines = Lines(proc)
        yield proc, [int(lines.next(30).split()[1]) for _ in range(2)]
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


@pytest.mark.parametrize("to_group", [False, True], ids=["caller-only", "process-group"])
@pytest.mark.parametrize(("backend", "start_method"), ENGINES, ids=IDS)
def test_ctrl_c_stops_every_worker_with_one_traceback(
    backend: str, start_method: str, to_group: bool
) -> None:
    with busy_caller(backend, start_method) as (proc, workers):
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


@pytest.mark.parametrize(("backend", "start_method"), ENGINES, ids=IDS)
def test_killed_caller_leaves_no_orphans(backend: str, start_method: str) -> None:
    with busy_caller(backend, start_method) as (proc, workers):
        proc.kill()
        proc.wait()
        for pid in workers:
            assert wait_gone(pid, BOUND), f"worker {pid} outlived its killed caller"
