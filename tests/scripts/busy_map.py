"""A caller that maps slow items; each worker says which pid started which item."""

import os
import sys
import time

from parmap import pmap


def work(x: int) -> int:
    os.write(1, f"started {os.getpid()}\n".encode())  # one write: lines cannot interleave
    time.sleep(60)  # the work: long enough to be interrupted
    return x


if __name__ == "__main__":
    backend, start_method = sys.argv[1], sys.argv[2]
    pmap(work, range(8), backend=backend, start_method=start_method, workers=2, chunksize=1)
