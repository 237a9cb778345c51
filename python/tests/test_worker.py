"""A Python worker (threads and solo pools) with the C++ drover-producer as its client."""

import json
import signal
import subprocess
import threading
import time
import unittest
from pathlib import Path

import drover
from cpp_producer import broker_status, finish_submit, producer_argv, start_submit, submit
from harness import Fleet, wait_for


class ThreadsWorkerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fleet = Fleet()
        cls.worker = cls.fleet.python_worker("worker_tasks", pool="threads", concurrency=2)

    @classmethod
    def tearDownClass(cls):
        cls.fleet.stop()

    def outcomes(self, tasks):
        return submit(self.fleet, tasks)

    def test_results_come_back_for_every_way_of_giving_arguments(self):
        out = self.outcomes([
            {"id": "a", "task": "add", "args": [2, 3]},
            {"id": "b", "task": "add", "args": ["2", "40"]},  # a shell's words, read as the annotated ints
            {"id": "c", "task": "echo", "args": "one"},  # a single value: one argument
            {"id": "d", "task": "echo", "args": [[1, [2, {"k": None}]]]},
            {"id": "e", "task": "echo"},  # none
        ])
        self.assertEqual({k: o["status"] for k, o in out.items()}, dict.fromkeys("abcde", "ok"), out)
        self.assertEqual(out["a"]["result"], 5)
        self.assertEqual(out["b"]["result"], 42)
        self.assertEqual(out["c"]["result"], "one")
        self.assertEqual(out["d"]["result"], [1, [2, {"k": None}]])
        self.assertEqual(out["e"]["result"], [])
        self.assertTrue(out["a"]["worker"].startswith(self.worker_id_prefix()), out["a"])

    def worker_id_prefix(self):
        return f"{broker_status(self.fleet)['workers'][0]['host']}:{self.worker.pid}"

    def test_errors_carry_the_exception_text_and_the_argument_count(self):
        out = self.outcomes([
            {"id": "boom", "task": "fail", "args": ["it broke"]},
            {"id": "few", "task": "add", "args": [1]},
            {"id": "many", "task": "add", "args": [1, 2, 3]},
            {"id": "text", "task": "add", "args": ["x", 1]},
            {"id": "set", "task": "unpackable"},
        ])
        self.assertEqual({o["status"] for o in out.values()}, {"error"}, out)
        self.assertEqual(out["boom"]["error"], "RuntimeError: it broke")
        self.assertEqual(out["few"]["error"], "expected 2 arguments, got 1")
        self.assertEqual(out["many"]["error"], "expected 2 arguments, got 3")
        self.assertEqual(out["text"]["error"], 'argument 1: expected an integer, got "x"')
        self.assertIn("result of type set cannot be packed", out["set"]["error"])

    def test_a_task_past_its_deadline_ends_timeout_after_its_attempts(self):
        start = time.monotonic()
        out = self.outcomes([{"id": "t1", "task": "sleep_ms", "args": [2000], "timeout_ms": 200, "max_attempts": 1}])
        # Sent at the deadline, not when the function returned (it runs on: a thread cannot be stopped).
        self.assertLess(time.monotonic() - start, 1.6, out)
        self.assertEqual((out["t1"]["status"], out["t1"]["error"]), ("timeout", "timed out after 200 ms"), out)
        out = self.outcomes([
            {"id": "t2", "task": "sleep_ms", "args": [300], "timeout_ms": 100, "max_attempts": 2},
            {"id": "quick", "task": "sleep_ms", "args": [10], "timeout_ms": 5000},
        ])
        self.assertEqual((out["t2"]["status"], out["t2"]["attempts"]), ("timeout", 2), out)
        self.assertEqual(out["quick"]["status"], "ok")

    def test_retry_on_error_runs_the_task_again(self):
        out = self.outcomes([{"id": "r", "task": "fail_times", "args": ["r", 2], "retry_on_error": True,
                              "max_attempts": 3},
                             {"id": "n", "task": "fail_times", "args": ["n", 2], "max_attempts": 3}])
        self.assertEqual((out["r"]["status"], out["r"]["result"], out["r"]["attempts"]), ("ok", 3, 3), out)
        self.assertEqual((out["n"]["status"], out["n"]["attempts"]), ("error", 1), out)

    def test_many_quick_tasks_all_come_back(self):
        out = self.outcomes([{"id": f"q{i}", "task": "add", "args": [i, 1]} for i in range(3000)])
        self.assertEqual(sorted(o["result"] for o in out.values()), list(range(1, 3001)))

    def test_status_shows_the_worker_and_its_task_names(self):
        workers = broker_status(self.fleet)["workers"]
        self.assertEqual([(x["pool"], x["slots"], x["restarts"]) for x in workers], [("threads", 2, 0)])


class UnreachableSinkTest(unittest.TestCase):
    def test_results_go_through_the_broker_when_the_sink_cannot_be_reached(self):
        with Fleet() as fleet:
            worker = fleet.python_worker("worker_tasks", pool="threads", concurrency=2)
            r = subprocess.run(producer_argv(fleet, "--sink-advertise", "tcp://127.0.0.1:1", "submit"),
                               input="".join(f'{{"id":"{i}","task":"add","args":[{i},{i}]}}\n' for i in range(30)),
                               capture_output=True, text=True, timeout=40)
            out = [json.loads(line) for line in r.stdout.splitlines()]
            self.assertEqual(sorted(o["result"] for o in out), [2 * i for i in range(30)], r.stderr)
            self.assertIn("worker.sink_unreachable", fleet.log_of(worker))
            self.assertGreater(broker_status(fleet)["totals"]["results_forwarded"], 0)


class StopTest(unittest.TestCase):
    def test_sigterm_finishes_running_tasks_then_says_bye(self):
        with Fleet() as fleet:
            worker = fleet.python_worker("worker_tasks", pool="threads", concurrency=2)
            marks = fleet.dir / "marks"
            p = start_submit(fleet, [{"id": f"s{i}", "task": "mark_and_sleep", "args": [str(marks), 1200]}
                                     for i in range(2)])
            wait_for(lambda: marks.exists() and len(marks.read_text().split()) == 2, what="both tasks running")
            fleet.kill(worker, signal.SIGTERM)
            out = finish_submit(p)
            self.assertEqual([o["status"] for o in out.values()], ["ok", "ok"], out)
            self.assertEqual(worker.wait(timeout=10), 0, fleet.log_of(worker))
            self.assertEqual(len(marks.read_text().split()), 2)  # each ran once: BYE came after them
            self.assertIn("worker.stopped", fleet.log_of(worker))

    def test_a_second_sigterm_stops_at_once(self):
        with Fleet() as fleet:
            worker = fleet.python_worker("worker_tasks", pool="threads", concurrency=1)
            marks = fleet.dir / "marks"
            p = start_submit(fleet, [{"id": "long", "task": "mark_and_sleep", "args": [str(marks), 30000]}])
            wait_for(marks.exists, what="the task running")
            fleet.kill(worker, signal.SIGTERM)
            time.sleep(0.3)
            self.assertIsNone(worker.poll())  # still finishing its task
            fleet.kill(worker, signal.SIGTERM)
            self.assertEqual(worker.wait(timeout=5), 130, fleet.log_of(worker))
            p.kill()
            p.communicate()


class InProcessTest(unittest.TestCase):
    def test_run_from_a_thread_and_stop(self):
        with Fleet() as fleet:
            wk = drover.Worker(broker=fleet.backend, heartbeat=0.2, id="in-process")
            wk.add("mul", lambda a, b: a * b)
            status = []
            t = threading.Thread(target=lambda: status.append(wk.run(pool="threads", concurrency=2)))
            t.start()
            try:
                out = submit(fleet, [{"id": str(i), "task": "mul", "args": [i, 3]} for i in range(10)])
                self.assertEqual(sorted(o["result"] for o in out.values()), [3 * i for i in range(10)])
                self.assertTrue(out["0"]["worker"].startswith("in-process/"), out["0"])
            finally:
                wk.stop()
                t.join(timeout=10)
            self.assertEqual(status, [0])


class SoloAndSecurityTest(unittest.TestCase):
    def test_solo_pool_under_curve(self):
        with Fleet(secure=True) as fleet:
            worker = fleet.python_worker("worker_tasks", pool="solo")
            out = submit(fleet, [{"id": str(i), "task": "add", "args": [i, i]} for i in range(20)])
            self.assertEqual(sorted(o["result"] for o in out.values()), [2 * i for i in range(20)])
            self.assertEqual({o["worker"] for o in out.values()}, {out["0"]["worker"]})  # one slot: no /N
            self.assertNotIn("/", out["0"]["worker"])
            self.assertIsNone(worker.poll())

    def test_a_worker_without_the_fleet_keys_is_not_served(self):
        with Fleet(secure=True) as fleet:
            sec, fleet.security_dir = fleet.security_dir, None
            worker = fleet.python_worker("worker_tasks", pool="solo")  # plain text to a CURVE broker
            fleet.security_dir = sec
            wait_for(lambda: "worker.broker_silent" in fleet.log_of(worker), what="the worker to find no broker")
            self.assertEqual(broker_status(fleet).get("workers"), [])
            self.assertIsNone(worker.poll())  # it keeps trying, it does not die

    def test_module_given_as_a_file_with_marked_functions(self):
        with Fleet() as fleet:
            module = Path(fleet.dir) / "marked.py"
            module.write_text("import drover\n\n@drover.task\ndef twice(x: int):\n    return 2 * x\n\n"
                              "@drover.task('thrice')\ndef three(x):\n    return 3 * x\n")
            fleet.python_worker(str(module), pool="threads")
            out = submit(fleet, [{"id": "a", "task": "twice", "args": [4]}, {"id": "b", "task": "thrice", "args": 5}])
            self.assertEqual((out["a"]["result"], out["b"]["result"]), (8, 15), out)


if __name__ == "__main__":
    unittest.main()
