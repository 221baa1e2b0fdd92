"""``python -m parmap bench [options]``: see ``parmap._bench``."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "bench":
        print("usage: python -m parmap bench [--quick] [--help]", file=sys.stderr)
        return 2
    from ._bench import main as bench

    return bench(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
