"""``python -m parmap bench``: its help, its terminal output, and the rule that says which rows are
noise (tested on fabricated timings, so that it is deterministic)."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from parmap._bench import (
    LOOP,
    LOOP_RUNS,
    Row,
    Runner,
    Workload,
    bench,
    figure,
    is_noise,
    log_ticks,
    loop_row,
    render,
    runners,
    square,
    summarize,
)

#: A line of the terminal table: workload, runner (may hold spaces), workers, ms [min-max],
#: the noise mark, speedup [min-max] (none for the loop), efficiency.
TABLE_ROW = re.compile(
    r"^(?P<workload>\S+) +(?P<runner>.+?) +(?P<workers>\d+) +(?P<ms>[\d.]+) \[[\d.]+-[\d.]+\] +"
    r"(?P<noise>~)? +(?P<speedup>[\d.]+)(?: \[(?P<low>[\d.]+)-(?P<high>[\d.]+)\])? +"
    r"(?P<efficiency>~|<0\.01|[\d.]+)$"
)


def table(text: str) -> list[dict[str, str]]:
    """The table's rows, parsed; every line after the header must be one."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("workload "))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("imap over"):
            break
        match = TABLE_ROW.match(line)
        assert match, f"not a table row: {line!r}"
        rows.append(match.groupdict())
    return rows


def check(rows: list[dict[str, str]]) -> None:
    """No parmap:serial row above 1 worker; no efficiency without its speedup's meaning: a row
    with the noise mark has none, and no efficiency is above 1."""
    for row in rows:
        if row["runner"] == "parmap:serial":
            assert row["workers"] == "1"
        if row["noise"]:
            assert row["efficiency"] == "~"
        elif row["efficiency"] != "<0.01":
            assert float(row["efficiency"]) <= 1.0
            assert float(row["efficiency"]) == pytest.approx(
                float(row["speedup"]) / int(row["workers"]), abs=0.01, rel=0.01
            )


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parmap", *args], capture_output=True, text=True, timeout=timeout
    )


# -- the command line -----------------------------------------------------------------------------


def test_help_describes_the_commands_and_exits_0() -> None:
    for flag in ("--help", "-h"):
        done = run(flag)
        assert done.returncode == 0, done.stderr
        assert "parallel map" in done.stdout
        assert "bench" in done.stdout


def test_bench_help_explains_the_table_and_exits_0() -> None:
    done = run("bench", "--help")
    assert done.returncode == 0, done.stderr
    for words in ("--quick", "--workloads", "--runners", "--repeats", "speedup", "efficiency"):
        assert words in done.stdout
    assert "~ is noise" in " ".join(done.stdout.split())


def test_an_unknown_command_exits_2_with_the_usage() -> None:
    done = run("frobnicate")
    assert done.returncode == 2
    assert "python -m parmap bench" in done.stderr


@pytest.mark.timeout(90)
def test_a_tiny_run_says_what_it_measured_and_what_its_numbers_mean(tmp_path: Path) -> None:
    done = run(
        "bench", "--quick", "--workloads", "trivial,small", "--scale", "0.05", "--repeats", "3",
        "--runners", "parmap:serial,parmap:thread,parmap:auto", "--workers", "1,2",
        "--out", str(tmp_path), timeout=80,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # It starts with a line per workload, saying what it maps.
    assert lines[0] == "trivial: 100 calls of x*x"
    assert lines[1] == "small: 10 calls of x*x"
    # Then its units and what the speedup, the efficiency and the noise mark mean.
    assert any(line.startswith("ms: wall-clock milliseconds") for line in lines)
    assert any(line.startswith("speedup: the serial loop's") for line in lines)
    assert any(line.startswith("efficiency: speedup / workers") for line in lines)
    assert any(line.startswith("~ noise:") for line in lines)
    rows = table(done.stdout)
    check(rows)
    assert {(r["workload"], r["runner"], r["workers"]) for r in rows} == {
        (w, runner, workers)
        for w in ("trivial", "small")
        for runner, workers in [
            (LOOP, "1"), ("parmap:auto", "1"), ("parmap:auto", "2"), ("parmap:thread", "1"),
            ("parmap:thread", "2"), ("parmap:serial", "1"), ("parmap:auto (repeated)", "1"),
            ("parmap:auto (repeated)", "2"),
        ]
    }  # fmt: skip
    # The files say what the terminal says, the spread and the noise included.
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["workloads"] == {"trivial": "100 calls of x*x", "small": "10 calls of x*x"}
    assert len(saved["rows"]) == len(rows)
    for printed, row in zip(rows, saved["rows"], strict=True):
        assert (printed["runner"], int(printed["workers"])) == (row["runner"], row["workers"])
        assert row["rounds"] == 3
        assert row["seconds_min"] <= row["seconds"] <= row["seconds_max"]
        assert row["speedup_min"] <= row["speedup"] <= row["speedup_max"]
        assert bool(printed["noise"]) == row["noise"]
        assert (row["efficiency"] is None) == row["noise"]
    csv_header = (tmp_path / "bench.csv").read_text().splitlines()[0]
    assert "speedup_min" in csv_header
    assert "noise" in csv_header
    assert "~ noise:" in (tmp_path / "bench.md").read_text()


# -- the rule for noise, on fabricated timings ----------------------------------------------------


def rounds(*seconds: float) -> list[list[float]]:
    """The loop's runs in each round: one a round."""
    return [[s] for s in seconds]


def test_a_clear_speedup_is_not_noise() -> None:
    row = summarize("w", "r", 2, [0.6, 0.62, 0.58], rounds(1.0, 1.0, 1.0))
    assert not row.noise
    assert row.speedup == pytest.approx(1 / 0.6)
    assert (row.speedup_min, row.speedup_max) == pytest.approx((1 / 0.62, 1 / 0.58))
    assert (row.seconds, row.seconds_min, row.seconds_max) == (0.6, 0.58, 0.62)
    assert row.efficiency == pytest.approx(row.speedup / 2)


def test_a_clear_slowdown_is_not_noise() -> None:
    row = summarize("w", "r", 2, [10.0, 11.0, 9.0], rounds(1.0, 1.0, 1.0))
    assert not row.noise
    assert row.speedup == pytest.approx(0.1)
    assert row.efficiency == pytest.approx(0.05)


def test_rounds_that_disagree_on_faster_or_slower_are_noise() -> None:
    row = summarize("w", "r", 2, [0.9, 1.1, 1.0], rounds(1.0, 1.0, 1.0))
    assert row.noise
    assert row.speedup_min < 1 < row.speedup_max
    assert row.efficiency is None


def test_a_range_wider_than_the_distance_from_the_loop_is_noise() -> None:
    # Faster than the loop in every round, but by 1.25x to 3.3x: not a measured 2x.
    row = summarize("w", "r", 2, [0.5, 0.8, 0.3], rounds(1.0, 1.0, 1.0))
    assert row.speedup == pytest.approx(2.0)
    assert row.noise
    assert row.efficiency is None


@pytest.mark.parametrize(("workers", "seconds"), [(1, 0.9), (2, 0.2)])
def test_a_speedup_above_the_worker_count_is_noise(workers: int, seconds: float) -> None:
    row = summarize("w", "r", workers, [seconds] * 3, rounds(1.0, 1.0, 1.0))
    assert row.speedup_max - row.speedup_min == 0  # however steady
    assert row.speedup > workers
    assert row.noise
    assert row.efficiency is None


def test_one_round_is_noise() -> None:
    assert summarize("w", "r", 2, [0.5, None, None], rounds(1.0, 1.0, 1.0)).noise
    assert summarize("w", "r", 2, [0.5], rounds(1.0)).noise


def test_a_drift_that_slows_the_loop_and_the_runner_alike_is_not_noise() -> None:
    # The machine halves its speed twice; each round's runner is still twice its loop's speed.
    row = summarize("w", "r", 2, [0.5, 1.0, 2.0], rounds(1.0, 2.0, 4.0))
    assert row.seconds_max / row.seconds_min == 4
    assert (row.speedup_min, row.speedup, row.speedup_max) == (2.0, 2.0, 2.0)
    assert not row.noise
    assert row.efficiency == 1.0


def test_one_slowed_loop_run_does_not_skew_its_round() -> None:
    loop = [[1.0, 1.0, 9.0], [1.0, 1.1, 1.0], [0.9, 1.0, 1.0]]
    row = summarize("w", "r", 2, [0.6, 0.6, 0.6], loop)
    assert not row.noise
    assert row.speedup_max == pytest.approx(1 / 0.6)
    own = loop_row("w", loop)
    assert (own.runner, own.workers, own.rounds, own.speedup, own.noise) == (LOOP, 1, 3, 1, False)
    assert (own.seconds, own.seconds_min, own.seconds_max) == (1.0, 0.9, 9.0)


def test_is_noise_is_the_range_against_the_distance_from_1() -> None:
    assert not is_noise(1.5, 1.4, 1.6, 2, 3)
    assert is_noise(1.5, 0.9, 1.6, 2, 3)  # straddles 1
    assert is_noise(1.5, 1.01, 1.6, 2, 3)  # 0.59 wide, 0.5 from 1
    assert is_noise(2.5, 2.4, 2.6, 2, 3)  # above the worker count
    assert is_noise(1.5, 1.4, 1.6, 2, 1)  # one round
    assert not is_noise(0.01, 0.005, 0.02, 1, 3)


def test_no_efficiency_above_1_without_the_noise_mark() -> None:
    """Whatever the timings: printed, a row's efficiency is at most 1 or it is marked noise."""
    rng = random.Random(0)
    rows = []
    for n in range(500):
        workers = rng.choice([1, 2, 4])
        count = rng.choice([1, 3, 5])
        base = rng.uniform(0.01, 1.0)
        loop = [[base * rng.uniform(0.5, 2.0) for _ in range(3)] for _ in range(count)]
        taken: list[float | None] = [base / rng.uniform(0.05, 2.5 * workers) for _ in range(count)]
        row = summarize("w", f"runner {n}", workers, taken, loop)
        assert row.efficiency is None or row.efficiency <= 1.0
        assert row.noise == (row.efficiency is None)
        rows.append(row)
    assert any(r.noise for r in rows)
    assert any(not r.noise for r in rows)
    check(table(render(rows)))


def test_the_table_marks_noise_and_gives_it_no_efficiency() -> None:
    loop = rounds(1.0, 1.0, 1.0)
    rows = [
        loop_row("cpu", loop),
        summarize("cpu", "fast", 2, [0.6, 0.62, 0.58], loop),
        summarize("cpu", "superlinear", 2, [0.3, 0.3, 0.3], loop),
        summarize("cpu", "a runner with a long name", 1, [0.9, 1.1, 1.0], loop),
        summarize("cpu", "slow", 2, [3.0, 3.2, 2.9], loop),
    ]
    text = render(rows)
    parsed = table(text)
    check(parsed)
    assert [(r["runner"], r["noise"], r["efficiency"]) for r in parsed] == [
        (LOOP, None, "1.00"),
        ("fast", None, "0.83"),
        ("superlinear", "~", "~"),
        ("a runner with a long name", "~", "~"),
        ("slow", None, "0.17"),
    ]
    assert parsed[1]["speedup"] == "1.67"
    assert (parsed[1]["low"], parsed[1]["high"]) == ("1.61", "1.72")
    assert "e-" not in text  # plain numbers


# -- the runs -------------------------------------------------------------------------------------


def test_bench_runs_parmap_serial_at_1_worker_only_and_every_round() -> None:
    suite = {"tiny": Workload("tiny", square, lambda: range(20), "20 calls of x*x")}
    table_ = {k: r for k, r in runners().items() if k in ("parmap:serial", "parmap:thread")}
    assert not table_["parmap:serial"].parallel
    rows = bench(suite, ["tiny"], [1, 2, 3], 3, table_)
    assert [(r.runner, r.workers) for r in rows] == [
        (LOOP, 1), ("parmap:thread", 1), ("parmap:thread", 2), ("parmap:thread", 3),
        ("parmap:serial", 1),
    ]  # fmt: skip
    loop = rows[0]
    assert loop.rounds == 3
    assert all(r.rounds == 3 for r in rows)


def test_each_round_runs_every_runner_once_and_the_loop_three_times_through_it() -> None:
    calls: list[str] = []
    table_ = {
        "a": Runner(lambda w, n: calls.append(f"a{n}")),
        "b": Runner(lambda w, n: calls.append(f"b{n}")),
        "c": Runner(lambda w, n: calls.append("c"), parallel=False),
    }
    suite = {"tiny": Workload("tiny", lambda x: calls.append("loop"), lambda: [0], "1 call")}
    rows = bench(suite, ["tiny"], [1, 2], 3, table_)
    jobs = ["a1", "a2", "b1", "b2", "c"]
    assert calls[:6] == [*jobs, "loop"]  # untimed: every runner once, then the loop
    turns = [calls[6:14], calls[14:22], calls[22:30]]
    assert len(calls) == 30
    for n, turn in enumerate(turns):
        assert sorted(c for c in turn if c != "loop") == jobs  # each runner once a round
        assert turn.count("loop") == LOOP_RUNS
        assert turn[0] == "loop"
        assert turn[1] == jobs[n * len(jobs) // 3]  # each round starting elsewhere
    assert "loop" not in (turns[0][-1], turns[1][-1], turns[2][-1])  # spread through it
    assert [(r.runner, r.workers, r.rounds) for r in rows] == [
        (LOOP, 1, 3),
        ("a", 1, 3),
        ("a", 2, 3),
        ("b", 1, 3),
        ("b", 2, 3),
        ("c", 1, 3),
    ]


# -- the plot -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matplotlib_fonts() -> None:
    """Draw once before the leak guard's baseline: matplotlib keeps its font file open, cached,
    from its first drawing on (as multiprocessing keeps its forkserver)."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    fig = figure([loop_row("w", rounds(1.0))])
    fig.canvas.draw()
    plt.close(fig)


@pytest.mark.usefixtures("matplotlib_fonts")
def test_the_plot_has_whole_worker_ticks_plain_speedups_the_ideal_and_hollow_noise() -> None:
    loop = rounds(1.0, 1.0, 1.0)
    rows: list[Row] = [loop_row("cpu", loop)]
    for runner, times in [("parmap:auto", (1.2, 0.7)), ("joblib", (250.0, 400.0))]:
        for workers, seconds in zip((1, 2), times, strict=True):
            rows.append(summarize("cpu", runner, workers, [seconds] * 3, loop))
    rows.append(summarize("cpu", "mpire", 2, [0.9, 1.1, 1.0], loop))  # noise
    fig = figure(rows, {"cpu": "16 tasks"})
    fig.canvas.draw()
    ax = fig.axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks == [1, 2]
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels
    assert all(re.fullmatch(r"[\d.]+", label) for label in labels), labels
    assert "cpu: 16 tasks" in ax.get_title()
    assert any("1 of 5 points noise" in text.get_text() for text in ax.texts)
    ideal = [line for line in ax.get_lines() if list(line.get_xdata()) == [1, 2]]
    assert any(list(line.get_ydata()) == [1, 2] for line in ideal)
    hollow = [
        line for line in ax.get_lines()
        if line.get_marker() not in ("None", "", None) and line.get_markerfacecolor() == "white"
    ]  # fmt: skip
    assert len(hollow) == 1  # mpire's
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "hollow: noise, not a speedup" in legend
    assert "ideal: speedup = workers" in legend
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_the_loop_runs_three_times_a_round_with_a_single_runner() -> None:
    calls: list[str] = []
    table_ = {"c": Runner(lambda w, n: calls.append("c"), parallel=False)}
    suite = {"tiny": Workload("tiny", lambda x: calls.append("loop"), lambda: [0], "1 call")}
    bench(suite, ["tiny"], [1, 2], 2, table_)
    assert calls == ["c", "loop"] + ["loop"] * LOOP_RUNS + ["c"] + ["loop"] * LOOP_RUNS + ["c"]


def test_log_ticks_are_plain_and_at_least_four_where_they_can_be() -> None:
    assert log_ticks(0.0004, 3) == [
        0.0005,
        0.001,
        0.002,
        0.005,
        0.01,
        0.02,
        0.05,
        0.1,
        0.2,
        0.5,
        1,
        2,
    ]
    assert log_ticks(0.65, 2.1) == [0.7, 1, 1.5, 2]
    assert log_ticks(0.85, 1.3) == [0.9, 1, 1.2]
