"""``python -m parmap``: its help and its commands."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parmap", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_describes_the_commands_and_exits_0() -> None:
    for flag in ("--help", "-h"):
        done = run(flag)
        assert done.returncode == 0, done.stderr
        assert "parallel map" in done.stdout
        assert "bench" in done.stdout


def test_an_unknown_command_exits_2_with_the_usage() -> None:
    done = run("frobnicate")
    assert done.returncode == 2
    assert "python -m parmap bench" in done.stderr
