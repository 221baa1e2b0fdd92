"""``"auto"``: a policy above the backend line. Measure first, then pick the engine.

Parallelism costs: starting workers (nothing when warm workers are kept from an earlier call),
and, for every item, pickling it and its result in the caller, which no number of workers can
share. It pays only when the function costs clearly more than that per item. So the first
chunks run right here, in the caller, timed (their results are the call's first results), and
their items and results are pickled once more to time the shipping; then ``worth_it``
decides, once per call, which engine runs the rest: ``"serial"`` (this thread: ``pmap`` then
maps the rest in one comprehension, no chunks at all) or ``"process"``. The dispatch loop never
sees the decision change: ``Auto.probe`` runs before it and returns the engine.

Workers start only once the probe says they pay. (Feeding warm workers during the probe was
tried: it ships the function, a large closure included, even to calls that then stay here. The
caller computing as one of the workers was tried too: it cannot feed its workers while it runs
a long item, and lost badly on uneven items.) So the first call of a function with costly items
pays for its probe: one item on one core while the others wait, 16 items of 0.2 s on 2 cores
reach 1.75x where ``"process"`` reaches 1.95x (docs/performance.md). Overlapping the probe was
weighed and left: a worker cannot be forked from another thread while the probe runs the
function here (the child would inherit, held for good, any lock the function held at that
moment: a hang, and a DeprecationWarning from 3.12); a worker forked before the probe costs
every first call of every function a fork, 0.5 ms from a small caller but 3.7 ms holding
500 MB and 13.6 ms holding 2 GB (``benchmarks/fork_cost.py``), against 0.2 ms for a whole
small first call today; spawn or forkserver workers import the main module, which a script
without ``if __name__ == "__main__":`` cannot survive.

What a probe measures is remembered per function (weakly): a function found costly goes to
workers at once on its next call, so repeated calls lose no time probing (1.98x on the same
16 items). A function found cheap is probed again: its memory could only cost
parallelism, never save time.

A ``timeout=`` needs a worker that can be killed: such calls go to worker processes at once.
Running items in the caller means a function that crashes its process crashes the caller:
name ``backend="process"`` to isolate every item.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import time
import weakref
from collections.abc import Callable, Generator
from typing import Any

from ._chunking import ChunkSizer
from ._dispatch import Reader, noted
from ._errors import TaskPicklingError
from ._progress import Progress
from ._serialize import dumps
from .backends import Backend, Call, Chunk, Outcome
from .backends._serial import SerialBackend, run_in_caller

__all__ = ["Auto", "forget_costs", "worth_it"]

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


class Auto:
    """The ``"auto"`` policy for one call: ``probe`` runs the first chunks here and
    returns the engine for the rest (``decision`` names it)."""

    #: What a caller may ask of it, as of a backend: it can time out (by going to workers),
    #: pickles only once it has decided, and never runs items on several threads at once.
    timeouts = True
    pickles = False
    threaded = False
    recycles = True
    no_recycling = ""
    inherits = True

    def __init__(
        self, workers: int, start_method: str | None, total: int | None, threads: int | None
    ) -> None:
        self.workers = workers
        self._start_method = start_method
        self._total = total
        self._threads = threads
        #: ``"serial"`` or ``"process"`` once decided.
        self.decision: str | None = None
        #: The engine that runs the rest, once decided (what ``apmap`` interrupts).
        self.engine: Backend | None = None
        self._probed = 0
        self._seconds = 0.0
        self._ship = 0.0
        self._pays_per_item = False

    def __repr__(self) -> str:
        return "backend='auto'"

    @staticmethod
    def largest_chunk(call: Call) -> int | None:
        """As the ``"process"`` engine's, where such maps go (see ``Backend.largest_chunk``)."""
        return call.max_tasks

    def probe(
        self, call: Call, reader: Reader, sizer: ChunkSizer, progress: Progress | None
    ) -> Generator[list[Any], None, Backend]:
        """Run chunks here, one at a time, each sized by the last, until the cost is known;
        yield their results (raise the first failure, as the loop would); return the engine
        that runs the rest."""
        if self._isolate(call) or self._known_costly(call.fn):
            return self.to_workers(call)
        while self.decision is None:
            position = reader.position
            # Once each item is known to pay for shipping it, one more at a time: a dear item
            # run here is time the workers could have shared.
            size = 1 if self._pays_per_item else sizer.next_size(position, spread=False)
            items = reader.take(size)
            if not items:
                return self._here()
            chunk = Chunk(position, items)
            outcome = run_in_caller(call, chunk)
            if outcome.failure is not None:
                yield outcome.results
                raise noted(outcome.failure)
            sizer.observe(len(items), outcome.seconds)
            if progress is not None:
                progress.advance(len(items))
            self._measure(call, chunk, outcome)
            yield outcome.results
        return self._here() if self.decision == "serial" else self.to_workers(call)

    @staticmethod
    def _isolate(call: Call) -> bool:
        """Whether the call asks for what only a worker process gives: a timeout that kills,
        a map that survives a crash (``retries``, ``errors="return"``), workers replaced."""
        return (
            call.timeout is not None
            or call.keep_going
            or call.max_tasks is not None
            or call.max_memory is not None
        )

    def _here(self) -> Backend:
        self.decision = "serial"
        self.engine = SerialBackend()
        return self.engine

    def to_workers(self, call: Call) -> Backend:
        """Worker processes, or the caller if the function will not pickle."""
        if not self._isolate(call):
            try:
                call.fn_bytes  # noqa: B018 - pickled now, once, for the workers
            except TaskPicklingError:
                return self._here()
        self.decision = "process"
        from .backends._process import ProcessBackend  # not at import: ``import parmap`` is light

        self.engine = ProcessBackend(self.workers, self._start_method, threads=self._threads)
        return self.engine

    def _known_costly(self, fn: Callable[..., Any]) -> bool:
        try:
            measured = _MEASURED.get(fn)
        except TypeError:  # not weakly referenceable
            return False
        if measured is None:
            return False
        return worth_it(*measured, self.workers, self._total, self._start_cost())

    def _start_cost(self) -> float:
        process = sys.modules.get("parmap.backends._process")  # no module: nothing is warm
        method = multiprocessing.get_context(self._start_method).get_start_method()
        warm = process is not None and process.WARM.has((method, self.workers, self._threads))
        return WARM_START if warm else COLD_START

    def _measure(self, call: Call, chunk: Chunk, outcome: Outcome) -> None:
        """Take in one chunk run here; set ``decision`` once the cost is known."""
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
        per_item, ship = self._seconds / n, self._ship / n + PER_ITEM_OVERHEAD
        with contextlib.suppress(TypeError):  # not weakly referenceable: not remembered
            _MEASURED[call.fn] = (per_item, ship)
        if worth_it(per_item, ship, self.workers, remaining, self._start_cost()):
            self.decision = "process"
        elif not worth_it(per_item, ship, self.workers, None, 0.0):
            self.decision = "serial"  # cheaper per item than shipping it: it stays here
        else:
            self._pays_per_item = True
        # Else each item pays for shipping it, but the rest, as estimated so far, would not pay
        # for starting workers: look again after the next chunk (twice as big). Uneven items
        # make that estimate wrong in one direction only: the first item of the bench's
        # "unbalanced" workload is its cheapest (2 ms against 200 ms), and deciding then kept
        # all 40 in the caller (0.95 of the loop's speed, Pool.map 1.83); the chunks run here
        # meanwhile are the call's own work, so looking again costs nothing.
