"""Static checks of ``apmap`` and ``aimap``, run by mypy --strict (not collected by pytest);
the conventions of ``check_types.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from typing_extensions import assert_type

from parmap import AsyncMapIterator, Summary, aimap, apmap


def to_str(x: int) -> str:
    return str(x)


def add(a: int, b: float) -> float:
    return a + b


def join3(a: str, b: int, c: bytes) -> str:
    return a


def five(a: int, b: int, c: int, d: int, e: int) -> bytes:
    return b""


async def check() -> None:
    assert_type(await apmap(to_str, [1, 2]), list[str])
    assert_type(await apmap(add, [1, 2], [0.5, 1.5]), list[float])
    assert_type(await apmap(join3, ["a"], [1], [b"x"]), list[str])
    assert_type(await apmap(five, [1], [2], [3], [4], [5]), list[bytes])
    assert_type(await apmap(lambda x: x * 2.0, [1, 2], workers=2, chunksize=4), list[float])
    assert_type(aimap(to_str, range(3)), AsyncMapIterator[str])
    assert_type(aimap(add, [1], [2.0], ordered=False, backend="process"), AsyncMapIterator[float])
    iterator: AsyncIterator[str] = aimap(to_str, [1])
    async for value in iterator:
        assert_type(value, str)
    async with aimap(to_str, [1], timeout=2.0) as results:
        assert_type(results, AsyncMapIterator[str])
        assert_type(await results.__anext__(), str)
        await results.aclose()
    await apmap(to_str, ["a"])  # type: ignore[arg-type]
    aimap(to_str, [1], ordered=1)  # type: ignore[call-overload]
    apmap(to_str, [1], workers="2")  # type: ignore[call-overload]


async def check_async_long_maps() -> None:
    assert_type(await apmap(to_str, [1], errors="return"), list[str | Exception])
    assert_type(aimap(to_str, [1], errors="return"), AsyncMapIterator[str | Exception])
    assert_type(aimap(to_str, [1]).summary, Summary)
