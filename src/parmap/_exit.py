"""At interpreter exit, no process parmap started holds the exit up.

multiprocessing's exit handler runs its finalizers (highest priority first), then joins every
child process still running. The ``"process"`` backend's warm workers wait for a message, and
so do the workers of a call still open at exit: an ``imap`` half read and still referenced (a
module global), or a map running in a daemon thread as the main thread ends. Nothing would ever
come, and the interpreter would never exit. A ``run_processes`` or ``queue_collect`` child
running in a daemon thread's call held it up for as long as the child ran.

So when this process starts its first such process (``started``), a finalizer is registered
(per process: a forked child's inherited one does not run there, and multiprocessing's own
children clear theirs). By the time it runs, every non-daemon thread has been joined: a call
still open is abandoned, as a loop in its place would be. The finalizer runs what was asked to
go first (``first``: the warm workers are asked to quit, and waited for), then kills every other
such process; multiprocessing then reaps them. From then on no process starts outside the main
thread: a daemon thread still running a call blocks in ``abandon`` until the interpreter is gone
(it would stop there anyway), silently, rather than report the deaths of the processes it lost,
or start new ones that nothing would stop. (Calls on ``concurrent.futures``-style engines are
abandoned earlier, as the main thread ends: see ``backends._ending``.)
"""

from __future__ import annotations

import contextlib
import multiprocessing.util
import os
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from . import _forked

__all__ = ["AT_EXIT", "AtExit"]


class AtExit:
    def __init__(self) -> None:
        #: Whether the finalizer has run (in this process).
        self.ran = False
        #: Every process registered by ``started`` and not yet ``ended``.
        self.live: set[BaseProcess] = set()
        self._first: list[Callable[[], None]] = []
        self._finalizer: multiprocessing.util.Finalize | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def first(self, run: Callable[[], None]) -> None:
        """Have ``run`` called at exit before the remaining processes are killed."""
        self._first.append(run)

    def started(self, proc: BaseProcess) -> None:
        """``proc`` was just started: end it at exit if it is still running then.

        Call ``abandon()`` before starting it: this kills it if the finalizer ran meanwhile.
        """
        self.live.add(proc)
        _forked.ours(proc)
        pid = os.getpid()
        with self._lock:
            if self._finalizer is None or self._pid != pid or not self._finalizer.still_active():
                self._finalizer = multiprocessing.util.Finalize(None, self._run, exitpriority=50)
                self._pid = pid
        self.abandon(proc)  # started as the finalizer ran, perhaps after it looked

    def ended(self, proc: BaseProcess) -> None:
        """``proc`` has been joined."""
        self.live.discard(proc)

    def _run(self) -> None:
        self.ran = True
        for run in self._first:
            run()
        for proc in list(self.live):
            with contextlib.suppress(ValueError):  # closed since the copy: it was joined
                proc.kill()

    def abandon(self, *started: BaseProcess) -> None:
        """In a thread still running a call once the finalizer ran: kill the processes it just
        ``started`` and block until the interpreter is gone.

        Only a daemon thread can be running then (the main thread runs the finalizer; the rest
        were joined before it), or the main thread itself in a later exit handler, which goes on.
        """
        if self.ran and threading.current_thread() is not threading.main_thread():
            for proc in started:
                proc.kill()
            threading.Event().wait()

    def _forget(self) -> None:
        """In a forked child: the parent's processes are not ours (see ``_forked``)."""
        self._lock = threading.Lock()
        self.live.clear()
        self.ran = False


AT_EXIT = AtExit()
os.register_at_fork(after_in_child=AT_EXIT._forget)
