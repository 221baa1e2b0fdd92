"""Chunks run in this process: the caller's thread (``"serial"``, ``"auto"``'s probe) or its
threads (``"thread"``, an executor of threads you pass), beside the API layer.

Nothing crosses a process boundary here: the item loop is ``_execute.execute`` (or, for the rest
of an input mapped in one go, ``run_rest``, a comprehension), exceptions are the function's own
(``SystemExit`` becomes ``TaskExitError``), and ``initializer=`` runs once per thread, its value
that thread's ``worker_state()``.
"""

from __future__ import annotations

import itertools
import operator
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ._errors import InitializerError, TaskExitError, note_item
from ._execute import not_arguments
from ._serialize import describe, name_of
from ._wire import Failure

__all__ = [
    "NO_STATE",
    "enter_local",
    "failure_from_local",
    "leave_local",
    "local_state",
    "run_rest",
]

#: What ``worker_state`` finds where no initializer ran.
NO_STATE: Any = object()
#: The state of a thread that runs chunks in a process parmap did not start (threads, caller).
_LOCAL = threading.local()


def local_state() -> Any:
    """This thread's initializer value, or ``NO_STATE``."""
    return getattr(_LOCAL, "state", NO_STATE)


def run_rest(fn: Callable[..., Any], star: bool, start: int, items: Iterator[Any]) -> list[Any]:
    """Map the rest of the input here, in one comprehension (CPython's fastest loop, about 10%
    ahead of ``list.extend(map(...))``). Exceptions propagate as from a loop, noted with their
    item (see ``note_item``); ``sys.exit()`` becomes ``TaskExitError``.

    The failing item is found from the iterator's length hint; an input without one (a
    generator, several iterables zipped) is counted as it is read instead, which costs a few
    percent on trivial functions only where the hint is missing.
    """
    before = operator.length_hint(items, -1)
    counted = None
    if before < 0:
        counted = itertools.count()
        items = map(operator.itemgetter(1), zip(counted, items, strict=False))
    try:
        if star:
            return [fn(*args) for args in items]
        return [fn(item) for item in items]
    except (Exception, SystemExit) as exc:
        if counted is not None:
            index = start + next(counted) - 1
        else:
            index = start + before - operator.length_hint(items, 0) - 1
        if isinstance(exc, SystemExit):
            raise failure_from_local(index, exc)[1] from exc
        unpacking = not_arguments(exc, index, __file__) if star else None
        if unpacking is not None:
            raise unpacking from exc
        note_item(exc, index)
        raise


def failure_from_local(index: int | None, exc: BaseException) -> Failure:
    """The exception to raise for ``exc`` raised in this process (threads, serial)."""
    where = -1 if index is None else index
    if isinstance(exc, SystemExit):
        what = "an item" if index is None else f"item {index}"
        error = TaskExitError(what, code=exc.code, index=index)
        error.__cause__ = exc
        return where, error
    return where, exc


def enter_local(
    states: dict[int, tuple[bool, Any]],
    initializer: Callable[..., object],
    initargs: tuple[Any, ...],
) -> Any:
    """In a thread that runs chunks here: run the initializer once for the call (``states``
    remembers it per thread), make its value this thread's ``worker_state``, and return
    the value that was there before. Raises ``InitializerError`` if it failed."""
    ident = threading.get_ident()
    if ident not in states:
        try:
            states[ident] = (True, initializer(*initargs))
        except BaseException as exc:
            states[ident] = (False, exc)
    ok, value = states[ident]
    if not ok:
        error = InitializerError(f"the initializer {name_of(initializer)} raised {describe(value)}")
        raise error from value
    before = getattr(_LOCAL, "state", NO_STATE)
    _LOCAL.state = value
    return before


def leave_local(before: Any) -> None:
    _LOCAL.state = before
