"""Exceptions raised by parmap.

Every error parmap raises on its own account derives from ``ParmapError``, whose docstring draws
the tree. An exception raised by *your* function is re-raised as itself, with the worker's
traceback attached as its ``__cause__`` (a ``RemoteTraceback``), so ``except ValueError`` works
as it does around a loop. ``RemoteTraceback`` is not raised; it rides along as ``__cause__``.
"""

from __future__ import annotations

import signal
from typing import Any

__all__ = [
    "BackendUnavailableError",
    "CheckpointError",
    "InitializerError",
    "ParmapError",
    "RemoteTraceback",
    "ResultPicklingError",
    "ResultUnpicklingError",
    "SerializationError",
    "TaskExitError",
    "TaskPicklingError",
    "TaskTimeoutError",
    "TaskUnpicklingError",
    "WorkerCrashedError",
    "describe_exitcode",
    "note_item",
]


class ParmapError(Exception):
    """Base class of every error parmap raises on its own account.

    An exception raised by *your* function is not one of these: it is re-raised as itself, with
    the worker's traceback attached as its ``__cause__`` (a
    [`RemoteTraceback`][parmap.RemoteTraceback]), so ``except ValueError`` works as it does
    around a loop. parmap's own errors:

    ```text
    ParmapError
    ├── WorkerCrashedError           a worker process died: signal or exit code, and the item
    ├── TaskTimeoutError             an item ran longer than timeout=
    ├── TaskExitError                the function called sys.exit() (SystemExit in a worker)
    ├── InitializerError             initializer= raised (or exited) in a worker
    ├── SerializationError           something could not cross a process boundary
    │   ├── TaskPicklingError          an item or the function, pickled in the caller
    │   ├── TaskUnpicklingError        an item or the function, unpickled in the worker
    │   ├── ResultPicklingError        a result or an exception, pickled in the worker
    │   └── ResultUnpicklingError      a result or an exception, unpickled in the caller
    ├── CheckpointError              the checkpoint= file cannot be used: its path and why
    └── BackendUnavailableError      a backend needs an optional extra (also an ImportError)
    ```

    Every one pickles with its type, message and attributes (a nested map's error reaches the
    outer caller as itself): the constructors take keyword-only arguments that pickle's
    default, ``cls(*args)``, would not pass, so they are rebuilt from their ``args`` and
    attributes instead, as Trio's ``Cancelled.__reduce__`` does.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[ParmapError], args: tuple[Any, ...], state: dict[str, Any]) -> ParmapError:
    error = cls.__new__(cls, *args)
    if isinstance(error, ImportError):
        ImportError.__init__(error, *args)  # its ``msg``, which only its __init__ sets
    error.args = args
    error.__dict__.update(state)
    return error


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text; attached as ``__cause__``."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def note_item(exc: BaseException, index: int, what: str = "item") -> None:
    """Name the item that raised ``exc`` (your function's own exception), leaving its type, its
    ``args`` and its ``str()`` alone: a note (``add_note``, Python 3.11+), shown under the
    traceback; on 3.10, a last line in the remote traceback's text, where there is one."""
    if index < 0 or isinstance(exc, ParmapError):  # parmap's own errors name it in the message
        return
    note = f"parmap: raised by {what} {index}"
    if hasattr(exc, "add_note"):
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
    elif isinstance(exc.__cause__, RemoteTraceback) and note not in exc.__cause__.tb:
        exc.__cause__.tb += note + "\n"


def describe_exitcode(exitcode: int | None) -> str:
    """``-9`` -> ``'signal SIGKILL (-9)'``, ``3`` -> ``'exit code 3'``."""
    if exitcode is None:
        return "an unknown exit status"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"signal {name} ({exitcode})"
    return f"exit code {exitcode}"


class WorkerCrashedError(ParmapError):
    """A worker process died while it held work: killed, segfaulted, or ``os._exit()``-ed.

    ``exitcode`` is the process's exit code (negative: the signal number), ``index`` the
    position of the item it was running (``None`` where the worker was not running an item,
    as in ``run_processes``), ``pid`` the process id where known.
    """

    def __init__(
        self,
        what: str,
        *,
        exitcode: int | None,
        index: int | None = None,
        pid: int | None = None,
    ) -> None:
        super().__init__(f"{what} died with {describe_exitcode(exitcode)}")
        self.exitcode = exitcode
        self.index = index
        self.pid = pid


class TaskTimeoutError(ParmapError, TimeoutError):
    """An item ran longer than ``timeout=`` seconds; a worker process running it was killed.

    On ``"serial"`` it is raised only after the item returns; on ``"thread"`` it is raised at
    once, and the thread, which cannot be killed, finishes the item on its own (see
    [`MapOptions`][parmap.MapOptions]).
    """

    def __init__(self, what: str, *, timeout: float, index: int | None = None) -> None:
        super().__init__(f"{what} ran longer than timeout={timeout}s")
        self.timeout = timeout
        self.index = index


class TaskExitError(ParmapError):
    """Your function called ``sys.exit()`` (raised ``SystemExit``) inside a worker.

    The ``SystemExit`` is the ``__cause__``; ``code`` is its exit code. parmap does not let a
    worker's ``sys.exit()`` end your program.
    """

    def __init__(self, what: str, *, code: object, index: int | None = None) -> None:
        super().__init__(f"{what} called sys.exit({code!r})")
        self.code = code
        self.index = index


class InitializerError(ParmapError):
    """The ``initializer=`` raised or called ``sys.exit()`` in a worker; the cause says how.

    (An initializer that kills its worker outright raises
    [`WorkerCrashedError`][parmap.WorkerCrashedError] naming the initializer.)
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class SerializationError(ParmapError):
    """Something could not be pickled or unpickled on its way between processes."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class TaskPicklingError(SerializationError):
    """An item or the function could not be pickled in the calling process."""


class TaskUnpicklingError(SerializationError):
    """An item or the function could not be unpickled in the worker."""


class ResultPicklingError(SerializationError):
    """A result, or the exception your function raised, could not be pickled in the worker."""


class ResultUnpicklingError(SerializationError):
    """A result, or the exception your function raised, could not be unpickled in the caller."""


class CheckpointError(ParmapError):
    """The ``checkpoint=`` file cannot be used: another process (or another open checkpoint in
    this one) holds it, it is not a parmap checkpoint, SQLite failed on it, or a result could not
    be pickled into it.

    ``path`` is the file, ``reason`` says why; ``index`` is the position of the item whose
    result could not be stored, where one is to blame.
    """

    def __init__(self, path: str, reason: str, *, index: int | None = None) -> None:
        super().__init__(f"checkpoint {path!r}: {reason}")
        self.path = path
        self.reason = reason
        self.index = index


class BackendUnavailableError(ParmapError, ImportError):
    """The backend needs an optional dependency that is not installed; the message names it."""
