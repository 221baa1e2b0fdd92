"""The worker processes this process started, which a child made by ``os.fork`` must disown.

multiprocessing lists every process it starts. At exit it terminates the daemonic ones still
running and joins the rest. A child made by a plain ``os.fork`` inherits the list: at its exit
it would send SIGTERM to its parent's ``"pool"`` workers (daemonic), in the middle of the
parent's call, and fail to join the others ("can only join a child process", printed at the
child's exit). multiprocessing's own children start with an empty list; here a forked child
drops, from its copy, every worker parmap started.

It also forgets its parent's fork server (``forget_fork_server``). multiprocessing checks that
the server still runs by waiting for it as for a child, which in a forked child it is not: the
first ``"forkserver"`` map there failed with ``ChildProcessError``. The child starts a fork
server of its own instead.
"""

from __future__ import annotations

import contextlib
import multiprocessing.process
import os
import sys
import weakref
from multiprocessing.process import BaseProcess
from typing import Any

__all__ = ["forget_fork_server", "ours"]

_OURS: weakref.WeakSet[BaseProcess] = weakref.WeakSet()


def ours(proc: BaseProcess) -> None:
    """Record a worker process parmap started (any backend)."""
    _OURS.add(proc)


def _disown() -> None:
    children = getattr(multiprocessing.process, "_children", None)
    if children is not None:
        for proc in list(_OURS):
            children.discard(proc)
    _OURS.clear()
    forget_fork_server()


def forget_fork_server() -> None:
    """Start no process through the fork server this process inherited; close its copy of the
    pipe by which that server knows its caller is alive.

    The server runs until every copy of that pipe is closed, and multiprocessing gives one to
    each process the server starts: its own workers kept it running after their caller died.
    Called in a forked child and in every worker (a later ``"forkserver"`` map there starts a
    server of its own, as it did already where the server was not this process's child).
    """
    module = sys.modules.get("multiprocessing.forkserver")
    server: Any = getattr(module, "_forkserver", None)
    if getattr(server, "_forkserver_alive_fd", None) is None:
        return
    with contextlib.suppress(OSError, TypeError):
        os.close(server._forkserver_alive_fd)
    server._forkserver_address = None
    server._forkserver_alive_fd = None
    server._forkserver_pid = None


os.register_at_fork(after_in_child=_disown)
