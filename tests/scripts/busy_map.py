"""A caller that maps slow items; each worker says which pid started which item.

Usage: ``busy_map.py BACKEND START_METHOD [sleep|hog]``: the items sleep (default), or hog the
GIL in one long C call.
"""

import os
import signal
import sys
import time
from typing import Any

from parmap import pmap


def work(x: int) -> int:
    os.write(1, f"started {os.getpid()}\n".encode())  # one write: lines cannot interleave
    time.sleep(60)  # the work: long enough to be interrupted
    return x


def hog(x: int) -> int:
    os.write(1, f"started {os.getpid()}\n".encode())
    return sum(range(10**10)) + x  # minutes in C, the GIL held all along


if __name__ == "__main__":
    # As a program started from a terminal: a test runner started in the background (as a
    # non-interactive shell starts jobs) hands its children SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    backend: Any = sys.argv[1]
    start_method = sys.argv[2]
    fn = hog if sys.argv[3:] == ["hog"] else work
    pmap(fn, range(8), backend=backend, start_method=start_method, workers=2, chunksize=1)
