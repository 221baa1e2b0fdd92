"""How many items go in the next chunk.

With ``chunksize=`` given, that many, always. Otherwise the sizer learns: the first chunks hold
one item each (nothing is known yet, and a slow function must not be bunched onto one worker);
each finished chunk reports how long the worker spent on it; a chunk is at most twice the
largest that has finished (joblib grows its batches the same way), and within that, sized to
take about ``TARGET_SECONDS`` by an estimate of the cost per item that rises at once and falls
slowly, so the per-chunk cost of a round trip (100-300 us) stays around one percent of the work.
When the number of items is known, no chunk takes more than a ``1 / (2 * workers)`` share of
what remains, so the last chunks shrink and no worker is left holding a long tail while the
others idle; they shrink no shorter than ``TAIL_SECONDS``, since a straggler that short costs less
than the round trips that splitting it further would add.
"""

from __future__ import annotations

__all__ = ["ChunkSizer"]

#: Aim for chunks that keep a worker busy this long.
TARGET_SECONDS = 0.02
#: Near the end, chunks shrink to no less than this long (a tenth of the target: a round trip is
#: 0.1-0.3 ms, so shorter chunks would be mostly round trip; shrinking down to single items, the
#: "pool" backend sent 1,000,000 trivial items in 111 chunks, the last 26 under 1,000 items).
TAIL_SECONDS = 0.002
#: Never more items than this in one chunk (bounds memory per chunk in ``imap``).
MAX_ITEMS = 1 << 16
#: How fast the estimate of seconds per item falls towards a cheaper measurement (it rises to
#: a dearer one at once: with uneven items, chunks sized for the cheap ones would bunch the
#: dear ones together, and a small chunk costs only a round trip of ~0.2 ms).
SMOOTHING = 0.2


class ChunkSizer:
    def __init__(
        self, workers: int, total: int | None, fixed: int | None, most: int | None = None
    ) -> None:
        self.workers = workers
        self.total = total
        self.fixed = fixed
        #: No chunk larger (``max_tasks_per_worker``: a fresh worker takes any chunk whole).
        self.most = MAX_ITEMS if most is None else min(most, MAX_ITEMS)
        #: Estimated seconds per item, once a chunk has finished.
        self.per_item: float | None = None
        #: The largest chunk that has finished: the next is at most twice that (one cheap item
        #: must not size a chunk that turns out to hold half the work).
        self.largest = 0

    def next_size(self, position: int, *, spread: bool = True) -> int:
        """Size of the chunk that starts at item ``position``; ``spread=False`` when one thread
        runs the chunks in turn, so that there is no tail to balance."""
        if self.fixed is not None:
            return min(self.fixed, self.most)
        size = 1
        if self.per_item is not None:
            size = int(TARGET_SECONDS / self.per_item) if self.per_item > 0 else MAX_ITEMS
            size = min(size, 2 * self.largest)
        if self.total is not None and spread:
            share = -(-(self.total - position) // (2 * self.workers))
            if self.per_item is not None and self.per_item > 0:
                share = max(share, int(TAIL_SECONDS / self.per_item))
            size = min(size, share)
        return max(1, min(size, self.most))

    def observe(self, items: int, seconds: float) -> None:
        """A chunk of ``items`` took the worker ``seconds``."""
        if items <= 0 or self.fixed is not None:
            return
        self.largest = max(self.largest, items)
        sample = seconds / items
        if self.per_item is None or sample > self.per_item:
            self.per_item = sample
        else:
            self.per_item += SMOOTHING * (sample - self.per_item)
