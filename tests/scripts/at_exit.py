"""Programs that end while parmap has workers (see tests/test_exit.py).

Usage: ``at_exit.py SCENARIO BACKEND START_METHOD`` (``default`` for either: the option is not
passed). Items 0 and 1 take 50 ms (enough for ``"auto"`` to hand the rest to workers); every
later item says which process started it (``started PID``), then takes a minute (or
``$AT_EXIT_ITEM_SECONDS``). Where the scenario waits for its workers to be busy, the main thread
reads a line from stdin (the test writes it once it has seen them start). As the main thread
ends, the program prints the pids of its child processes (``workers PID ...``), then ``end``.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import select
import sys
import threading
import time
import warnings
from typing import Any

from parmap import Channel, ParmapError, imap, pmap, queue_collect, run_processes

#: How long the items after the first two take (a thread cannot be stopped: the "thread" tests
#: wait for the items running at exit).
SECONDS = float(os.environ.get("AT_EXIT_ITEM_SECONDS", "60"))


def work(x: int) -> int:
    if x < 2:
        time.sleep(0.05)
        return x
    os.write(1, f"started {os.getpid()}\n".encode())  # one write: lines cannot interleave
    time.sleep(SECONDS)
    return x


def produce(x: int, channel: Channel[int]) -> None:
    channel.put(work(x))


def pid_of(_: object) -> int:
    return os.getpid()


def short(x: int) -> int:
    time.sleep(0.01)
    return x


def wait_for_go() -> None:
    # Not sys.stdin.readline(): a worker forked while this thread holds the lock of sys.stdin's
    # buffer would hang closing its copy (as multiprocessing's children do when they start).
    os.read(0, 64)


def say(*words: object) -> None:
    # One write, as the workers' lines: print() may write a line in pieces, between theirs.
    sys.stdout.flush()
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


def workers() -> list[int]:
    return sorted(p.pid for p in multiprocessing.active_children() if p.pid is not None)


def end() -> None:
    say("workers", *workers())
    say("end")
    sys.exit(int(os.environ.get("AT_EXIT_STATUS", "0")))  # the status the program ends with


def none_die(pids: list[int], seconds: float) -> bool:
    """True if none of ``pids`` ends within ``seconds``."""
    fds = [os.pidfd_open(pid) for pid in pids]
    try:
        readable, _, _ = select.select(fds, [], [], seconds)
        return not readable
    finally:
        for fd in fds:
            os.close(fd)


def fork_and_exit(child_maps: bool, options: dict[str, Any]) -> None:
    """Fork a child that leaves through the normal interpreter exit (atexit handlers run)."""
    before = workers()
    # Python 3.12+ warns of a fork beside threads (the mid-call scenario's): done knowingly here.
    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
    pid = os.fork()
    if pid == 0:
        if child_maps:
            say("child-result", *pmap(abs, range(-3, 0), workers=2, **options))
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    say("child", os.waitstatus_to_exitcode(status))
    say("parent-workers-survived", none_die(before, 0.3))


if __name__ == "__main__":
    scenario, backend, start_method = sys.argv[1:4]
    options: dict[str, Any] = {}
    if backend != "default":
        options["backend"] = backend
    if start_method != "default":
        options["start_method"] = start_method
    if scenario == "imap-global":
        # A half-read imap, still referenced by a module global when the program ends.
        it = imap(work, range(1000), workers=2, chunksize=1, **options)
        say("first", next(it), next(it))
        wait_for_go()
    elif scenario == "daemon-thread":
        mapping = functools.partial(pmap, work, range(1000), workers=2, chunksize=1, **options)
        threading.Thread(target=mapping, daemon=True).start()
        wait_for_go()
    elif scenario == "daemon-thread-children":
        # BACKEND names the call: run_processes, or queue_collect-CHANNEL.
        method = None if start_method == "default" else start_method
        if backend == "run_processes":
            call = functools.partial(run_processes, work, [(2,), (3,)], start_method=method)
        else:
            channel = backend.split("-")[1]
            call = functools.partial(
                queue_collect, produce, [(2,), (3,)], channel=channel, start_method=method
            )
        threading.Thread(target=call, daemon=True).start()
        wait_for_go()
    elif scenario == "thread-outlives-main":
        # The main thread ends first; the interpreter waits for this thread and its map.
        def run() -> None:
            try:
                say(
                    "thread-result", sum(pmap(short, range(100), workers=2, chunksize=1, **options))
                )
            except ParmapError as error:
                say("thread-error", error)
            say("thread-workers", *workers())

        threading.Thread(target=run).start()
    elif scenario in ("fork-idle", "fork-idle-maps"):
        # Warm workers, then an os.fork child that exits normally (and may map by itself).
        say("result", *pmap(pid_of, range(4), workers=2, chunksize=1, **options))
        fork_and_exit(scenario == "fork-idle-maps", options)
        say("result", *pmap(pid_of, range(4), workers=2, chunksize=1, **options))
    elif scenario == "fork-running":
        # An os.fork child that exits normally while a daemon thread's map is running.
        mapping = functools.partial(pmap, work, range(1000), workers=2, chunksize=1, **options)
        threading.Thread(target=mapping, daemon=True).start()
        wait_for_go()
        fork_and_exit(False, options)
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    end()
