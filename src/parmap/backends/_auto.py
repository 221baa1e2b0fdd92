"""``"auto"``: measure first, then run in the calling thread or on worker processes.

Parallelism costs: starting workers (nothing when warm workers are kept from an earlier call),
and, for every item, pickling it and its result in the caller, which no number of workers can
share. It pays only when the function costs clearly more than that per item. So the first
chunks run right here, timed, and their items and results are pickled once more to time the
shipping; then ``worth_it`` decides, once per call. Work that is too cheap per item, or too
little in all to pay for starting workers, keeps running here (and ``pmap`` then maps the rest
of the input in one go, with no chunking at all). Otherwise the rest goes to a ``"process"``
backend. (The caller computing as one of the workers was tried: it cannot feed its workers while
it runs a long item, and lost badly on uneven items.)

Workers start only once the probe says they pay. (Feeding warm workers during the probe was
tried: it ships the function, a large closure included, even to calls that then stay here.)
What a probe measures is remembered per function (weakly): a function found costly goes to
workers at once on its next call, so repeated calls lose no time probing. A function found
cheap is probed again: its memory could only cost parallelism, never save time.

A ``timeout=`` needs a worker that can be killed: such calls go to worker processes at once.
Running items in the caller means a function that crashes its
process crashes the caller: name ``backend="process"`` to isolate every item.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from .._errors import TaskPicklingError
from .._serialize import dumps
from ._base import Backend, Call, Chunk, Outcome
from ._process import WARM, ProcessBackend
from ._serial import run_in_caller

__all__ = ["AutoBackend", "forget_costs", "worth_it"]

#: Measure at least this much work in the caller before deciding (unless the rest of a known
#: input would take less than this at the rate measured: then it runs here at once).
PROBE_SECONDS = 0.0005
#: Parallel must beat the loop by this factor: the caller's cost per item of shipping it,
#: times this, must stay below what sharing the work saves per item.
MARGIN = 1.5
#: What the caller spends per item beyond pickling when workers run it (pipe writes and reads,
#: reordering): from the "trivial" bench workload, rounded up.
PER_ITEM_OVERHEAD = 2e-7
#: What starting workers costs (fork; spawn costs more), and when warm workers wait.
COLD_START = 0.05
WARM_START = 0.002


#: Seconds per item and per item shipped, as last measured, by function.
_MEASURED: weakref.WeakKeyDictionary[Callable[..., Any], tuple[float, float]] = (
    weakref.WeakKeyDictionary()
)


def forget_costs() -> None:
    """Forget every function's measured cost (the bench measures first calls with it)."""
    _MEASURED.clear()


def worth_it(
    per_item: float, ship: float, workers: int, remaining: int | None, start_cost: float
) -> bool:
    """Whether ``workers`` CPUs beat the loop on the items left.

    ``per_item``: seconds the function takes per item; ``ship``: seconds the caller spends per
    item on getting it to a worker and its result back; ``remaining``: items left, if known.
    """
    if workers < 2:
        return False
    saved = per_item * (1 - 1 / workers)  # per item, by sharing the work
    if saved <= MARGIN * ship:
        return False
    return remaining is None or remaining * (saved - ship) > start_cost


class AutoBackend(Backend):
    name = "auto"

    def __init__(
        self,
        workers: int,
        start_method: str | None,
        total: int | None,
        *,
        threads: int | None = None,
    ) -> None:
        self.workers = workers
        self._threads = threads
        self.pickles = False  # decided later; the function is pickled then, if needed
        self._start_method = start_method
        self._total = total
        self._call: Call | None = None
        self._queue: deque[Chunk] = deque()  # chunks the caller will run
        self._pool: ProcessBackend | None = None  # the worker processes, once they pay
        self._probed = 0
        self._seconds = 0.0
        self._ship = 0.0
        #: The decision: None while probing, then "serial" or "process".
        self.decision: str | None = None

    @property
    def inline(self) -> bool:  # type: ignore[override]
        return self.decision == "serial"

    @property
    def sequential(self) -> bool:  # type: ignore[override]
        return self.decision != "process"

    def start(self, call: Call) -> None:
        self._call = call
        self._pool = None
        self.decision = None
        self._probed, self._seconds, self._ship = 0, 0.0, 0.0
        if call.timeout is not None:
            self.decision = "process"
            self._pool = ProcessBackend(self.workers, self._start_method, threads=self._threads)
            self._pool.start(call)  # a function that will not pickle: raised, as it must be
        elif self._known_costly(call.fn):
            self._go_parallel()

    def _known_costly(self, fn: Callable[..., Any]) -> bool:
        try:
            measured = _MEASURED.get(fn)
        except TypeError:  # not weakly referenceable
            return False
        if measured is None:
            return False
        return worth_it(*measured, self.workers, self._total, self._start_cost())

    def _start_cost(self) -> float:
        return WARM_START if WARM.has(self._key()) else COLD_START

    def submit(self, chunk: Chunk) -> None:
        if self._pool is not None and self._call is not None and self._call.timeout is not None:
            self._pool.submit(chunk)  # with a timeout, workers run everything
        else:
            self._queue.append(chunk)

    def wait(self) -> list[Outcome]:
        assert self._call is not None
        if self.decision is None:
            return self._probe(self._queue.popleft())
        if self._pool is None:
            return [self._run_here(self._queue.popleft())]
        while self._queue:  # the chunks queued while probing
            self._pool.submit(self._queue.popleft())
        return self._pool.wait()

    def stop(self, *, abort: bool) -> None:
        self._queue.clear()
        if self._pool is not None:
            self._pool.stop(abort=abort)
        self._pool = None

    def _run_here(self, chunk: Chunk) -> Outcome:
        assert self._call is not None
        return run_in_caller(self._call, chunk)

    def _go_parallel(self) -> None:
        """Hand the work to worker processes; stay here if the function will not pickle."""
        assert self._call is not None
        pool = ProcessBackend(self.workers, self._start_method, threads=self._threads)
        try:
            pool.start(self._call)
        except TaskPicklingError:
            pool.stop(abort=True)
            self.decision = "serial"
            return
        self._pool, self.decision = pool, "process"

    def _probe(self, chunk: Chunk) -> list[Outcome]:
        outcome = self._run_here(chunk)
        if outcome.failure is None:
            self._measure(chunk, outcome)
        return [outcome]

    def _key(self) -> tuple[str, int, int | None]:
        method = multiprocessing.get_context(self._start_method).get_start_method()
        return method, self.workers, self._threads

    def _measure(self, chunk: Chunk, outcome: Outcome) -> None:
        began = time.perf_counter()
        try:
            dumps(chunk.items)
            dumps(outcome.results)
        except (Exception, SystemExit):  # what cannot travel stays here
            self.decision = "serial"
            return
        self._ship += time.perf_counter() - began
        self._probed += len(chunk.items)
        self._seconds += outcome.seconds
        n = self._probed
        remaining = None if self._total is None else self._total - self._probed
        if remaining is not None and remaining * self._seconds / n < PROBE_SECONDS:
            self.decision = "serial"  # the rest takes less than probing on would: run it here
            return
        if self._seconds < PROBE_SECONDS:
            return
        ship = self._ship / n + PER_ITEM_OVERHEAD
        assert self._call is not None
        with contextlib.suppress(TypeError):  # not weakly referenceable: not remembered
            _MEASURED[self._call.fn] = (self._seconds / n, ship)
        if worth_it(self._seconds / n, ship, self.workers, remaining, self._start_cost()):
            self._go_parallel()
        else:
            self.decision = "serial"
