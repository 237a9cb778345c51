"""drover.Client with CurveZMQ (a fleet directory from drover-keygen --fleet), and without."""

import logging
import unittest

import zmq

import drover
from drover import _wire
from harness import Fleet, wait_for
from test_client_faults import push, result_message


class SecureClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fleet = Fleet(secure=True)
        cls.fleet.cpp_worker(pool="threads", concurrency=2)

    @classmethod
    def tearDownClass(cls):
        cls.fleet.stop()

    def test_tasks_run_with_the_fleets_keys(self):
        with drover.Client(self.fleet.frontend, security=self.fleet.security_dir) as c:
            self.assertIn("?curve=", c.reply_to)
            self.assertEqual(c.submit("echo", "secret").result(20), "secret")
            self.assertEqual(list(c.map("echo", range(2000))), list(range(2000)))
            with self.assertRaises(drover.TaskFailed):  # the broker's own outcomes reach the sink too
                c.submit("no_such_task").result(20)
            self.assertIn("workers", c.status())

    def test_the_sink_admits_no_stranger(self):
        with drover.Client(self.fleet.frontend, security=self.fleet.security_dir) as c:
            f = c.submit("sleep_ms", 300)
            public, secret = zmq.curve_keypair()
            forged = _wire.Outcome(id=f.id, status="ok", result=_wire.pack(666), attempt=1, token=1)
            with self.assertLogs("drover.client", logging.WARNING) as logs:
                push(c.reply_to, result_message([forged]),
                     curve={"curve_serverkey": c.reply_to.split("?curve=")[1].encode(), "curve_publickey": public,
                            "curve_secretkey": secret})
                wait_for(lambda: any("security.rejected" in m for m in logs.output), what="the refused key's log")
            self.assertEqual(f.result(20), 300)
            self.assertEqual(c.stats().get("forged", 0), 0)  # it never got in

    def test_a_client_without_keys_finds_no_broker(self):
        with self.assertRaises(drover.BrokerUnavailable):
            drover.Client(self.fleet.frontend, connect_timeout=1.0)

    def test_a_missing_fleet_directory_is_a_security_error(self):
        with self.assertRaises(drover.SecurityError):
            drover.Client(self.fleet.frontend, security="/nonexistent/fleet")


class PlainClientTest(unittest.TestCase):
    def test_without_security_reply_to_carries_no_key(self):
        with Fleet() as fleet, drover.Client(fleet.frontend) as c:
            fleet.cpp_worker()
            self.assertNotIn("?curve=", c.reply_to)
            self.assertEqual(c.submit("echo", 7).result(20), 7)


if __name__ == "__main__":
    unittest.main()
