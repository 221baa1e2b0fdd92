"""progress=: a callable gets (done, total) per finished chunk; True draws a tqdm bar."""

from __future__ import annotations

import sys
from typing import Any

import pytest

import parmap
from parmap import BackendUnavailableError, imap, pmap


def test_callable_sees_every_item_counted(engine: dict[str, Any]) -> None:
    seen: list[tuple[int, int | None]] = []
    out = pmap(abs, range(-50, 0), chunksize=7, progress=lambda d, t: seen.append((d, t)),
               **engine)  # fmt: skip
    assert out == list(range(50, 0, -1))
    assert seen[-1] == (50, 50)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # never goes back


def test_unknown_length_reports_none_as_total() -> None:
    seen: list[tuple[int, int | None]] = []
    list(imap(abs, (x for x in range(10)), backend="thread", progress=lambda *a: seen.append(a)))
    assert seen[-1] == (10, None)


def test_true_draws_a_tqdm_bar(capsys: pytest.CaptureFixture[str]) -> None:
    assert pmap(abs, range(-20, 0), backend="serial", progress=True) == list(range(20, 0, -1))
    err = capsys.readouterr().err
    assert "20/20" in err
    assert "pmap" in err


def test_missing_tqdm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # as if tqdm were not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install 'parmap-typed\[progress\]'"):
        pmap(abs, [1], progress=True)


def test_progress_must_be_a_bool_or_a_callable() -> None:
    with pytest.raises(TypeError, match="progress must be True, False or a callable"):
        pmap(abs, [1], progress="yes")  # type: ignore[call-overload]


def test_unknown_option_is_named() -> None:
    untyped: Any = parmap.pmap
    with pytest.raises(TypeError, match=r"unknown option\(s\) colour; valid: workers, backend"):
        untyped(abs, [1], colour="red")
