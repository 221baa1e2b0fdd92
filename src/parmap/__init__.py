"""parmap: typed parallel map over processes, pools, executors and threads, that never hangs.

The public face: everything importable from here is listed in ``__all__``; the modules behind
it are private.
"""

from ._api import MapIterator as MapIterator
from ._api import MapOptions as MapOptions
from ._async import AsyncMapIterator as AsyncMapIterator
from ._async import aimap as aimap
from ._async import apmap as apmap
from ._errors import BackendUnavailableError as BackendUnavailableError
from ._errors import CheckpointError as CheckpointError
from ._errors import InitializerError as InitializerError
from ._errors import ParmapError as ParmapError
from ._errors import RemoteTraceback as RemoteTraceback
from ._errors import ResultPicklingError as ResultPicklingError
from ._errors import ResultUnpicklingError as ResultUnpicklingError
from ._errors import SerializationError as SerializationError
from ._errors import TaskExitError as TaskExitError
from ._errors import TaskPicklingError as TaskPicklingError
from ._errors import TaskTimeoutError as TaskTimeoutError
from ._errors import TaskUnpicklingError as TaskUnpicklingError
from ._errors import WorkerCrashedError as WorkerCrashedError
from ._maps import imap as imap
from ._maps import pmap as pmap
from ._maps import pstarmap as pstarmap
from ._process_executor import ProcessExecutor as ProcessExecutor
from ._processes import run_processes as run_processes
from ._queues import Channel as Channel
from ._queues import queue_collect as queue_collect
from ._recovery import Summary as Summary
from ._worker import worker_state as worker_state
from .backends import BackendName as BackendName
from .backends import shutdown as shutdown

__version__ = "0.1.0"

__all__ = [
    "AsyncMapIterator",
    "BackendName",
    "BackendUnavailableError",
    "Channel",
    "CheckpointError",
    "InitializerError",
    "MapIterator",
    "MapOptions",
    "ParmapError",
    "ProcessExecutor",
    "RemoteTraceback",
    "ResultPicklingError",
    "ResultUnpicklingError",
    "SerializationError",
    "Summary",
    "TaskExitError",
    "TaskPicklingError",
    "TaskTimeoutError",
    "TaskUnpicklingError",
    "WorkerCrashedError",
    "aimap",
    "apmap",
    "imap",
    "pmap",
    "pstarmap",
    "queue_collect",
    "run_processes",
    "shutdown",
    "worker_state",
]
