"""``python -m parmap``: the package's command line; its one command is ``bench``."""

from __future__ import annotations

import sys

USAGE = "usage: python -m parmap [-h] bench [options]"

HELP = f"""{USAGE}

parmap: a typed parallel map (pmap, imap, pstarmap) over pluggable backends.

commands:
  bench    time the serial loop, every parmap backend and the installed peers
           (multiprocessing.Pool, ProcessPoolExecutor, joblib, mpire) over a suite of
           workloads, print the table and write JSON, CSV, Markdown and a plot.
           `python -m parmap bench --quick` takes under a minute;
           `python -m parmap bench --help` lists its options and explains the table.

options:
  -h, --help  show this message and exit"""


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(HELP)
        return 0
    if not argv or argv[0] != "bench":
        if argv:
            print(f"python -m parmap: unknown command {argv[0]!r}", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        print("try: python -m parmap bench --quick, or python -m parmap --help", file=sys.stderr)
        return 2
    from ._bench import main as bench

    return bench(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
