"""What ``python -m parmap bench`` shows: the table and its legend, the JSON, CSV and Markdown
files, and the plot."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import platform
import textwrap
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._api import default_workers
from ._bench_rows import LOOP, LOOP_RUNS, Row

# -- the table -------------------------------------------------------------------------------------


def num(x: float) -> str:
    """``x`` to three significant digits, in plain notation (no exponent)."""
    if x <= 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.{min(9, max(0, 2 - math.floor(math.log10(x))))}f}"


def legend(rows: list[Row]) -> str:
    """What the table's columns mean, in its own units."""
    rounds = max((r.rounds for r in rows), default=0)
    return "\n".join(
        [
            f"ms: wall-clock milliseconds of one run (its workers' start and stop included), the "
            f"median of {rounds} interleaved round{'s' * (rounds != 1)} (the loop's: of its "
            f"{LOOP_RUNS} runs a round), [fastest-slowest].",
            "speedup: the serial loop's median ms / the row's (2.00: twice as fast as the loop, "
            "0.50: half as fast), [lowest-highest ratio within a round].",
            "efficiency: speedup / workers (1.00: every worker as busy as the loop).",
            "~ noise: the speedup's range is wider than its distance from 1.00, or it is above the "
            "worker count, or it was measured once: neither a speedup nor a slowdown.",
        ]
    )


def _ms(r: Row) -> tuple[str, str]:
    return num(r.seconds * 1000), f"{num(r.seconds_min * 1000)}-{num(r.seconds_max * 1000)}"


def _speedup(r: Row) -> tuple[str, str]:
    if r.runner == LOOP:
        return num(r.speedup), ""
    return num(r.speedup), f"{num(r.speedup_min)}-{num(r.speedup_max)}"


def _efficiency(r: Row) -> str:
    if r.efficiency is None:
        return "~"
    return f"{r.efficiency:.2f}" if r.efficiency >= 0.01 else "<0.01"


def render(rows: list[Row]) -> str:
    """The table, a row per runner and worker count, columns as wide as their cells."""
    head = [
        "workload",
        "runner",
        "workers",
        "ms",
        "[min-max]",
        "",
        "speedup",
        "[min-max]",
        "efficiency",
    ]
    cells = [head]
    for r in rows:
        ms, ms_range = _ms(r)
        speedup, speedup_range = _speedup(r)
        cells.append(
            [r.workload, r.runner, str(r.workers), ms, f"[{ms_range}]", "~" if r.noise else "",
             speedup, f"[{speedup_range}]" if speedup_range else "", _efficiency(r)]
        )  # fmt: skip
    widths = [max(len(line[i]) for line in cells) for i in range(len(head))]
    right = {2, 3, 6, 8}  # the numbers; the ranges start right after theirs
    return "\n".join(
        " ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    )


# -- the files -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the bench ran on: Python, the platform, the CPUs, the processor."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": default_workers(),
        "processor": platform.processor() or platform.machine(),
    }


def write(
    rows: list[Row],
    out: Path,
    workloads: dict[str, str],
    streams: list[dict[str, Any]],
    command: str,
) -> list[Path]:
    """``bench.json``, ``bench.csv``, ``bench.md`` and, where matplotlib is installed,
    ``speedup.png``, written under ``out``; ``workloads`` says what each workload maps."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "bench.json", out / "bench.csv"]
    chosen = dict.fromkeys(r.workload for r in rows)
    meta: dict[str, Any] = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command,
        "workloads": {k: workloads[k] for k in chosen},
        "legend": legend(rows).splitlines(),
        "streams": streams,
    }
    written[0].write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2))
    with written[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    written.append(out / "bench.md")
    written[-1].write_text(markdown(rows, meta))
    if importlib.util.find_spec("matplotlib") is not None:
        written.append(plot(rows, out / "speedup.png", meta["workloads"]))
    return written


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    """The results as Markdown: the machine, the columns' meaning, one table per workload."""
    m = meta["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs ({m['processor']}), {m['platform']}, Python {m['python']}.",
        f"Run on {meta['date']} with `{meta['command']}`.",
        "",
        *(f"- {line}" for line in meta["legend"]),
        "",
    ]
    for name, what in meta["workloads"].items():
        chosen = [r for r in rows if r.workload == name]
        if not chosen:
            continue
        lines += [f"### {name}: {what}", "", "| runner | workers | ms | [min-max] | speedup |"
                  " [min-max] | efficiency |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in chosen:
            ms, ms_range = _ms(r)
            speedup, speedup_range = _speedup(r)
            lines.append(
                f"| {r.runner} | {r.workers} | {ms} | {ms_range} | {'~ ' * r.noise}{speedup} | "
                f"{speedup_range} | {_efficiency(r)} |"
            )
        lines.append("")
    for s in meta["streams"]:
        lines.append(
            f"- `imap` over an endless generator, {s['results']:,} results, `{s['backend']}`: "
            f"{s['seconds']:.2f} s, caller memory growth {s['growth_mb']:.1f} MB"
        )
    return "\n".join(lines) + "\n"


# -- the plot --------------------------------------------------------------------------------------


#: Okabe and Ito's colours, told apart with any colour vision (their yellow left out: too pale
#: on white); each runner also has its own marker, and the peers dashed lines.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*"]
PEER_LINES = ["--", "-.", ":", (0, (5, 2, 1, 2, 1, 2))]


def log_ticks(low: float, high: float) -> list[float]:
    """Ticks for a log axis from ``low`` to ``high``: 1, 2 and 5 a decade, finer where that
    leaves fewer than four (0.8, 1, 1.2, 1.5, 2 rather than 1 and 2 alone)."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for subs in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [round(m * 10.0**e, 12) for e in decades for m in subs]
        ticks = [t for t in ticks if low <= t <= high]
        if len(ticks) >= 4:
            break
    return ticks


def plot(rows: list[Row], path: Path, workloads: dict[str, str] | None = None) -> Path:
    """``figure``, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure(rows, workloads)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _styles(runners: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each runner's colour, marker and line: parmap's solid, each peer's its own dashes."""
    style: dict[str, dict[str, Any]] = {}
    peers = 0
    for n, runner in enumerate(runners):
        if runner.startswith("parmap"):
            line: Any = "-"
        else:
            line, peers = PEER_LINES[peers % len(PEER_LINES)], peers + 1
        style[runner] = {
            "color": PALETTE[n % len(PALETTE)],
            "marker": MARKERS[n % len(MARKERS)],
            "linestyle": line,
        }
    return style


def _plain(v: float, _: Any) -> str:
    """A tick label in plain notation: 0.00005, not 5e-05."""
    return f"{v:.12f}".rstrip("0").rstrip(".")


def _points(ax: Any, mine: Sequence[Row], x: Sequence[float], s: dict[str, Any]) -> None:
    """One runner's speedups at ``x``: the line through them, each one's range over the rounds,
    and its marker, hollow for noise."""
    y = [r.speedup for r in mine]
    ax.plot(x, y, color=s["color"], linestyle=s["linestyle"], linewidth=1.2)
    ax.errorbar(
        x,
        y,
        yerr=[[r.speedup - r.speedup_min for r in mine],
              [r.speedup_max - r.speedup for r in mine]],
        fmt="none", ecolor=s["color"], elinewidth=0.8, capsize=2, alpha=0.7,
    )  # fmt: skip
    for r, xi in zip(mine, x, strict=True):
        ax.plot(
            xi,
            r.speedup,
            marker=s["marker"],
            color=s["color"],
            markerfacecolor="white" if r.noise else s["color"],
            markersize=6,
            linestyle="none",
        )


def _axes(ax: Any, counts: Sequence[int]) -> None:
    """A logarithmic speedup axis with plain numbers, a tick at each whole worker count."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator(log_ticks(*ax.get_ylim())))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(min(counts) - 0.4, max(counts) + 0.4)


def _noise_note(ax: Any, chosen: Sequence[Row]) -> None:
    """How many of the panel's points are noise, in the corner; in colour and bold if half or
    more."""
    noisy = sum(r.noise for r in chosen)
    most = 2 * noisy >= len(chosen)
    ax.text(
        0.02, 0.97,
        f"{noisy} of {len(chosen)} points noise (hollow)" if noisy else "no point is noise",
        transform=ax.transAxes, va="top", fontsize=8,
        color=PALETTE[3] if most else "dimgrey",
        fontweight="bold" if most else "normal",
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1},
    )  # fmt: skip


def _grid(panels: int) -> tuple[int, int]:
    """The lines and columns of panels: two columns for four panels, else up to three."""
    columns = 2 if panels == 4 else min(3, panels)
    return -(-panels // columns), columns


def _panel(
    ax: Any,
    name: str,
    rows: Sequence[Row],
    style: dict[str, dict[str, Any]],
    counts: Sequence[int],
    workloads: dict[str, str],
) -> None:
    """Workload ``name``'s panel, titled with its description in ``workloads`` if any."""
    chosen = [r for r in rows if r.workload == name and r.runner != LOOP]
    ax.plot(counts, counts, ":", color="grey", linewidth=1.2)  # the ideal
    ax.axhline(1.0, color="grey", linewidth=0.8)  # the loop
    for n, (runner, s) in enumerate(style.items()):
        mine = [r for r in chosen if r.runner == runner]
        if mine:  # dodged a little sideways, so that the ranges do not hide each other
            _points(ax, mine, [r.workers + (n - (len(style) - 1) / 2) * 0.015 for r in mine], s)
    _axes(ax, counts)
    title = f"{name}: {workloads[name]}" if name in workloads else name
    ax.set_title(textwrap.fill(title, 60), fontsize=9)
    _noise_note(ax, chosen)
    ax.set_xlabel("workers")
    ax.set_ylabel("speedup over the serial loop")
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)


def _handles(style: dict[str, dict[str, Any]]) -> list[Any]:
    """The legend: each runner, then what the lines, the hollow points and the bars mean."""
    from matplotlib.lines import Line2D

    handles: list[Any] = [
        Line2D([], [], marker=s["marker"], color=s["color"], linestyle=s["linestyle"], label=r)
        for r, s in style.items()
    ]
    handles += [
        Line2D([], [], linestyle=":", color="grey", label="ideal: speedup = workers"),
        Line2D([], [], color="grey", linewidth=0.8, label="the serial loop (1)"),
        Line2D([], [], marker="o", color="black", markerfacecolor="white", linestyle="none",
               label="hollow: noise, not a speedup"),
        Line2D([], [], marker="|", color="black", linestyle="none", markersize=10,
               label="bar: range over the rounds"),
    ]  # fmt: skip
    return handles


def figure(rows: list[Row], workloads: dict[str, str] | None = None) -> Any:
    """Speedup over the loop against workers, a panel per workload, each point with its range
    over the rounds and a noise point hollow (each panel's title counts them). The speedup axis
    is logarithmic (the small and shared workloads' speedups are far below one) with plain
    numbers; the dotted line is the ideal, speedup = workers, the grey one the loop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = workloads or {}
    names = list(dict.fromkeys(r.workload for r in rows))
    style = _styles([n for n in dict.fromkeys(r.runner for r in rows) if n != LOOP])
    counts = sorted({r.workers for r in rows})
    lines, columns = _grid(len(names))
    height = 3.9 * lines + 1.4
    fig, axes = plt.subplots(lines, columns, figsize=(5.2 * columns, height), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        _panel(ax, name, rows, style, counts, workloads)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.legend(handles=_handles(style), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 1.3 / height, 1, 1))
    return fig
