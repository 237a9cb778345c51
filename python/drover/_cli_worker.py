"""python -m drover worker MODULE[:ATTR]: run a module's Python tasks as a drover worker."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

from ._security import Security, SecurityError
from .worker import POOLS, TASK_MARK, Worker

DESCRIPTION = """\
Runs the Python tasks of MODULE as a drover worker until SIGTERM or Ctrl-C
(the first finishes the tasks it holds, a second stops at once).

MODULE is a module name (mypkg.tasks) or a file (./tasks.py). The worker run is:
  - MODULE:ATTR, a drover.Worker named on the command line;
  - else the module's attribute `worker`, or the one drover.Worker it defines;
  - else a new Worker with every module-level function marked @drover.task.
Options given here override the Worker's own settings.

  # tasks.py
  import drover
  @drover.task
  def add(a: int, b: int) -> int:
      return a + b

  python -m drover worker tasks.py --broker tcp://127.0.0.1:5556 --pool processes -c 4
"""

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
              "error": logging.ERROR, "off": logging.CRITICAL + 1}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m drover worker", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("module", metavar="MODULE[:ATTR]", help="the module (or .py file) whose tasks to run")
    p.add_argument("--broker", help="the broker's backend endpoint (default: the Worker's, tcp://127.0.0.1:5556)")
    p.add_argument("--pool", choices=POOLS, default="processes",
                   help="processes (default: one child process a slot, past the GIL), threads, or solo")
    p.add_argument("-c", "--concurrency", type=int, help="slots: child processes or threads (default: cores)")
    p.add_argument("--security", metavar="DIR", help="a fleet directory (drover-keygen --fleet): use CurveZMQ")
    p.add_argument("--heartbeat-ms", type=int, help="heartbeat period (default 1000)")
    p.add_argument("--liveness", type=int, help="missed heartbeats before the broker is presumed gone (default 3)")
    p.add_argument("--id", help="worker id shown in status and outcomes (default HOST:PID)")
    p.add_argument("--prefetch", type=int, help="credits beyond the free slots (default: automatic)")
    p.add_argument("--max-message-bytes", type=int, help="the largest message accepted (default 16 MiB)")
    p.add_argument("--log-level", choices=sorted(LOG_LEVELS), default="info", help="default info")
    p.add_argument("--list-tasks", action="store_true", help="print the task names and exit")
    return p


def import_module(spec: str):
    """The module named by `spec` (a dotted name or a .py path). Raises ImportError."""
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec).resolve()
        if not path.is_file():
            raise ImportError(f"no such file: {spec}")
        sys.path.insert(0, str(path.parent))  # its own imports work as when run as a script
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
        return module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(spec)


def find_worker(module, attr: str | None) -> Worker:
    """The Worker to run (see DESCRIPTION). Raises LookupError saying what is missing."""
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, Worker):
            raise LookupError(f"{module.__name__}:{attr} is not a drover.Worker")
        return found
    if isinstance(getattr(module, "worker", None), Worker):
        return module.worker
    workers = [v for v in vars(module).values() if isinstance(v, Worker)]
    if len(workers) == 1:
        return workers[0]
    if len(workers) > 1:
        raise LookupError(f"{module.__name__} defines {len(workers)} Workers: name one as MODULE:ATTR")
    worker = Worker()
    for value in vars(module).values():
        name = getattr(value, TASK_MARK, None) if callable(value) else None
        if isinstance(name, str):
            worker.add(name, value)
    if not worker.tasks:
        raise LookupError(f"{module.__name__} defines no drover.Worker and no function marked @drover.task")
    return worker


def configure(worker: Worker, args: argparse.Namespace) -> None:
    """Applies the options given. Raises SecurityError, ValueError."""
    if args.broker:
        worker.broker = args.broker
    if args.security:
        worker.security = Security.from_fleet(args.security, "worker")
    if args.heartbeat_ms is not None:
        if not 10 <= args.heartbeat_ms <= 600000:
            raise ValueError("--heartbeat-ms must be from 10 to 600000")
        worker.heartbeat = args.heartbeat_ms / 1000
    if args.liveness is not None:
        if args.liveness < 1:
            raise ValueError("--liveness must be at least 1")
        worker.liveness = args.liveness
    if args.id:
        worker.id = args.id
    if args.prefetch is not None:
        if args.prefetch < 0:
            raise ValueError("--prefetch must be at least 0")
        worker.prefetch = args.prefetch
    if args.max_message_bytes is not None:
        if args.max_message_bytes < 65536:
            raise ValueError("--max-message-bytes must be at least 65536")
        worker.max_message_bytes = args.max_message_bytes
    if args.concurrency is not None and args.concurrency < 1:
        raise ValueError("-c must be at least 1")


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=LOG_LEVELS[args.log_level], stream=sys.stderr,
                        format="%(asctime)s %(levelname)s drover-worker[%(process)d] %(message)s")
    module_name, _, attr = args.module.partition(":") if not os.path.exists(args.module) else (args.module, "", "")
    try:
        module = import_module(module_name)
        worker = find_worker(module, attr or None)
        configure(worker, args)
    except (ImportError, LookupError, SecurityError, ValueError) as e:
        sys.stderr.write(f"drover worker: {e}\n")
        return 2
    if args.list_tasks:
        for name in sorted(worker.tasks):
            print(name)
        return 0
    return worker.run(pool=args.pool, concurrency=args.concurrency)
