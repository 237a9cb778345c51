"""A Python worker across a broker restart on the same ports: it registers again and its tasks complete."""

import signal
import time
import unittest

from cpp_producer import broker_status, finish_submit, start_submit, submit
from harness import Fleet, wait_for


def registered(fleet, n):
    return len(broker_status(fleet).get("workers", [])) == n


class BrokerRestartTest(unittest.TestCase):
    def restart_broker(self, fleet):
        fleet.kill(fleet.broker, signal.SIGKILL)
        fleet.broker.wait(timeout=5)
        fleet.start_broker()

    def test_a_threads_worker_registers_again_and_serves(self):
        with Fleet() as fleet:
            worker = fleet.python_worker("worker_tasks", pool="threads", concurrency=2)
            self.assertEqual(submit(fleet, [{"id": "before", "task": "add", "args": [1, 1]}])["before"]["result"], 2)
            self.restart_broker(fleet)
            wait_for(lambda: registered(fleet, 1), what="the worker registered with the new broker")
            out = submit(fleet, [{"id": str(i), "task": "add", "args": [i, 1]} for i in range(50)])
            self.assertEqual(sorted(o["result"] for o in out.values()), list(range(1, 51)))
            self.assertIsNone(worker.poll())
            log = fleet.log_of(worker)
            self.assertTrue("worker.reset" in log or "worker.broker_silent" in log, log)

    def test_a_task_running_across_the_restart_completes(self):
        with Fleet() as fleet:
            fleet.python_worker("worker_tasks", pool="processes", concurrency=2)
            wait_for(lambda: registered(fleet, 2), what="both children registered")
            marks = fleet.dir / "marks"
            p = start_submit(fleet, [{"id": "across", "task": "mark_and_sleep", "args": [str(marks), 1500]},
                                     {"id": "quick", "task": "add", "args": [2, 3]}], workers=2)
            wait_for(marks.exists, what="the long task running")
            self.restart_broker(fleet)
            out = finish_submit(p)
            self.assertEqual((out["across"]["status"], out["quick"]["result"]), ("ok", 5), out)
            wait_for(lambda: registered(fleet, 2), what="both children registered again")
            out = submit(fleet, [{"id": "after", "task": "pid"}], workers=2)
            self.assertEqual(out["after"]["status"], "ok")

    def test_a_broker_that_says_bye_is_connected_to_again(self):
        with Fleet() as fleet:
            worker = fleet.python_worker("worker_tasks", pool="solo")
            wait_for(lambda: registered(fleet, 1), what="the worker registered")
            fleet.kill(fleet.broker, signal.SIGTERM)
            fleet.broker.wait(timeout=10)
            wait_for(lambda: "worker.broker_bye" in fleet.log_of(worker), what="the worker to see the BYE")
            fleet.start_broker()
            wait_for(lambda: registered(fleet, 1), what="the worker registered again")
            self.assertEqual(submit(fleet, [{"id": "x", "task": "add", "args": [1, 2]}])["x"]["result"], 3)


class PauseTest(unittest.TestCase):
    def test_a_worker_paused_past_the_window_blames_itself_and_serves_again(self):
        with Fleet() as fleet:
            worker = fleet.python_worker("worker_tasks", pool="threads", concurrency=2)
            wait_for(lambda: registered(fleet, 1), what="the worker registered")
            fleet.kill(worker, signal.SIGSTOP)
            time.sleep(4 * fleet.heartbeat_ms / 1000)  # past its liveness window: the broker drops it
            wait_for(lambda: registered(fleet, 0), what="the broker to take the paused worker for gone")
            fleet.kill(worker, signal.SIGCONT)
            wait_for(lambda: "worker.stalled" in fleet.log_of(worker), what="the worker to see its own stall")
            out = submit(fleet, [{"id": str(i), "task": "add", "args": [i, 0]} for i in range(10)])
            self.assertEqual(sorted(o["result"] for o in out.values()), list(range(10)))
            self.assertNotIn("worker.broker_silent", fleet.log_of(worker))  # the silence was its own


if __name__ == "__main__":
    unittest.main()
