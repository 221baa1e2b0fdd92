"""Progress of a map: a tqdm bar, or your own callable, updated per finished chunk.

Updates happen in the caller as chunk outcomes arrive, never in a worker's loop. ``progress=True``
draws a ``tqdm.auto`` bar (a terminal bar, or a widget in a notebook) with the total from
``len()`` when the input has one; ``progress=callable`` receives ``(done, total)`` with ``total``
``None`` for input of unknown length. tqdm is optional: ``pip install 'parmap-typed[progress]'``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import BackendUnavailableError

if TYPE_CHECKING:
    from ._recovery import Summary

__all__ = ["Progress", "ProgressOption", "bar_class", "make_progress"]

ProgressOption = bool | Callable[[int, int | None], object]


class Progress:
    """Counts finished items and reports them; ``close()`` ends a bar."""

    def __init__(
        self, report: Callable[[int, int | None], object], total: int | None, bar: Any = None
    ) -> None:
        self._report, self.total, self._bar, self.done = report, total, bar, 0

    def advance(self, items: int, summary: Summary | None = None) -> None:
        """``items`` more are done; a bar shows the summary's retries and failures, if any."""
        if self._bar is not None and summary is not None:
            postfix = summary.postfix()
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
        if items:
            self.done += items
            self._report(self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def bar_class() -> Any:
    """``tqdm.auto.tqdm`` without its monitor thread (it only tunes bars updated per item, and
    tqdm.auto's class cannot stop it once started: it outlives every bar). ImportError
    without tqdm."""
    tqdm = importlib.import_module("tqdm.auto").tqdm
    return type("ParmapBar", (tqdm,), {"monitor_interval": 0})


def make_progress(api: str, option: object, total: int | None) -> Progress | None:
    """Check ``progress=`` at call time; the reporter, or None for no progress."""
    if option is False or option is None:
        return None
    if option is True:
        try:
            bar = bar_class()(total=total, unit="item", desc=api)
        except ImportError as exc:
            raise BackendUnavailableError(
                f"{api}(): progress=True draws a tqdm bar and tqdm is not installed: "
                "pip install 'parmap-typed[progress]' (or pass a callable)"
            ) from exc
        return Progress(lambda done, _: bar.update(done - bar.n), total, bar)
    if callable(option):
        return Progress(option, total)
    raise TypeError(f"{api}(): progress must be True, False or a callable (done, total)")
