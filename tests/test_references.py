"""A result handed to the consumer is the consumer's alone: ``imap`` keeps no reference to it
(the scenario of CPython's executor test ``test_free_reference``, bpo-14406)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from parmap import imap


class Payload:
    def __init__(self, n: int) -> None:
        self.n = n


def make(n: int) -> Payload:
    return Payload(n)


def test_imap_drops_each_result_once_handed_out(engine: dict[str, Any]) -> None:
    alive = []
    with imap(make, range(60), **engine) as results:
        for expected in range(60):  # not enumerate(): its reused tuple holds the last result
            result = next(results)
            assert result.n == expected
            ref = weakref.ref(result)
            del result
            gc.collect()
            alive.append(ref() is not None)
    assert sum(alive) == 0, f"{sum(alive)} of 60 results still referenced by parmap"


def test_unordered_imap_drops_each_result_once_handed_out() -> None:
    refs = []
    with imap(make, range(60), ordered=False, backend="process", workers=2) as results:
        for result in results:
            refs.append(weakref.ref(result))
            del result
            gc.collect()
            assert refs[-1]() is None
    assert len(refs) == 60
