"""Hypothesis strategies for parmap's properties (the profile is registered in conftest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st


class Boom(Exception):
    """Raised by :func:`compute` at the chosen indices; equal when the index is."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Boom) and other.args == self.args

    def __hash__(self) -> int:
        return hash(self.args)


def compute(failing: frozenset[int], pair: tuple[int, int]) -> int:
    index, value = pair
    if index in failing:
        raise Boom(index)
    return value * 3 - 1


def compute_star(failing: frozenset[int], index: int, value: int) -> int:
    return compute(failing, (index, value))


@dataclass(frozen=True)
class Case:
    """A map to run: values, the indices at which the function raises, and the options."""

    values: list[int]
    failing: frozenset[int]
    chunksize: int | None
    workers: int

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return list(enumerate(self.values))

    def loop(self) -> tuple[list[int], BaseException | None]:
        """What the sequential loop gives: the results before the first failure, and it."""
        out = []
        for pair in self.pairs:
            try:
                out.append(compute(self.failing, pair))
            except Boom as exc:
                return out, exc
        return out, None


@st.composite
def cases(draw: Any, max_size: int = 120, failures: bool = True) -> Case:
    values = draw(st.lists(st.integers(-(10**6), 10**6), max_size=max_size))
    failing: frozenset[int] = frozenset()
    if failures and values:
        failing = draw(st.frozensets(st.integers(0, len(values) - 1), max_size=3))
    chunksize = draw(st.none() | st.integers(1, 16))
    workers = draw(st.integers(1, 4))
    return Case(values, failing, chunksize, workers)
