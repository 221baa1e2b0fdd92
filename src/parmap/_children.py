"""Joining child processes when several threads start and join children at once.

multiprocessing reaps children from any thread: ``Process.start`` polls every child of the
process (``waitpid(WNOHANG)``), and so does ``active_children()``. When another thread's poll
reaps one of ours first, our ``join`` sees ``ECHILD`` and returns with no exit code; a ``close``
then raises ``ValueError: Cannot close a process while it is still running`` (8 threads calling
``pmap(backend="pool")`` at once hit it about 1 call in 30). The thread that reaped it records
the exit code a moment later, in the ``Popen`` object both threads share: wait for that.
"""

from __future__ import annotations

import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

__all__ = ["join_exit", "reap"]

#: How long another thread may take to record the exit code of a child it reaped.
REAP_RACE = 0.5


def join_exit(proc: BaseProcess, timeout: float | None = None) -> int | None:
    """``proc.join(timeout)``, then its exit code: None only while it still runs."""
    proc.join(timeout)
    if proc.exitcode is None and wait([proc.sentinel], 0):  # ended, reaped by another thread
        deadline = time.monotonic() + REAP_RACE
        while proc.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.001)  # the other thread is between its waitpid and its store
    return proc.exitcode


def reap(proc: BaseProcess) -> int | None:
    """Wait for ``proc`` to end, release its sentinel, and return its exit code."""
    code = join_exit(proc)
    if code is not None:
        proc.close()
    return code
