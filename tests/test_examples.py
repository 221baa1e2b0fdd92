"""Each example in examples/ runs as a script and prints what its docstring promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(name: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout.splitlines()


@pytest.mark.timeout(40)
def test_processes_example() -> None:
    lines = run("processes.py")
    assert lines[0] == "[0, 1, 4, 9]"
    seconds = float(lines[1].split()[1])
    assert seconds < 3.5  # four 2-second workers at once, not one after another (8 s)


def test_queues_example() -> None:
    assert run("queues.py") == ["[1, 4, 9, 16, 25, 36]"]


def test_pool_example() -> None:
    assert run("pool.py") == [str([x * x for x in range(10)]), str(list(range(1, 11)))]
