"""``"thread"``: a ``ThreadPoolExecutor`` parmap starts for the call and shuts down after it.

For functions that release the GIL (I/O, numpy, compiled code). Nothing is pickled. A thread
cannot be killed: when an item overruns ``timeout=``, the call raises at once and the thread is
left to finish that item on its own.
"""

from __future__ import annotations

import concurrent.futures as cf

from .._errors import TaskTimeoutError
from ._base import Call
from ._executor import ExecutorBackend

__all__ = ["ThreadBackend"]


class ThreadBackend(ExecutorBackend):
    name = "thread"

    def __init__(self, workers: int) -> None:
        super().__init__(None, workers)

    def start(self, call: Call) -> None:
        super().start(call)
        self.executor = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="parmap-thread")

    def _close(self, abort: bool) -> None:
        executor, self.executor = self.executor, None
        if executor is not None:
            # After an overrun the stuck thread cannot be joined; every other exit joins all.
            executor.shutdown(wait=not self._timed_out(), cancel_futures=True)

    def _timed_out(self) -> bool:
        return self._fatal is not None and isinstance(self._fatal[1], TaskTimeoutError)
