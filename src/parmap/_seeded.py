"""``seed=``: the same random numbers for every item, whatever runs it and when.

A worker's random state depends on which items it ran before, which depends on scheduling. With
``seed=``, the function is wrapped so that ``random`` (and ``numpy.random``, when numpy is
imported) is reseeded from ``(seed, item index)`` just before each item: item 7 draws the same
numbers on every backend, every start method and every run. The index travels with the item
(the input is enumerated above the backend line), so no backend knows about seeds.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["Seeded"]


class Seeded:
    """``fn`` called on ``(index, item)`` pairs, after reseeding from ``(seed, index)``."""

    def __init__(self, fn: Callable[..., Any], seed: int, star: bool) -> None:
        self.fn, self.seed, self.star = fn, seed, star

    def __call__(self, pair: tuple[int, Any]) -> Any:
        index, item = pair
        key = hash((self.seed, index))  # ints hash the same in every process
        random.seed(key)
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            numpy.random.seed(key & 0xFFFFFFFF)
        return self.fn(*item) if self.star else self.fn(item)

    def __repr__(self) -> str:
        return f"{self.fn!r} (seed={self.seed})"
