"""Calls still open when the main thread ends, on engines in the style of concurrent.futures.

As the main thread ends, ``threading`` runs its exit hooks, then waits for the non-daemon
threads; only after that does ``atexit`` run. concurrent.futures hooks in there first: from
then on a ProcessPoolExecutor refuses new work, and the interpreter waits for all the work it
was given. A ``"futures"`` call still open then (an ``imap`` half read in a module global, a
map in a daemon thread) held the exit up for as long as its items ran: a minute, or forever.

The hook here is registered after concurrent.futures' own, so it runs before it, and looks at
every call in progress on a ``FutureBackend`` (``"futures"``, ``"pool"``, ``"thread"``, an
executor you pass). A call driven by a thread the interpreter is about to wait for (alive and
not a daemon) goes on. Any other is abandoned, as the loop in its place would be: its backend
lets go of its engine (``FutureBackend.let_go``: ``"futures"`` kills its workers, ``"thread"``
drops the chunks not yet started), and a daemon thread still driving it stops where it waits,
silently (``park``), rather than report what it lost. The ``"process"`` backend does the
same at ``atexit``, where multiprocessing waits for its children (see ``parmap._exit``).

Once the main thread has ended, a ProcessPoolExecutor refuses work: a ``"futures"`` map in a
thread that outlives it fails with a ``ParmapError`` that says so (``exiting``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._base import FutureBackend

__all__ = ["closed", "exiting", "opened", "park"]

_OPEN: weakref.WeakSet[FutureBackend] = weakref.WeakSet()
_hooked = False
_ended = False


def opened(backend: FutureBackend) -> None:
    """A call starts on ``backend``."""
    global _hooked
    if not _hooked:
        # ProcessPoolExecutor's exit hook first (registered as it is imported), for ours to run
        # before it. _register_atexit is private, but what concurrent.futures itself uses, for
        # the same reason (bpo-39812). An exiting interpreter refuses both: too late to matter.
        with contextlib.suppress(AttributeError, RuntimeError):
            import concurrent.futures.process  # noqa: F401

            threading._register_atexit(_at_threading_exit)  # type: ignore[attr-defined]
        _hooked = True
    _OPEN.add(backend)


def closed(backend: FutureBackend) -> None:
    """The call on ``backend`` has ended."""
    _OPEN.discard(backend)


def exiting() -> bool:
    """Whether the main thread has ended: the interpreter is on its way out."""
    return _ended or not threading.main_thread().is_alive()


def park() -> None:
    """In a thread driving an abandoned call: block until the interpreter is gone.

    Only a daemon thread is still running a call the hook abandoned (or the main thread, in a
    later exit handler, reading an abandoned ``imap``: it goes on, and finds the engine gone).
    """
    if threading.current_thread() is not threading.main_thread():
        threading.Event().wait()


def _at_threading_exit() -> None:
    global _ended
    _ended = True  # the main thread is not marked as ended until the exit hooks have run
    ending = threading.current_thread()  # the main thread, running the exit hooks
    for backend in list(_OPEN):
        driver = backend.driver
        if driver not in (None, ending) and driver.is_alive() and not driver.daemon:
            continue  # the interpreter waits for this thread, and its call ends with it
        backend.abandoned = True
        backend.let_go()


def _forget_in_child() -> None:
    global _ended
    _OPEN.clear()
    _ended = False


os.register_at_fork(after_in_child=_forget_in_child)
