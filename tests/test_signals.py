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

from .conftest import ISOLATED, Engine, each_backend_and_method_once
from .helpers import Lines, wait_gone

SCRIPT = Path(__file__).parent / "scripts" / "busy_map.py"
#: Every backend whose workers parmap starts, and every start method.
SIGNAL_ENGINES = [e.param() for e in each_backend_and_method_once(ISOLATED)]
BOUND = 3.0  # "within a couple of seconds"


@contextmanager
def busy_caller(engine: Engine) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """A caller mapping slow items, and the pids of its two busy workers; killed at the end."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), engine.name, str(engine.start_method)],
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
@pytest.mark.parametrize("spec", SIGNAL_ENGINES)
def test_ctrl_c_stops_every_worker_with_one_traceback(spec: Engine, to_group: bool) -> None:
    with busy_caller(spec) as (proc, workers):
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
    with busy_caller(spec) as (proc, workers):
        proc.kill()
        proc.wait()
        for pid in workers:
            assert wait_gone(pid, BOUND), f"worker {pid} outlived its killed caller"
