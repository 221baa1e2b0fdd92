"""The messages between the caller and a worker, both ways: named, typed and frozen, encoded
and decoded here and nowhere else.

::

    caller ───────────────────────────────────────────────► worker ("process" backend pipes)
      Spec     the call: function (with its initializer), star, timeout, memory limit
      Work     a chunk: its start index, the pickled items, out-of-band buffers after it
      RELEASE  the call is over: drop the function (a warm worker waits for the next)
      QUIT     end

    worker ───────────────────────────────────────────────► caller (every process engine)
      Done     the results, the seconds they took, whether the worker is above its memory
      Raised   the function raised at ``index``: the pickled exception, the results before it
      Exited   the function called ``sys.exit(code)`` at ``index``
      Broken   something else failed at ``index``: ``phase`` says what (the function or items
               would not unpickle, the initializer failed, a result would not pickle)

On the pipes, ``Spec``/``Work`` are a one-byte tag and a fixed ``struct`` header before their
bytes (the worker reads them without unpickling anything it does not need); a reply is a pickled
tuple, the class's kind first (a tuple pickles smaller and faster than an object, and replies
cross once per chunk). ``Reply.failure()`` turns a reply into what the caller raises: the
function's own exception with the worker's traceback as its ``__cause__``, or parmap's error
naming the item. A new worker-side option is a field of ``Spec``: it travels by itself.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, ClassVar

from ._errors import (
    InitializerError,
    RemoteTraceback,
    ResultPicklingError,
    ResultUnpicklingError,
    SerializationError,
    TaskExitError,
    TaskUnpicklingError,
)
from ._serialize import describe, dumps, loads

__all__ = [
    "INHERITED",
    "QUIT",
    "RELEASE",
    "Broken",
    "Done",
    "Exited",
    "Failure",
    "Raised",
    "Reply",
    "Spec",
    "Work",
    "decode_reply",
    "read_order",
    "receive_buffers",
    "send_framed",
    "split_framed",
]

#: A failure at an item: its index and the exception to raise for it.
Failure = tuple[int, BaseException]

#: Stands for ``initargs`` inside ``Spec.fn_bytes`` where they travel by inheritance instead:
#: passed as the worker process starts, as multiprocessing passes a ``Lock`` or a ``Value``,
#: which cannot be pickled at any other time (see ``Call.fn_bytes``).
INHERITED = "<parmap: initargs passed as the worker started>"

_TAG_SPEC = b"F"
_TAG_WORK = b"C"
QUIT = b"Q"
RELEASE = b"R"
_SPEC = struct.Struct("<?dq")  # star, timeout (0: none), memory limit (0: none)
_START = struct.Struct("<q")


# -- caller to worker ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What a worker needs to run a call's chunks."""

    #: The function, its initializer and initargs, cloudpickled once per call.
    fn_bytes: bytes = field(repr=False)
    star: bool
    timeout: float | None = None
    #: Resident bytes above which the worker stops a chunk and asks to be replaced.
    memory: int | None = None

    def encode(self) -> bytes:
        header = _SPEC.pack(self.star, self.timeout or 0.0, self.memory or 0)
        return _TAG_SPEC + header + self.fn_bytes


@dataclass(frozen=True)
class Work:
    """A chunk for a worker: its first item's index, the items pickled, and the large arrays
    among them (pickle protocol 5), sent after it as messages of their own."""

    start: int
    payload: bytes | memoryview = field(repr=False)
    buffers: Sequence[Any] = field(default=(), repr=False)

    def encode(self) -> bytes:
        return _TAG_WORK + _START.pack(self.start) + frame(self.payload, self.buffers)


def read_order(message: bytes, conn: Connection) -> Spec | Work | bytes:
    """A message the worker received: a ``Spec``, a ``Work`` (its buffers read from ``conn``),
    or ``RELEASE`` / ``QUIT`` (anything else is taken as ``QUIT``)."""
    tag = message[:1]
    if tag == _TAG_WORK:
        (start,) = _START.unpack_from(message, 1)
        payload, sizes = split_framed(memoryview(message)[1 + _START.size :])
        return Work(start, payload, receive_buffers(conn, sizes))
    if tag == _TAG_SPEC:
        star, timeout, memory = _SPEC.unpack_from(message, 1)
        fn_bytes = message[1 + _SPEC.size :]
        return Spec(fn_bytes, bool(star), timeout if timeout > 0 else None, memory or None)
    return RELEASE if tag == RELEASE else QUIT


# -- worker to caller ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """Every item of the chunk ran."""

    kind: ClassVar[str] = "ok"
    results: list[Any]
    seconds: float
    #: The worker is above its memory limit: replace it before its next chunk. (With it, a
    #: chunk may stop early: fewer results than items, the rest to run elsewhere.)
    spent: bool = False

    def encode(self, out: list[pickle.PickleBuffer] | None = None) -> bytes:
        shape = (self.kind, self.results, self.seconds, True) if self.spent else (
            self.kind, self.results, self.seconds)  # fmt: skip
        return dumps(shape, out)

    def failure(self, start: int, count: int) -> Failure | None:
        return None


@dataclass(frozen=True)
class Raised:
    """The function raised at item ``index``; ``partial``: the results before it."""

    kind: ClassVar[str] = "raised"
    index: int
    exception: bytes = field(repr=False)
    partial: list[Any] = field(repr=False)
    traceback: str = field(repr=False)
    #: As ``Done.spent``: the worker is above its memory limit.
    spent: bool = False

    def encode(self, out: list[pickle.PickleBuffer] | None = None) -> bytes:
        shape = (self.kind, self.index, self.exception, self.partial, self.traceback)
        return dumps((*shape, True) if self.spent else shape)

    def failure(self, start: int, count: int) -> Failure:
        error: BaseException
        try:
            error = loads(self.exception)
        except (Exception, SystemExit) as exc:
            error = ResultUnpicklingError(
                f"the exception raised by item {self.index} could not be unpickled: "
                f"{describe(exc)}",
                index=self.index,
            )
        error.__cause__ = RemoteTraceback(self.traceback)
        return self.index, error


@dataclass(frozen=True)
class Exited:
    """The function called ``sys.exit(code)`` at item ``index``."""

    kind: ClassVar[str] = "exit"
    index: int
    code: object
    partial: list[Any] = field(repr=False)
    traceback: str = field(repr=False)
    #: As ``Done.spent``: the worker is above its memory limit.
    spent: bool = False

    def encode(self, out: list[pickle.PickleBuffer] | None = None) -> bytes:
        shape = (self.kind, self.index, self.code, self.partial, self.traceback)
        return dumps((*shape, True) if self.spent else shape)

    def failure(self, start: int, count: int) -> Failure:
        error = TaskExitError(f"item {self.index}", code=self.code, index=self.index)
        error.__cause__ = RemoteTraceback(self.traceback)
        return self.index, error


@dataclass(frozen=True)
class Broken:
    """Something other than the function failed at item ``index``; ``phase``: what
    (``"function-unpickle"``, ``"task-unpickle"``, ``"initializer"``, ``"result-pickle"``)."""

    kind: ClassVar[str] = "error"
    index: int
    phase: str
    what: str
    traceback: str = field(repr=False)
    partial: list[Any] = field(default_factory=list, repr=False)

    def encode(self, out: list[pickle.PickleBuffer] | None = None) -> bytes:
        detail = (self.phase, self.what)
        return dumps((self.kind, self.index, detail, self.partial, self.traceback))

    def failure(self, start: int, count: int) -> Failure:
        error = _broken_error(self.phase, self.what, index=self.index, items=_items(start, count))
        error.__cause__ = RemoteTraceback(self.traceback)
        return self.index, error


Reply = Done | Raised | Exited | Broken


def decode_reply(
    data: bytes | memoryview, start: int, count: int, buffers: list[bytearray] | None = None
) -> Reply | Failure:
    """A reply, read in the caller; a ``Failure`` where it cannot even be unpickled."""
    try:
        shape = loads(data, buffers)
    except (Exception, SystemExit) as exc:
        error = ResultUnpicklingError(
            f"the results of {_items(start, count)} could not be unpickled: {describe(exc)}",
            index=start,
        )
        error.__cause__ = exc
        return start, error
    kind = shape[0]
    if kind == Done.kind:
        return Done(shape[1], shape[2], len(shape) > 3)
    _, index, detail, partial, tb, *rest = shape
    if kind == Raised.kind:
        return Raised(index, detail, partial, tb, bool(rest))
    if kind == Exited.kind:
        return Exited(index, detail, partial, tb, bool(rest))
    phase, what = detail
    return Broken(index, phase, what, tb, partial)


def _items(start: int, count: int) -> str:
    return f"items {start}..{start + count - 1}" if count > 1 else f"item {start}"


def _broken_error(
    phase: str, what: str, *, index: int, items: str
) -> SerializationError | InitializerError:
    if phase == "initializer":
        return InitializerError(what, index=index)
    if phase == "function-unpickle":  # no item's own failure: the call's (index None)
        return TaskUnpicklingError(f"the function could not be unpickled in the worker: {what}")
    if phase == "task-unpickle":
        return TaskUnpicklingError(
            f"{items} could not be unpickled in the worker: {what}", index=index
        )
    return ResultPicklingError(what, index=index)


# -- framing -------------------------------------------------------------------------------------

# Out-of-band buffers on a pipe: a message holds the buffer count, their sizes and the pickle;
# each buffer follows as a message of its own, written straight from the array's memory and
# read straight into the memory the array is then built on (no copies through pickle streams).
# The receiver knows each size before reading, so each buffer is writable.
_COUNT = struct.Struct("<I")


def frame(main: bytes | memoryview, buffers: Sequence[Any]) -> bytes:
    sizes = [memoryview(b).nbytes for b in buffers]
    return _COUNT.pack(len(sizes)) + struct.pack(f"<{len(sizes)}Q", *sizes) + bytes(main)


def split_framed(message: memoryview) -> tuple[memoryview, list[int]]:
    """A framed message's pickle, and the sizes of the buffers that follow it."""
    (count,) = _COUNT.unpack_from(message, 0)
    sizes = list(struct.unpack_from(f"<{count}Q", message, _COUNT.size))
    return message[_COUNT.size + 8 * count :], sizes


def send_framed(conn: Connection, main: bytes, buffers: Sequence[pickle.PickleBuffer]) -> None:
    conn.send_bytes(frame(main, buffers))
    for buffer in buffers:
        conn.send_bytes(buffer.raw())


def send_work(conn: Connection, work: Work) -> None:
    """A chunk to a worker: its message, then each out-of-band buffer."""
    conn.send_bytes(work.encode())
    for buffer in work.buffers:
        conn.send_bytes(buffer.raw())


def receive_buffers(conn: Connection, sizes: Sequence[int]) -> list[bytearray]:
    buffers = []
    for size in sizes:
        buffer = bytearray(size)
        conn.recv_bytes_into(buffer)
        buffers.append(buffer)
    return buffers
