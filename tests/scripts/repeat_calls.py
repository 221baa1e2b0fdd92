"""Make many calls on one engine; print descriptors, children, threads and new /dev/shm entries
as JSON."""

import contextlib
import gc
import json
import os
import sys
import threading
from typing import Any

import parmap


def square(x: int) -> int:
    return x * x


def fail(x: int) -> int:
    if x == 3:
        raise ValueError(x)
    return x


def counts() -> dict[str, int]:
    # Descriptors held only by garbage awaiting collection (a Manager proxy's connection in a
    # reference cycle) go at the program's next collection: collect now, so that a count
    # taken just before one and a count taken just after do not differ by a round's worth.
    gc.collect()
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "children": len(parmap_children()),
        "threads": threading.active_count(),
    }


def shm() -> set[str]:
    """This process's shared memory segments and semaphores: the /dev/shm entries whose inode
    it or its children have mapped or open (glibc's sem_open maps a file it then renames, so
    names do not match). /dev/shm is machine-wide, and other programs add and remove theirs
    meanwhile; a segment closed without being unlinked is reported by the resource tracker at
    exit, which the test checks too."""
    inodes = set()
    for pid in [os.getpid(), *parmap_children()]:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as f:
            inodes |= {int(line.split()[4]) for line in f if "/dev/shm/" in line}
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/dev/shm/"):
                        inodes.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
    ours = set()
    for name in os.listdir("/dev/shm"):
        with contextlib.suppress(OSError):
            if os.stat(f"/dev/shm/{name}").st_ino in inodes:
                ours.add(name)
    return ours


def parmap_children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def one_round(api: str, backend: str, start_method: str) -> None:
    options: dict[str, Any] = {"backend": backend}
    if start_method != "-":
        options["start_method"] = start_method
    if api == "pmap":
        assert parmap.pmap(square, range(20), **options) == [x * x for x in range(20)]
        with contextlib.suppress(ValueError):
            parmap.pmap(fail, range(20), chunksize=2, **options)
    elif api == "imap":
        with parmap.imap(square, iter(range(100)), chunksize=1, **options) as it:
            next(it)
    elif api == "run_processes":
        del options["backend"]
        assert parmap.run_processes(square, [(1,), (2,)], **options) == [1, 4]
    else:

        def produce(n: int, q: parmap.Channel[int]) -> None:
            q.put(n)

        del options["backend"]
        assert parmap.queue_collect(produce, [(1,), (2,)], channel=backend, **options) == [1, 2]


if __name__ == "__main__":
    api, backend, start_method, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    for _ in range(3):  # warm up: lazily created helpers (forkserver, heap arenas, trackers)
        one_round(api, backend, start_method)
    before, shm_before = counts(), shm()
    for _ in range(rounds):
        one_round(api, backend, start_method)
    report = {"before": before, "after": counts(), "new_shm": sorted(shm() - shm_before)}
    print(json.dumps(report), flush=True)
