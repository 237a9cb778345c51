"""drover.Client against a real broker and C++ workers: results, errors, timeouts, map, cancel, close."""

import concurrent.futures
import itertools
import os
import time
import unittest

import drover
from harness import Fleet, wait_for


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fleet = Fleet()
        cls.fleet.cpp_worker(pool="threads", concurrency=2)

    @classmethod
    def tearDownClass(cls):
        cls.fleet.stop()

    def setUp(self):
        self.client = drover.Client(self.fleet.frontend, heartbeat=0.2)
        self.assertTrue(self.client.wait_for_workers(1, 10))

    def tearDown(self):
        self.client.close(wait=False, cancel=True)

    def test_submit_returns_futures_of_decoded_results(self):
        c = self.client
        self.assertEqual(c.submit("echo", {"a": [1, 2.5, "x", None, True]}).result(10),
                         {"a": [1, 2.5, "x", None, True]})
        self.assertEqual(c.submit("hello", "py").result(10), "Hello, py!")
        self.assertEqual(c.submit("sum_random", 0, 1).result(10), 0)
        f = c.submit("echo", b"\x00\xff")
        self.assertEqual(f.result(10), b"\x00\xff")
        self.assertTrue(f.id)
        big = [c.submit("echo", bytes([i]) * (600 << 10)) for i in range(4)]  # SUBMITs cut at 1 MiB
        self.assertEqual([f.result(20) for f in big], [bytes([i]) * (600 << 10) for i in range(4)])

    def test_many_futures_complete_with_their_own_results(self):
        futures = [self.client.submit("echo", i) for i in range(5000)]
        self.assertEqual([f.result(30) for f in futures], list(range(5000)))
        done = list(drover.as_completed(futures[:10], timeout=5))
        self.assertEqual(len(done), 10)
        self.assertEqual(self.client.unfinished, 0)

    def test_map_keeps_input_order_and_its_window(self):
        slow_first = itertools.chain([300, 0, 200], [0] * 50)
        self.assertEqual(list(self.client.map("sleep_ms", slow_first, window=8)), [300, 0, 200] + [0] * 50)
        self.assertEqual(list(self.client.map("echo", range(20000))), list(range(20000)))
        self.assertEqual(list(self.client.starmap("sum_random", [(0, 1), (0, 2)])), [0, 0])
        self.assertEqual(list(self.client.map("echo", [])), [])

    def test_a_done_callback_may_submit(self):
        follow = []
        small = drover.Client(self.fleet.frontend, window=2)
        first = [small.submit("echo", i) for i in range(2)]
        for f in first:
            f.add_done_callback(lambda f: follow.append(small.submit("echo", f.result() + 10)))
        wait_for(lambda: len(follow) == 2, what="the callbacks' tasks")
        self.assertEqual(sorted(f.result(10) for f in follow), [10, 11])
        small.close()

    def test_an_error_raises_task_failed_with_its_text(self):
        with self.assertRaises(drover.TaskFailed) as e:
            self.client.submit("fail", "boom").result(10)
        err = e.exception
        self.assertEqual((err.status, err.error, err.task, err.attempt), ("error", "boom", "fail", 1))
        self.assertTrue(err.worker)
        self.assertIn("boom", str(err))

    def test_errors_are_retried_with_retry_on_error(self):
        f = self.client.submit("fail_times", "py-retry", 1, retry_on_error=True, max_attempts=3)
        self.assertEqual(f.result(20), 2)  # failed once, then the second call returned its count

    def test_an_unknown_task_fails_at_once(self):
        with self.assertRaises(drover.TaskFailed) as e:
            self.client.submit("no_such_task", 1).result(10)
        self.assertIn("no_such_task", e.exception.error)

    def test_a_task_past_its_timeout_raises_task_timeout(self):
        start = time.monotonic()
        with self.assertRaises(drover.TaskTimeout) as e:
            self.client.submit("sleep_ms", 1500, timeout=0.2, max_attempts=1).result(10)
        self.assertLess(time.monotonic() - start, 1.4)
        self.assertEqual(e.exception.status, "timeout")

    def test_map_raises_the_first_failure_in_input_order(self):
        got = []
        with self.assertRaises(drover.TaskFailed):
            for v in self.client.starmap("fail_times", [("py-map-a", 0), ("py-map-b", 0), ("py-map-c", 5)]):
                got.append(v)
        self.assertEqual(got, [1, 1])
        wait_for(lambda: self.client.unfinished == 0, what="the map's tasks to end")

    def test_breaking_out_of_map_cancels_the_rest(self):
        for v in self.client.map("sleep_ms", [0] + [200] * 200, window=100):
            break
        wait_for(lambda: self.client.unfinished == 0, timeout=15, what="the cancelled tasks to end")

    def test_cancel_drops_queued_tasks(self):
        futures = [self.client.submit("sleep_ms", 300) for _ in range(40)]
        time.sleep(0.1)
        self.client.cancel()
        states = []
        for f in futures:
            try:
                f.result(20)
                states.append("ok")
            except drover.TaskCancelled:
                states.append("cancelled")
        self.assertIn("cancelled", states)
        self.assertLess(states.count("ok"), 40)

    def test_future_cancel_asks_the_broker_too(self):
        blockers = [self.client.submit("sleep_ms", 500) for _ in range(4)]
        f = self.client.submit("sleep_ms", 500)
        self.assertTrue(f.cancel())
        with self.assertRaises(concurrent.futures.CancelledError):
            f.result()
        for b in blockers:
            b.result(20)
        wait_for(lambda: self.client.unfinished == 0, what="the cancelled task's outcome")

    def test_bad_arguments_are_refused_before_sending(self):
        c = self.client
        with self.assertRaises(ValueError):
            c.submit("")
        with self.assertRaises(ValueError):
            c.submit("echo", 1, max_attempts=0)
        with self.assertRaises(ValueError):
            c.submit("echo", 1, timeout=0)
        with self.assertRaises(TypeError):
            c.submit("echo", object())
        small = drover.Client(self.fleet.frontend, max_message_bytes=8192)
        with self.assertRaises(ValueError) as e:
            small.submit("echo", b"x" * 8000)
        self.assertIn("arguments too large", str(e.exception))
        self.assertEqual(small.submit("echo", b"x" * 6000).result(10), b"x" * 6000)
        small.close()
        f = c.submit("echo", 1, id="py-named-1")
        with self.assertRaises(ValueError):
            c.submit("echo", 2, id="py-named-1")
        self.assertEqual(f.result(10), 1)
        self.assertEqual(c.submit("echo", 3, id="py-named-1").result(10), 3)  # its id free again

    def test_a_name_or_id_not_utf8_is_refused_before_sending(self):
        c = self.client
        before = [c.submit("echo", i) for i in range(5)]
        with self.assertRaises(ValueError):
            c.submit("ec\udcffho", 1)
        with self.assertRaises(ValueError):
            c.submit("echo", 1, id="x\udcff")
        with self.assertRaises(ValueError):
            list(c.map("ec\udcffho", [1]))
        after = [c.submit("echo", i) for i in range(5, 10)]
        self.assertEqual([f.result(10) for f in before + after], list(range(10)))

    def test_a_forked_child_is_told_its_parents_client_is_not_its_own(self):
        pid = os.fork()
        if pid == 0:
            try:
                self.client.submit("echo", 1)
                os._exit(1)
            except drover.ClientClosed:
                os._exit(0)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertEqual(self.client.submit("echo", 2).result(10), 2)

    def test_close_from_a_done_callback_cancels_instead_of_waiting_on_itself(self):
        c = drover.Client(self.fleet.frontend, heartbeat=0.2)
        errors = []
        first = c.submit("sleep_ms", 10)
        slow = c.submit("sleep_ms", 5000)

        def close_now(_):
            try:
                c.close()
            except BaseException as e:  # noqa: BLE001: any exception is the failure
                errors.append(e)
        first.add_done_callback(close_now)
        with self.assertRaises(drover.TaskCancelled):
            slow.result(10)
        self.assertEqual(errors, [])
        with self.assertRaises(drover.ClientClosed):
            c.submit("echo", 1)

    def test_a_timeout_that_is_no_number_of_seconds_is_refused_clearly(self):
        for bad in (float("nan"), float("inf"), 0, -1, 1e12):
            with self.assertRaisesRegex(ValueError, "timeout must be"):
                self.client.submit("echo", 1, timeout=bad)

    def test_close_waits_then_refuses_new_tasks(self):
        c = drover.Client(self.fleet.frontend)
        futures = [c.submit("sleep_ms", 50) for _ in range(10)]
        c.close()
        self.assertEqual([f.result(0) for f in futures], [50] * 10)
        with self.assertRaises(drover.ClientClosed):
            c.submit("echo", 1)
        c.close()  # twice is fine

    def test_closing_with_cancel_ends_every_task(self):
        c = drover.Client(self.fleet.frontend)
        futures = [c.submit("sleep_ms", 2000) for _ in range(10)]
        start = time.monotonic()
        c.close(cancel=True)
        self.assertLess(time.monotonic() - start, 5)
        for f in futures:
            with self.assertRaises(drover.TaskCancelled):
                f.result(0)

    def test_context_manager_cancels_when_the_block_raises(self):
        with self.assertRaises(KeyError):
            with drover.Client(self.fleet.frontend) as c:
                f = c.submit("sleep_ms", 3000)
                raise KeyError("out")
        with self.assertRaises(drover.TaskCancelled):
            f.result(5)

    def test_status_is_the_brokers_reply(self):
        self.client.submit("echo", 1).result(10)
        st = self.client.status()
        self.assertIn("workers", st)
        self.assertGreaterEqual(len(st["workers"]), 1)


class NoBrokerTest(unittest.TestCase):
    def test_no_broker_raises_after_connect_timeout(self):
        start = time.monotonic()
        with self.assertRaises(drover.BrokerUnavailable) as e:
            drover.Client("tcp://127.0.0.1:1", connect_timeout=0.5)
        self.assertLess(time.monotonic() - start, 3)
        self.assertIn("no broker answered", str(e.exception))

    def test_without_connect_timeout_tasks_wait_and_close_ends_them(self):
        c = drover.Client("tcp://127.0.0.1:1", connect_timeout=None, heartbeat=0.1)
        f = c.submit("echo", 1)
        with self.assertRaises(concurrent.futures.TimeoutError):
            f.result(0.5)
        self.assertFalse(c.connected())
        with self.assertRaises(drover.BrokerUnavailable):
            c.status(timeout=0.2)
        start = time.monotonic()
        c.close(cancel=True)
        self.assertLess(time.monotonic() - start, 3)
        with self.assertRaises(drover.TaskCancelled):
            f.result(0)

    def test_the_sink_address_given_to_workers(self):
        for bind, advertise, expect in (("tcp://0.0.0.0:*", None, r"tcp://127\.0\.0\.1:\d+$"),
                                        ("tcp://127.0.0.1:*", "10.9.8.7", r"tcp://10\.9\.8\.7:\d+$"),
                                        (None, "tcp://sink.example:7000", r"tcp://sink\.example:7000$")):
            c = drover.Client("tcp://127.0.0.1:1", connect_timeout=None, sink_bind=bind, advertise=advertise)
            try:
                self.assertRegex(c.reply_to, expect)
            finally:
                c.close(cancel=True)
        c = drover.Client("tcp://127.0.0.1:1", connect_timeout=None)
        try:
            with self.assertRaises(OSError) as e:
                drover.Client("tcp://127.0.0.1:1", connect_timeout=None, sink_bind=c.reply_to)
            self.assertIn("cannot bind the sink", str(e.exception))
        finally:
            c.close(cancel=True)

    def test_a_bad_broker_address_is_refused(self):
        with self.assertRaises(ValueError):
            drover.Client("http://example.com")


if __name__ == "__main__":
    unittest.main()
