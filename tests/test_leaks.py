"""Repeated calls leak nothing: descriptors, processes and shared memory stay flat, and no
``resource_tracker`` warning appears when the program exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "repeat_calls.py"

CASES = [
    ("pmap", "process", "fork", 200),
    ("pmap", "pool", "fork", 100),
    ("pmap", "futures", "fork", 100),
    ("pmap", "thread", "-", 200),
    ("imap", "process", "fork", 200),
    ("pmap", "process", "spawn", 15),
    ("pmap", "process", "forkserver", 30),
    ("pmap", "futures", "forkserver", 15),
    ("run_processes", "-", "fork", 100),
    ("queue_collect", "queue", "fork", 60),
    ("queue_collect", "pipe", "spawn", 10),
    ("queue_collect", "manager", "fork", 20),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("api", "backend", "start_method", "rounds"), CASES, ids=["-".join(map(str, c)) for c in CASES]
)
def test_repeated_calls_leak_nothing(
    api: str, backend: str, start_method: str, rounds: int
) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), api, backend, start_method, str(rounds)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["after"] == report["before"], report
    assert report["new_shm"] == [], report
    assert "resource_tracker" not in done.stderr, done.stderr
    assert "leaked" not in done.stderr, done.stderr
