"""The fault catalogue: objects that fail while they are pickled or unpickled, and functions
that fail while they run, each paired with what parmap must raise for it.

Module-level, so that workers started by any start method can import them by reference.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from typing import Any


def segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def raise_error(*_: object) -> None:
    raise ValueError("fault raised while (un)pickling")


def exit_now(*_: object) -> None:
    sys.exit(3)


def hard_exit(*_: object) -> None:
    os._exit(5)


def crash(*_: object) -> None:
    segfault()


def block(*_: object) -> None:
    threading.Event().wait()  # never returns: a database connect that hangs


ACTIONS = {
    "raise": raise_error,
    "sys.exit": exit_now,
    "os._exit": hard_exit,
    "segfault": crash,
    "block": block,
}


class FailsToPickle:
    """Runs ``action`` in whichever process pickles it."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __reduce__(self) -> Any:
        ACTIONS[self.action]()
        raise AssertionError("unreachable")


class FailsToUnpickle:
    """Pickles fine; runs ``action`` in whichever process unpickles it."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __reduce__(self) -> Any:
        return ACTIONS[self.action], (self.action,)


class UnpicklableError(Exception):
    """An exception carrying something that cannot be pickled."""

    def __init__(self) -> None:
        super().__init__("has a lock")
        self.lock = __import__("threading").Lock()


class UnreconstructableError(Exception):
    """Pickles, but cannot be rebuilt: ``__init__`` needs two arguments, ``args`` has one."""

    def __init__(self, a: object, b: object) -> None:
        super().__init__(a)


# -- functions that fail in a worker -------------------------------------------------------------


def identity(x: Any) -> Any:
    return x


def return_fails_to_pickle(action: str) -> FailsToPickle:
    return FailsToPickle(action)


def return_fails_to_unpickle(action: str) -> FailsToUnpickle:
    return FailsToUnpickle(action)


def raise_unpicklable(_: object) -> None:
    raise UnpicklableError()


def raise_unreconstructable(_: object) -> None:
    raise UnreconstructableError(1, 2)


def call_sys_exit(x: int) -> int:
    if x == 2:
        sys.exit(4)
    return x


def call_os_exit(x: int) -> int:
    if x == 2:
        os._exit(3)
    return x


def segfault_at(x: int) -> int:
    if x == 2:
        segfault()
    return x


def kill_self_at(x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return x
