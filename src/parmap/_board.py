"""The progress board: one slot per worker, written by the worker, read by the caller.

A slot holds four integers: the worker's pid, the start of the chunk it holds, the index of the
item it is running, and when it started that item (``time.monotonic_ns``). The worker writes
them with plain stores into shared memory through a memoryview (no lock, no message, about 40 ns
an item; a ctypes store costs twice that), so the caller can say which item a dead worker held
and which item has overrun ``timeout=`` without asking the worker anything. For the thread
backend the same layout lives in a plain list.

The index is a phase when negative: ``IDLE`` (between chunks), ``RECEIVING`` (unpickling a
chunk), ``RETURNING`` (pickling its results, marked only with ``timeout=``), ``INITIALIZING``
(running ``initializer=``) or ``STARTING``
(written by the caller before it starts the worker's process, replaced when the worker claims
the slot: a worker that dies meanwhile never ran anything of the call's).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, Protocol

__all__ = [
    "CHUNK",
    "IDLE",
    "INDEX",
    "INITIALIZING",
    "RECEIVING",
    "RETURNING",
    "STARTED",
    "STARTING",
    "TIMED_PHASES",
    "Board",
    "Cells",
    "SlotView",
]

IDLE = -1
RECEIVING = -2
INITIALIZING = -3
STARTING = -4
RETURNING = -5
#: The phases a ``timeout=`` bounds as it bounds an item: each stamps its start.
TIMED_PHASES = (RECEIVING, INITIALIZING, RETURNING)
# Offsets of a slot's cells from its base.
PID, CHUNK, INDEX, STARTED = range(4)
_WIDTH = 4


class Cells(Protocol):
    """What a worker stores into: a list, or a memoryview of the shared block."""

    def __getitem__(self, index: int, /) -> int: ...
    def __setitem__(self, index: int, value: int, /) -> None: ...


@dataclass(frozen=True)
class SlotView:
    slot: int
    pid: int
    chunk: int
    index: int
    started: float  # seconds, on the ``time.monotonic`` clock


class Board:
    """Shared per-worker slots; picklable while a process is being started (a ``RawArray``)."""

    def __init__(self, cells: Any, slots: int) -> None:
        self.cells = cells  # a RawArray("q") (picklable while a process starts), or a list
        self.slots = slots

    @classmethod
    def shared(cls, ctx: BaseContext, slots: int) -> Board:
        board = cls(ctx.RawArray("q", _WIDTH * slots), slots)
        board.clear()
        return board

    @classmethod
    def local(cls, slots: int) -> Board:
        board = cls([0] * (_WIDTH * slots), slots)
        board.clear()
        return board

    def writer(self) -> Cells:
        """The cells as a worker should store into them: a memoryview of a shared block."""
        if isinstance(self.cells, list):
            return self.cells
        return memoryview(self.cells).cast("B").cast("q")

    def clear(self) -> None:
        for slot in range(self.slots):
            self.cells[_WIDTH * slot : _WIDTH * slot + _WIDTH] = [0, IDLE, IDLE, 0]

    @staticmethod
    def base(slot: int) -> int:
        """Offset of a slot's cells; add ``PID``, ``CHUNK``, ``INDEX`` or ``STARTED``."""
        return _WIDTH * slot

    def starting(self, slot: int) -> None:
        """Mark a slot whose worker is being started (see ``STARTING``)."""
        base = _WIDTH * slot
        self.cells[base : base + _WIDTH] = [0, IDLE, STARTING, 0]

    def free(self, slot: int) -> None:
        """Mark a slot as no worker's (one that retired), for the next worker to claim."""
        base = _WIDTH * slot
        self.cells[base : base + _WIDTH] = [0, IDLE, IDLE, 0]

    def claim(self, slot: int, pid: int) -> None:
        base = _WIDTH * slot
        self.cells[base : base + _WIDTH] = [pid, IDLE, IDLE, 0]

    def view(self, slot: int) -> SlotView:
        base = _WIDTH * slot
        pid, chunk, index, started = self.cells[base : base + _WIDTH]
        return SlotView(slot, pid, chunk, index, started / 1e9)

    def __iter__(self) -> Iterator[SlotView]:
        return (self.view(slot) for slot in range(self.slots))
