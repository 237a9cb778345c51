"""drover.Client when things go wrong: workers killed, the broker restarted, a full queue, forged and
garbage outcomes pushed to its sink, the client itself stopped past the broker's patience."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import unittest

import msgpack
import zmq

import drover
from drover import _wire
from harness import PYTHON_DIR, Fleet, wait_for


def push(endpoint: str, *messages: list, curve: dict | None = None) -> None:
    """Pushes raw multipart messages to a sink, as a hostile peer would."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.linger = 2000
    for k, v in (curve or {}).items():
        setattr(s, k, v)
    s.connect(endpoint.split("?")[0])
    for m in messages:
        s.send_multipart(m)
    s.close()
    ctx.term()


def result_message(outcomes: list, worker: str = "evil") -> list:
    return [_wire.header(_wire.Command.RESULT), _wire.encode_results(outcomes)]


class WorkerDeathTest(unittest.TestCase):
    def test_a_task_whose_worker_is_killed_runs_again_elsewhere(self):
        with Fleet() as fleet, drover.Client(fleet.frontend, heartbeat=0.2) as c:
            first = fleet.cpp_worker(pool="threads", concurrency=1)
            self.assertTrue(c.wait_for_workers(1, 10))
            f = c.submit("sleep_ms", 1500)
            wait_for(lambda: c.status()["totals"].get("dispatched", 0) >= 1, what="the task to be dispatched")
            time.sleep(0.2)
            fleet.kill(first)
            fleet.cpp_worker(pool="threads", concurrency=1)
            self.assertEqual(f.result(30), 1500)
            self.assertEqual(f.attempt, 2)

    def test_a_task_that_kills_every_worker_ends_lost(self):
        with Fleet() as fleet, drover.Client(fleet.frontend, heartbeat=0.2) as c:
            fleet.cpp_worker(pool="processes", concurrency=1)
            self.assertTrue(c.wait_for_workers(1, 10))
            with self.assertRaises(drover.TaskLost) as e:
                c.submit("crash", max_attempts=2).result(30)
            self.assertEqual(e.exception.worker, "broker")
            self.assertEqual(c.submit("echo", 1).result(30), 1)  # the pool goes on


class BrokerRestartTest(unittest.TestCase):
    def test_tasks_in_flight_complete_across_a_broker_restart(self):
        with Fleet() as fleet, drover.Client(fleet.frontend, heartbeat=0.2) as c:
            fleet.cpp_worker(pool="threads", concurrency=2)
            self.assertTrue(c.wait_for_workers(1, 10))
            futures = [c.submit("sleep_ms", 2) for _ in range(3000)]
            time.sleep(0.3)
            fleet.kill(fleet.broker)
            fleet.broker.wait()
            time.sleep(0.5)
            fleet.start_broker()
            self.assertEqual([f.result(45) for f in futures], [2] * 3000)
            self.assertGreater(c.stats().get("resent", 0), 0)
            self.assertEqual(c.unfinished, 0)


class QueueFullTest(unittest.TestCase):
    def test_tasks_refused_for_a_full_queue_are_sent_again(self):
        with Fleet(broker_args=["--max-queued", "50"]) as fleet, drover.Client(fleet.frontend) as c:
            fleet.cpp_worker(pool="threads", concurrency=2)
            self.assertTrue(c.wait_for_workers(1, 10))
            self.assertEqual(list(c.map("sleep_ms", [1] * 1000)), [1] * 1000)
            self.assertGreater(c.stats().get("queue_full", 0), 0)

    def test_with_no_progress_they_end_rejected(self):
        with Fleet(broker_args=["--max-queued", "5"]) as fleet:
            c = drover.Client(fleet.frontend, queue_full_wait=1.0)
            futures = [c.submit("echo", i) for i in range(30)]  # no worker: nothing makes room
            with self.assertRaises(drover.TaskRejected) as e:
                futures[-1].result(20)
            self.assertEqual(e.exception.error, "queue_full")
            c.close(cancel=True)


class HostileSinkPeerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fleet = Fleet()
        cls.fleet.cpp_worker(pool="threads", concurrency=2)

    @classmethod
    def tearDownClass(cls):
        cls.fleet.stop()

    def test_a_forged_outcome_is_dropped_and_the_real_one_delivered(self):
        with drover.Client(self.fleet.frontend) as c:
            f = c.submit("sleep_ms", 400)
            forged = [_wire.Outcome(id=f.id, status="ok", result=_wire.pack(666), attempt=1, worker="evil",
                                    token=12345),
                      _wire.Outcome(id=f.id, status="cancelled", error=_wire.PRODUCER_GONE, attempt=1,
                                    worker="broker", token=1),
                      _wire.Outcome(id=f.id, status="error", error="forged", attempt=2**32 - 1, worker="x")]
            push(c.reply_to, result_message(forged))
            self.assertEqual(f.result(20), 400)
            self.assertEqual(c.stats().get("forged"), 3)
            self.assertEqual(c.stats().get("resubmitted", 0), 0)

    def test_garbage_at_the_sink_does_not_stop_the_client(self):
        with drover.Client(self.fleet.frontend) as c:
            result = _wire.header(_wire.Command.RESULT)
            garbage = [
                [b"junk"],
                [b"DRV4\x03", msgpack.packb({"results": []})],
                [b"DRV9\x20", b"\x80"],
                [result, b"\xc1\xc1"],
                [result, msgpack.packb([1, 2])],
                [result, msgpack.packb({"results": "x"})],
                [result, msgpack.packb({"results": [1, "a", None, {"id": [1]}, {"id": {"a": 1}},
                                                     {"id": "x", "attempt": -1}, {"id": "x", "attempt": 2**40},
                                                     {"id": "x", "attempt": 1.5}, {"id": "x", "token": "t"},
                                                     {"id": b"\xff", "status": "ok"}]})],
                [result, b"\xdd\xff\xff\xff\xff"],  # claims 4 G items
                [result, b"\x81\xa7results\x91" + b"\x91" * 5000],  # deep
                [result, os.urandom(1 << 20)],
                [result, b"", b"extra"],
            ]
            push(c.reply_to, *garbage)
            wait_for(lambda: c.stats().get("dropped_sink", 0) + c.stats().get("forged", 0) >= len(garbage) - 2,
                     what="the garbage to be read")
            self.assertTrue(c._thread.is_alive())
            self.assertEqual(list(c.map("echo", range(100))), list(range(100)))
            self.assertEqual(c.stats().get("io_errors", 0), 0)


STALLED_PRODUCER = textwrap.dedent("""
    import sys, drover
    with drover.Client(sys.argv[1], heartbeat=0.2) as c:
        print("ready", flush=True)
        futures = [c.submit("sleep_ms", 200) for _ in range(40)]  # 4 s on 2 slots
        print(sum(f.result(60) for f in futures), c.stats().get("resubmitted", 0) + c.stats().get("resent", 0),
              flush=True)
""")


class StalledProducerTest(unittest.TestCase):
    def test_a_producer_stopped_past_the_brokers_patience_gets_all_its_results(self):
        with Fleet() as fleet:
            fleet.cpp_worker(pool="threads", concurrency=2)
            env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR))
            p = subprocess.Popen([sys.executable, "-c", STALLED_PRODUCER, fleet.frontend], stdout=subprocess.PIPE,
                                 text=True, env=env)
            try:
                self.assertEqual(p.stdout.readline().strip(), "ready")
                time.sleep(0.3)
                p.send_signal(signal.SIGSTOP)
                time.sleep(4.0)  # the broker takes a producer silent for 3 s for gone, and cancels its tasks
                p.send_signal(signal.SIGCONT)
                total, again = p.stdout.readline().split()
                self.assertEqual(int(total), 8000)
                self.assertGreater(int(again), 0)
                self.assertEqual(p.wait(30), 0)
            finally:
                p.kill()
                p.wait()
                p.stdout.close()


if __name__ == "__main__":
    unittest.main()
