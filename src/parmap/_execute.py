"""The item loop: a function over a chunk's items, as a ``for`` loop would run it.

Shared by worker processes (``_worker``) and the threads of this process that run chunks
(``_local``): it calls the function, appends the result and stores one number on the progress
board (two when ``timeout=`` is set): no lock, no message, no clock unless needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from itertools import starmap
from typing import Any

from ._board import IDLE, INDEX, STARTED, Cells
from ._errors import TaskTimeoutError

__all__ = ["execute", "not_arguments"]


def execute(
    fn: Callable[..., Any],
    star: bool,
    start: int,
    items: Iterable[Any],
    board: Cells | None,
    base: int,
    timeout: float | None,
) -> tuple[list[Any], BaseException | None]:
    """Run ``fn`` over ``items``; return the results and the exception that stopped them, if any.

    The failing item's index is ``start + len(results)``. With ``timeout`` each item's start
    is on the board, where the caller finds an item that never returns; an item that returns
    late is caught here, exactly, by the clock read that stamps the next item's start (the
    caller looks only every so often, and would miss an item that ended before it looked).
    """
    results: list[Any] = []
    calls = starmap(fn, items) if star else map(fn, items)
    try:
        if board is None:
            results.extend(calls)
            return results, None
        append = results.append
        at, when = base + INDEX, base + STARTED
        board[at] = start
        if timeout is not None:
            clock, limit = time.monotonic_ns, int(timeout * 1e9)
            board[when] = began = clock()
            for index, result in enumerate(calls, start + 1):
                now = clock()
                if now - began > limit:
                    late = index - 1
                    return results, TaskTimeoutError(f"item {late}", timeout=timeout, index=late)
                append(result)
                board[at] = index
                board[when] = began = now
        else:
            for index, result in enumerate(calls, start + 1):
                append(result)
                board[at] = index
        return results, None
    except BaseException as exc:  # the function's own exception, whatever it is
        if star:
            return results, not_arguments(exc, start + len(results)) or exc
        return results, exc
    finally:
        if board is not None:
            board[base + INDEX] = IDLE


def not_arguments(exc: BaseException, index: int, where: str = __file__) -> TypeError | None:
    """With ``star``: the error naming item ``index`` if ``exc`` says it was not a tuple of
    arguments (raised by the unpacking in the module ``where``, not inside the function), else
    None."""
    if not isinstance(exc, TypeError) or "iterable" not in str(exc):
        return None
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or tb.tb_frame.f_code.co_filename != where:
        return None  # raised inside the function
    return TypeError(f"item {index} is not a tuple of arguments ({exc})")
