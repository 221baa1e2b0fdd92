"""The adaptive decisions, checked through the objects that make them (never by timing a test)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from parmap._api import _drive, _prepare
from parmap._auto import Auto, worth_it
from parmap._chunking import MAX_ITEMS, TAIL_SECONDS, TARGET_SECONDS, ChunkSizer
from parmap._maps import _collect

from .helpers import children


def plan(fn: Any, items: Any, **options: Any) -> Any:
    settings: Any = {"workers": 2, **options}
    return _prepare("pmap", fn, (items,), False, settings)


def square(x: int) -> int:
    return x * x


def busy(x: int) -> int:
    end = time.perf_counter() + 0.005  # the work: 5 ms of CPU per item
    while time.perf_counter() < end:
        pass
    return x


@pytest.mark.parametrize(
    ("per_item", "ship", "workers", "remaining", "start", "expected"),
    [
        (5e-8, 3e-8, 2, 1_000_000, 0.05, False),  # x*x: cheaper than shipping it
        (0.2, 1e-6, 2, 15, 0.05, True),  # coarse: 0.2 s an item
        (0.2, 1e-6, 1, 15, 0.05, False),  # one worker never beats the loop
        (1e-5, 1e-6, 2, 5, 0.05, False),  # worth it per item, too little left to start workers
        (1e-5, 1e-6, 2, 5, 0.0, True),  # ... unless they are already warm
        (1e-5, 1e-6, 4, None, 0.05, True),  # endless input: the start is paid back
    ],
)
def test_worth_it(
    per_item: float, ship: float, workers: int, remaining: int | None, start: float,
    expected: bool,
) -> None:  # fmt: skip
    assert worth_it(per_item, ship, workers, remaining, start) is expected


def test_trivial_work_stays_in_the_caller() -> None:
    before = children()
    p = plan(square, range(200_000))
    assert isinstance(p.backend, Auto)
    assert _collect(_drive(p, ordered=True, bounded=False)) == [x * x for x in range(200_000)]
    assert p.backend.decision == "serial"
    assert children() == before


def test_a_small_call_starts_no_process() -> None:
    before = children()
    p = plan(square, range(10))
    assert _collect(_drive(p, ordered=True, bounded=False)) == [x * x for x in range(10)]
    assert p.backend.decision in (None, "serial")
    assert children() == before


def test_costly_work_goes_to_workers() -> None:
    p = plan(busy, range(40))
    assert _collect(_drive(p, ordered=True, bounded=False)) == list(range(40))
    assert p.backend.decision == "process"


def test_a_timeout_goes_to_workers_at_once() -> None:
    p = plan(square, range(10), timeout=5)
    assert _collect(_drive(p, ordered=True, bounded=False)) == [x * x for x in range(10)]
    assert p.backend.decision == "process"


def test_one_worker_or_one_item_is_serial_without_measuring() -> None:
    assert plan(square, range(100), workers=1).backend.name == "serial"
    assert plan(square, [3]).backend.name == "serial"


def test_fixed_chunksize_is_kept() -> None:
    sizer = ChunkSizer(workers=2, total=1000, fixed=7)
    sizer.observe(7, 1.0)
    assert [sizer.next_size(p) for p in (0, 500, 999)] == [7, 7, 7]


def test_adaptive_chunks_start_at_one_and_at_most_double() -> None:
    sizer = ChunkSizer(workers=2, total=None, fixed=None)
    assert sizer.next_size(0) == 1
    sizer.observe(1, 1e-6)  # one cheap item: not trusted to size a big chunk
    assert sizer.next_size(1) == 2
    for size in (2, 4, 8, 16):
        sizer.observe(size, size * 1e-6)
    assert sizer.next_size(100) == 32
    for _ in range(20):
        sizer.observe(sizer.next_size(0), 1.0)  # then the target bounds them
    assert sizer.next_size(0) <= MAX_ITEMS


def test_the_estimate_rises_at_once_and_falls_slowly() -> None:
    sizer = ChunkSizer(workers=2, total=None, fixed=None)
    sizer.observe(64, 64 * 1e-3)
    assert sizer.next_size(0) == round(TARGET_SECONDS / 1e-3)
    sizer.observe(1, 0.2)  # one dear item: chunks shrink to one at once
    assert sizer.next_size(0) == 1
    sizer.observe(10, 10 * 1e-3)  # cheap again: they grow back only gradually
    assert sizer.next_size(0) == 1


def test_chunks_shrink_near_the_end() -> None:
    sizer = ChunkSizer(workers=2, total=10_000, fixed=None)
    sizer.observe(1_000, 1_000 * 1e-5)  # the target alone would ask for 2,000 items
    assert sizer.next_size(5_000) == 1_250  # a quarter of what remains, for 2 workers
    assert sizer.next_size(9_000) == 250
    # ...but no shorter than TAIL_SECONDS: 200 items of 10 us, not one
    assert sizer.next_size(9_999) == round(TAIL_SECONDS / 1e-5)


def test_trivial_items_keep_tail_chunks_worth_their_round_trip() -> None:
    sizer = ChunkSizer(workers=2, total=100_000, fixed=None)
    sizer.observe(10_000, 10_000 * 1e-7)
    assert sizer.next_size(99_000) == round(TAIL_SECONDS / 1e-7)  # 20,000, not 250


def test_one_thread_running_the_chunks_has_no_tail_to_shrink() -> None:
    sizer = ChunkSizer(workers=2, total=10_000, fixed=None)
    sizer.observe(5_000, 5_000 * 1e-6)
    assert sizer.next_size(9_000, spread=False) == 10_000  # twice the largest, not a share


class Recording(ChunkSizer):
    """A chunk sizer that remembers every size it gave, and whether chunks were spread over
    workers (False: one thread runs them in turn, as while "auto" measures in the caller)."""

    def __init__(self, workers: int, total: int | None) -> None:
        super().__init__(workers, total, None)
        self.sizes: list[tuple[int, bool]] = []

    def next_size(self, position: int, *, spread: bool = True) -> int:
        size = super().next_size(position, spread=spread)
        self.sizes.append((size, spread))
        return size


def recorded(fn: Any, total: int) -> tuple[Any, Recording]:
    p = plan(fn, range(total))
    p.sizer = Recording(2, total)
    return p, p.sizer


def test_while_auto_measures_each_chunk_is_sized_by_the_one_before() -> None:
    p, sizer = recorded(square, 100_000)
    assert _collect(_drive(p, ordered=True, bounded=False)) == [x * x for x in range(100_000)]
    assert p.backend.decision == "serial"
    # one chunk at a time, in the caller, each twice the last: no window of same-sized chunks
    assert sizer.sizes[:4] == [(1, False), (2, False), (4, False), (8, False)]


def test_a_known_rest_shorter_than_the_probe_runs_here_at_once() -> None:
    p, sizer = recorded(square, 1_000)
    assert _collect(_drive(p, ordered=True, bounded=False)) == [x * x for x in range(1_000)]
    assert p.backend.decision == "serial"
    # decided before the input ran out; pmap then mapped the rest in one go, not in chunks
    assert sum(size for size, _ in sizer.sizes) < 1_000


def test_items_that_cannot_travel_keep_auto_in_the_caller() -> None:
    import threading

    locks = [threading.Lock() for _ in range(50)]
    p = plan(lambda lock: (busy(0), lock.locked())[1], locks)
    assert _collect(_drive(p, ordered=True, bounded=False)) == [False] * 50
    assert p.backend.decision == "serial"


def test_a_function_that_cannot_travel_keeps_auto_in_the_caller() -> None:
    import threading

    lock = threading.Lock()
    p = plan(lambda x: (busy(x), lock.locked())[0], range(40))
    assert _collect(_drive(p, ordered=True, bounded=False)) == list(range(40))
    assert p.backend.decision == "serial"


def test_a_function_known_costly_keeps_every_worker_busy_from_the_first_item() -> None:
    first = plan(busy, range(40))
    assert _collect(_drive(first, ordered=True, bounded=False)) == list(range(40))
    assert first.backend.decision == "process"
    again, sizer = recorded(busy, 40)
    assert _collect(_drive(again, ordered=True, bounded=False)) == list(range(40))
    assert again.backend.decision == "process"
    # no chunk ran in the caller to measure it: every chunk was spread over the workers
    assert sizer.sizes
    assert all(spread for _, spread in sizer.sizes)


def busy_ms(ms: float) -> float:
    end = time.perf_counter() + ms / 1000  # the work: ``ms`` of CPU
    while time.perf_counter() < end:
        pass
    return ms


def test_a_cheap_first_item_does_not_keep_dear_ones_in_the_caller() -> None:
    """The first item alone says each item pays for shipping, but not yet that the rest pays
    for starting workers; auto looks again, one item at a time, and the dear ones go out."""
    items = [1.0] + [20.0] * 11
    p = plan(busy_ms, items)
    p.sizer = Recording(2, len(items))
    assert _collect(_drive(p, ordered=True, bounded=False)) == items
    assert p.backend.decision == "process"
    probe = [size for size, spread in p.sizer.sizes if not spread]
    assert probe[0] == 1
    assert sum(probe) < len(items)
