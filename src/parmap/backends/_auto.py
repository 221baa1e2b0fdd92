"""``"auto"``: measure first, then run in the calling thread or with worker processes too.

Parallelism costs: starting workers (nothing when warm workers are kept from an earlier call),
and, for every item, pickling it and its result in the caller, which no number of workers can
share. It pays only when the function costs clearly more than that per item. So the first
chunks run right here, timed, and their items and results are pickled once more to time the
shipping; then :func:`worth_it` decides, once per call. Work that is too cheap per item, or too
little in all to pay for starting workers, keeps running here (and ``pmap`` then maps the rest
of the input in one go, with no chunking at all). Otherwise ``workers - 1`` worker processes
start and the calling thread keeps computing as the last worker: it runs a chunk whenever the
workers have all the work they can hold, so the machine's cores are all busy and none is
oversubscribed, and the time spent probing is not lost.

While it probes, warm workers kept from an earlier call get the chunks queued behind the probe
(no process starts for that); cold workers start only once the probe says they pay.

A ``timeout=`` needs a worker that can be killed: such calls go to worker processes at once,
without the caller computing. Running items in the caller means a function that crashes its
process crashes the caller: name ``backend="process"`` to isolate every item.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import deque

from .._serialize import dumps
from ._base import Backend, Call, Chunk, Outcome
from ._process import WARM, ProcessBackend
from ._serial import run_in_caller

__all__ = ["AutoBackend", "worth_it"]

#: Measure at least this much work in the caller before deciding.
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

    def __init__(self, workers: int, start_method: str | None, total: int | None) -> None:
        self.workers = workers
        self.pickles = False  # decided later; the function is pickled then, if needed
        self._start_method = start_method
        self._total = total
        self._call: Call | None = None
        self._queue: deque[Chunk] = deque()  # chunks the caller will run
        self._pool: ProcessBackend | None = None  # workers - 1 processes, once they pay
        self._probed = 0
        self._seconds = 0.0
        self._ship = 0.0
        #: The decision: None while probing, then "serial" or "process".
        self.decision: str | None = None

    @property
    def inline(self) -> bool:  # type: ignore[override]
        return self.decision == "serial" and self._busy_pool() == 0

    def start(self, call: Call) -> None:
        self._call = call
        self._pool = None
        self.decision = None
        self._probed, self._seconds, self._ship = 0, 0.0, 0.0
        if call.timeout is not None:
            self.decision = "process"
            self._open(self.workers)

    def submit(self, chunk: Chunk) -> None:
        timed = self._call is not None and self._call.timeout is not None
        if self._pool is not None and (timed or (self.decision is None and self._probed == 0)):
            self._pool.submit(chunk)  # all work with a timeout; warm workers while probing
        else:
            self._queue.append(chunk)

    def wait(self) -> list[Outcome]:
        assert self._call is not None
        if self.decision is None and self._queue:
            return self._probe(self._queue.popleft())
        if self._pool is None or (self.decision == "serial" and self._queue):
            return [self._run_here(self._queue.popleft())]
        if self._call.timeout is not None or self.decision != "process":
            return self._pool.wait()  # or: the warm workers still hold chunks from the probe
        while self._queue and self._pool.idle_capacity() > 0:
            self._pool.submit(self._queue.popleft())
        ready = self._pool.poll()
        if ready or not self._queue:
            return ready or self._pool.wait()
        # The workers hold all they can: the caller computes the next chunk itself.
        return [self._run_here(self._queue.popleft()), *self._pool.poll()]

    def stop(self, *, abort: bool) -> None:
        self._queue.clear()
        if self._pool is not None:
            self._pool.stop(abort=abort)
        self._pool = None

    def _run_here(self, chunk: Chunk) -> Outcome:
        assert self._call is not None
        return run_in_caller(self._call, chunk)

    def _busy_pool(self) -> int:
        return 0 if self._pool is None else self._pool.outstanding()

    def _open(self, workers: int) -> None:
        assert self._call is not None
        self._pool = ProcessBackend(workers, self._start_method)
        self._pool.start(self._call)

    def _probe(self, chunk: Chunk) -> list[Outcome]:
        if self._probed == 0 and WARM.has(self._key()):
            # Warm workers cost nothing to use: let them run what is queued meanwhile.
            self._open(self.workers - 1)
            assert self._pool is not None
            while self._queue:
                self._pool.submit(self._queue.popleft())
        outcome = self._run_here(chunk)
        if outcome.failure is None:
            self._measure(chunk, outcome)
        return [outcome] if self._pool is None else [outcome, *self._pool.poll()]

    def _key(self) -> tuple[str, int]:
        method = multiprocessing.get_context(self._start_method).get_start_method()
        return method, self.workers - 1

    def _measure(self, chunk: Chunk, outcome: Outcome) -> None:
        began = time.perf_counter()
        dumps(chunk.items)
        dumps(outcome.results)
        self._ship += time.perf_counter() - began
        self._probed += len(chunk.items)
        self._seconds += outcome.seconds
        if self._seconds < PROBE_SECONDS:
            return
        remaining = None if self._total is None else self._total - self._probed
        start_cost = WARM_START if self._pool is not None else COLD_START
        n = self._probed
        ship = self._ship / n + PER_ITEM_OVERHEAD
        if worth_it(self._seconds / n, ship, self.workers, remaining, start_cost):
            self.decision = "process"
            if self._pool is None:
                self._open(self.workers - 1)
        else:
            self.decision = "serial"
