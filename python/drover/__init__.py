"""drover for Python: submit tasks to a drover broker and run tasks as drover workers.

    import drover
    with drover.Client(broker="tcp://127.0.0.1:5555") as client:
        print(client.submit("sum_random", 1000000).result())

The wire protocol is docs/protocol.md; this package speaks it with pyzmq and msgpack.
"""

from ._security import Security, SecurityError
from ._wire import ProtocolError
from .client import (BrokerUnavailable, Client, ClientClosed, TaskCancelled, TaskError, TaskFailed, TaskFuture,
                     TaskLost, TaskRejected, TaskTimeout, as_completed, wait)
from .worker import Worker, task

__version__ = "0.1.0"
__all__ = ["Security", "SecurityError", "ProtocolError", "Worker", "task", "Client", "TaskFuture", "TaskError",
           "TaskFailed", "TaskTimeout", "TaskLost", "TaskCancelled", "TaskRejected", "BrokerUnavailable",
           "ClientClosed", "as_completed", "wait"]
