"""Pickling between processes, with every failure turned into an error that names what failed.

The callable is pickled once per call with cloudpickle, so lambdas, closures, ``partial`` objects,
bound methods and functions defined in ``__main__`` reach every start method. Data (items and
results) goes through the standard pickler, which is several times faster; only when it refuses
something (a lambda passed as an item, say) does cloudpickle get a second try. Both produce bytes
that ``pickle.loads`` reads.

A ``__reduce__`` that calls ``sys.exit()`` raises ``SystemExit`` inside the pickler; that is a
pickling failure like any other here, not a reason for the caller to exit.

cloudpickle writes the code of a function pickled by value (one defined in ``__main__``, a lambda,
a closure) with its file name replaced by ``"<dynamic-code>"``, to make its pickles
deterministic; a worker's traceback then names no file and shows no source line. The function
pickler here sends code objects through ``marshal`` instead, which keeps the file name (and the
line table), so the worker's traceback reads as the caller's would. A worker always runs the
caller's Python version, which is what ``marshal`` needs (cloudpickle's code pickles need it too).
"""

from __future__ import annotations

import io
import marshal
import pickle
import types
from collections import ChainMap
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import cloudpickle

from ._errors import SerializationError

__all__ = ["PROTOCOL", "describe", "dumps", "dumps_items", "dumps_task", "loads"]

PROTOCOL = pickle.HIGHEST_PROTOCOL

#: What a pickler may raise for an object it cannot handle (``SystemExit`` included, see above).
_FAILURES = (Exception, SystemExit)


def describe(exc: BaseException) -> str:
    """``ValueError('x')`` -> ``"ValueError: x"``, for messages."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def name_of(fn: object) -> str:
    """A callable's qualified name, for messages (its repr where it has none)."""
    return getattr(fn, "__qualname__", None) or repr(fn)


def dumps(obj: object, buffers: list[pickle.PickleBuffer] | None = None) -> bytes:
    """Pickle data: the standard pickler first, cloudpickle for what it refuses.

    With ``buffers``, large contiguous buffers (numpy arrays) are not copied into the stream
    but appended there, out of band (pickle protocol 5), to travel on their own.
    """
    callback = None if buffers is None else buffers.append
    try:
        return pickle.dumps(obj, PROTOCOL, buffer_callback=callback)
    except _FAILURES:
        if buffers is not None:
            buffers.clear()
        data: bytes = cloudpickle.dumps(obj, PROTOCOL, buffer_callback=callback)
        return data


def loads(data: bytes | memoryview, buffers: list[bytearray] | None = None) -> Any:
    """Unpickle, with the out-of-band buffers ``dumps`` set aside, if any."""
    return pickle.loads(data, buffers=buffers)


def _reduce_code(code: types.CodeType) -> tuple[Any, tuple[bytes]]:
    return marshal.loads, (marshal.dumps(code),)


class _FunctionPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, with code objects that keep their file name (see the module docstring)."""

    dispatch_table: ClassVar[ChainMap[Any, Any]] = ChainMap(
        {types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table
    )


def dumps_function(obj: object) -> bytes:
    """cloudpickle ``obj`` (a function, or a tuple holding functions), file names kept."""
    out = io.BytesIO()
    _FunctionPickler(out, PROTOCOL).dump(obj)
    return out.getvalue()


def dumps_task(
    fn: Callable[..., object],
    initializer: Callable[..., object] | None,
    initargs: object,
    error: type[SerializationError],
) -> bytes:
    """Pickle what a worker installs once per call: the function, the initializer and its
    arguments, each named if it is the one that fails."""
    try:
        data = dumps_function((fn, initializer, initargs))
    except _FAILURES as exc:
        for part, what in ((fn, "the function"), (initializer, "the initializer"),
                           (initargs, "initargs")):  # fmt: skip
            try:
                dumps_function(part)
            except _FAILURES:
                raise error(f"{what} {part!r} could not be pickled: {describe(exc)}") from exc
        raise error(f"the function could not be pickled: {describe(exc)}") from exc
    return data


def dumps_items(
    items: Sequence[Any],
    start: int,
    what: str,
    error: type[SerializationError],
    buffers: list[pickle.PickleBuffer] | None = None,
) -> bytes:
    """Pickle a chunk; if that fails, find the first item that does and name it in ``error``."""
    try:
        return dumps(items, buffers)
    except _FAILURES as exc:
        first: BaseException = exc
    for offset, item in enumerate(items):
        try:
            dumps(item)
        except _FAILURES as exc:
            raise error(
                f"{what} {start + offset} could not be pickled: {describe(exc)}",
                index=start + offset,
            ) from exc
    # Each item pickles alone but not together (shared state raising on a second visit).
    raise error(
        f"{what}s {start}..{start + len(items) - 1} could not be pickled together: "
        f"{describe(first)}",
        index=start,
    ) from first
