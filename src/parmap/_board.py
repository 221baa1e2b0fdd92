"""The progress board: one slot per worker, written by the worker, read by the caller.

A slot holds four numbers: the worker's pid, the start of the chunk it holds, the index of the
item it is running, and when it started that item. The worker writes them with plain stores
into shared memory (no lock, no message, about 0.1 us an item), so the caller can say which item
a dead worker held and which item has overrun ``timeout=`` without asking the worker anything.
For the thread backend the same layout lives in a plain list.

The index is a phase when negative: ``IDLE`` (between chunks or returning results),
``RECEIVING`` (unpickling a chunk) or ``INITIALIZING`` (running ``initializer=``).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableSequence
from dataclasses import dataclass
from multiprocessing.context import BaseContext

__all__ = ["CHUNK", "IDLE", "INDEX", "INITIALIZING", "RECEIVING", "STARTED", "Board", "SlotView"]

IDLE = -1
RECEIVING = -2
INITIALIZING = -3
# Offsets of a slot's cells from its base.
PID, CHUNK, INDEX, STARTED = range(4)
_WIDTH = 4


@dataclass(frozen=True)
class SlotView:
    slot: int
    pid: int
    chunk: int
    index: int
    started: float


class Board:
    """Shared per-worker slots; picklable while a process is being started (a ``RawArray``)."""

    def __init__(self, cells: MutableSequence[float], slots: int) -> None:
        self.cells = cells
        self.slots = slots

    @classmethod
    def shared(cls, ctx: BaseContext, slots: int) -> Board:
        cells = ctx.RawArray("d", _WIDTH * slots)
        board = cls(cells, slots)
        board.clear()
        return board

    @classmethod
    def local(cls, slots: int) -> Board:
        board = cls([0.0] * (_WIDTH * slots), slots)
        board.clear()
        return board

    def clear(self) -> None:
        for slot in range(self.slots):
            self.cells[_WIDTH * slot : _WIDTH * slot + _WIDTH] = [0.0, IDLE, IDLE, 0.0]

    @staticmethod
    def base(slot: int) -> int:
        """Offset of a slot's cells; add ``PID``, ``CHUNK``, ``INDEX`` or ``STARTED``."""
        return _WIDTH * slot

    def claim(self, slot: int, pid: int) -> None:
        base = _WIDTH * slot
        self.cells[base : base + _WIDTH] = [float(pid), IDLE, IDLE, 0.0]

    def view(self, slot: int) -> SlotView:
        base = _WIDTH * slot
        pid, chunk, index, started = self.cells[base : base + _WIDTH]
        return SlotView(slot, int(pid), int(chunk), int(index), started)

    def __iter__(self) -> Iterator[SlotView]:
        return (self.view(slot) for slot in range(self.slots))
