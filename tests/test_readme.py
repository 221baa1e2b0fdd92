"""The README's commands are the ones CI and users run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_the_two_commands() -> None:
    first, second = readme_commands()
    assert first.endswith("python -m parmap bench --quick")
    assert second.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_bench_command_runs_and_writes_results(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "parmap", "bench", "--quick", "--workloads", "trivial,cpu",
         "--workers", "2", "--scale", "0.02", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "parmap:process" in done.stdout
    assert "multiprocessing.Pool" in done.stdout
    assert (tmp_path / "bench.json").exists()
    assert (tmp_path / "bench.csv").exists()
    assert "trivial / parmap:process / 2 workers" in done.stderr  # the progress


def test_main_without_a_command_says_how_to_use_it() -> None:
    done = subprocess.run([sys.executable, "-m", "parmap"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "python -m parmap bench" in done.stderr
