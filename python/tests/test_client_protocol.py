"""drover.Client against a scripted broker (a ROUTER in the test): the messages it sends, byte for byte
where the protocol fixes them, and what it does with each answer a broker may give."""

import time
import unittest

import msgpack
import zmq

import drover
from drover import _wire
from drover._wire import Command
from test_client_faults import push, result_message


class FakeBroker:
    """A ROUTER the client connects to; the test reads its messages and answers them."""

    def __init__(self, instance: str = "i-1"):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.router_handover = True
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.instance = instance
        self.answer_heartbeats = True
        self.peer = b""
        self.seen: list[tuple] = []

    def close(self):
        self.sock.close()
        self.ctx.term()

    def recv(self, timeout: float = 5.0):
        """The next message other than HEARTBEAT (answered): (command, body dict); None on timeout."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                return None
            frames = self.sock.recv_multipart()
            self.peer = frames[0]
            command = _wire.parse_header(frames[1])
            body = _wire.unpack(frames[2]) if len(frames) > 2 else {}
            self.seen.append((command, body))
            if command == Command.HEARTBEAT:
                if self.answer_heartbeats:
                    self.send(Command.HEARTBEAT, _wire.encode_heartbeat(instance=self.instance))
                continue
            return command, body
        return None

    def expect(self, command: Command, timeout: float = 5.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.recv(end - time.monotonic())
            if got and got[0] == command:
                return got[1]
        raise AssertionError(f"no {command.name} in {timeout} s; seen {[c.name for c, _ in self.seen[-10:]]}")

    def send(self, command: Command, body: bytes = b"", header: bytes | None = None):
        self.sock.send_multipart([self.peer, header or _wire.header(command), body])


def outcome(task: dict, attempt: int = 1, worker: str = "w:1", **fields) -> _wire.Outcome:
    """A genuine outcome of a SUBMITted task (its token made from the secret the client sent)."""
    secret = task["secret"]
    token = _wire.broker_token(secret, attempt) if worker == "broker" else _wire.attempt_token(secret, attempt)
    fields.setdefault("status", "ok")
    return _wire.Outcome(id=task["id"], task=task["name"], attempt=attempt, worker=worker, token=token, **fields)


class ProtocolTest(unittest.TestCase):
    def setUp(self):
        self.broker = FakeBroker()
        self.client = drover.Client(self.broker.endpoint, heartbeat=0.1, liveness=3, connect_timeout=None)

    def tearDown(self):
        self.client.close(wait=False, cancel=True)
        self.broker.close()

    def submitted(self, n: int = 1) -> list[dict]:
        """The next n tasks SUBMITted (in one message or several)."""
        tasks = []
        while len(tasks) < n:
            tasks += self.broker.expect(Command.SUBMIT)["tasks"]
        self.assertEqual(len(tasks), n)
        return tasks

    def test_submit_carries_the_task_and_a_secret_that_proves_its_outcome(self):
        f = self.client.submit("add", 1, "x", timeout=2, max_attempts=5, retry_on_error=True)
        body = self.broker.expect(Command.SUBMIT)
        self.assertEqual(body["reply_to"], self.client.reply_to)
        (t,) = body["tasks"]
        self.assertEqual((t["id"], t["name"], t["args"], t["timeout_ms"], t["max_attempts"], t["retry_on_error"]),
                         (f.id, "add", msgpack.packb([1, "x"]), 2000, 5, True))
        self.assertEqual(len(t["secret"]), 16)
        self.assertNotIn("attempt", t)
        push(self.client.reply_to, result_message([outcome(t, result=_wire.pack({"sum": 3}), elapsed_us=1500)]))
        self.assertEqual(f.result(5), {"sum": 3})
        self.assertEqual((f.attempt, f.worker, f.elapsed), (1, "w:1", 0.0015))
        settle = self.broker.expect(Command.SETTLE)
        self.assertEqual((settle["ids"], settle["timed_out"]), ([f.id], 0))

    def test_duplicates_are_settled_but_delivered_once(self):
        f = self.client.submit("echo", 1)
        (t,) = self.submitted()
        o = outcome(t, result=_wire.pack(1))
        push(self.client.reply_to, result_message([o]), result_message([o, outcome(t, attempt=2, status="error",
                                                                                    error="late")]))
        self.assertEqual(f.result(5), 1)
        ids = []
        while len(ids) < 3:
            ids += self.broker.expect(Command.SETTLE)["ids"]
        self.assertEqual(ids, [f.id] * 3)
        self.assertEqual(self.client.stats()["duplicates"], 2)

    def test_outcomes_made_by_the_broker_carry_its_token(self):
        f, g = self.client.submit("crash"), self.client.submit("sleep_ms", 9)
        t, u = self.submitted(2)
        push(self.client.reply_to, result_message([outcome(t, attempt=3, worker="broker", status="lost",
                                                           error="worker died 3 times"),
                                                   outcome(u, worker="broker", status="timeout", error="slow")]))
        with self.assertRaises(drover.TaskLost) as e:
            f.result(5)
        self.assertEqual((e.exception.attempt, e.exception.worker), (3, "broker"))
        with self.assertRaises(drover.TaskTimeout):
            g.result(5)
        self.assertEqual(self.broker.expect(Command.SETTLE)["timed_out"], 1)

    def test_a_result_relayed_on_the_frontend_is_taken_as_at_the_sink(self):
        f = self.client.submit("echo", 5)
        (t,) = self.submitted()
        self.broker.send(Command.RESULT, _wire.encode_results([outcome(t, result=_wire.pack(5))]))
        self.assertEqual(f.result(5), 5)

    def test_a_new_broker_instance_gets_every_unfinished_task_again(self):
        f, g = self.client.submit("echo", 1), self.client.submit("echo", 2)
        first = self.submitted(2)
        push(self.client.reply_to, result_message([outcome(first[0], result=_wire.pack(1))]))
        self.assertEqual(f.result(5), 1)
        self.broker.instance = "i-2"
        again = self.submitted()
        self.assertEqual(again, [first[1]])  # same id, same secret, same everything
        self.assertFalse(g.done())

    def test_a_silent_broker_is_reconnected_and_given_the_tasks_again(self):
        self.client.submit("echo", 1)
        (t,) = self.submitted()
        self.broker.answer_heartbeats = False
        self.assertEqual(self.submitted(), [t])  # after liveness x heartbeat of silence
        self.assertGreaterEqual(self.client.stats()["reconnects"], 1)

    def test_producer_gone_sends_the_task_again_without_settling(self):
        f = self.client.submit("echo", 1)
        (t,) = self.submitted()
        push(self.client.reply_to, result_message([outcome(t, worker="broker", status="cancelled",
                                                           error=_wire.PRODUCER_GONE)]))
        self.assertEqual(self.submitted(), [t])
        self.assertFalse(f.done())
        self.assertFalse(any(c == Command.SETTLE for c, _ in self.broker.seen))
        self.assertEqual(self.client.stats()["resubmitted"], 1)

    def test_rejected_tasks_fail_with_the_reason(self):
        f, g = self.client.submit("echo", 1), self.client.submit("echo", 2, id="mine")
        self.submitted(2)
        self.broker.send(Command.REJECTED, msgpack.packb({"ids": [f.id], "reason": "invalid: field 'args'"}))
        self.broker.send(Command.REJECTED, msgpack.packb({"ids": ["mine"], "reason": "duplicate_id"}))
        with self.assertRaises(drover.TaskRejected) as e:
            f.result(5)
        self.assertEqual(e.exception.error, "invalid: field 'args'")
        with self.assertRaises(drover.TaskRejected):
            g.result(5)

    def test_queue_full_holds_tasks_back_until_the_broker_makes_room(self):
        futures = [self.client.submit("echo", i) for i in range(3)]
        tasks = self.submitted(3)
        refused = [t["id"] for t in tasks[1:]]
        self.broker.send(Command.REJECTED, msgpack.packb({"ids": refused, "reason": "queue_full"}))
        self.assertIsNone(self.broker.recv(0.3))  # it keeps no more at the broker than the broker took: one
        for i in (0, 1, 2):
            push(self.client.reply_to, result_message([outcome(tasks[i], result=_wire.pack(i))]))
            self.assertEqual(futures[i].result(5), i)
            if i < 2:  # each outcome makes room for the next refused task, in submission order
                self.assertEqual(self.broker.expect(Command.SUBMIT)["tasks"], [tasks[i + 1]])
        self.assertEqual(self.client.stats()["queue_full"], 2)

    def test_an_error_refusing_a_submit_fails_its_tasks(self):
        f = self.client.submit("echo", 1)
        self.submitted()
        self.broker.send(Command.ERROR, _wire.encode_error("bad_body", "field 'tasks': expected an array",
                                                           command=Command.SUBMIT))
        with self.assertRaises(drover.TaskRejected) as e:
            f.result(5)
        self.assertIn("bad_body", e.exception.error)
        self.assertEqual(self.client.submit("echo", 2).id[-1], "2")  # the client goes on

    def test_a_broker_of_another_version_fails_everything(self):
        f = self.client.submit("echo", 1)
        self.submitted()
        body = msgpack.packb({"reason": "wrong_version", "detail": "DRV4", "protocol": "DRV5"})
        self.broker.send(Command.ERROR, body, header=b"DRV5\x7f")
        with self.assertRaises(drover.TaskRejected) as e:
            f.result(5)
        self.assertIn("DRV5", e.exception.error)
        with self.assertRaises(drover.ClientClosed):
            self.client.submit("echo", 2)

    def test_garbage_from_the_broker_is_dropped(self):
        f = self.client.submit("echo", 1)
        (t,) = self.submitted()
        for frames in ([b"x"], [b"DRV4\x12", b"\xc1"], [b"DRV4\x12", msgpack.packb({"ids": "x"})],
                       [b"DRV4\x04", msgpack.packb([1])], [b"DRV3\x10", b""], [b"DRV4\x66", b""]):
            self.broker.sock.send_multipart([self.broker.peer, *frames])
        push(self.client.reply_to, result_message([outcome(t, result=_wire.pack(1))]))
        self.assertEqual(f.result(5), 1)
        self.assertGreaterEqual(self.client.stats()["dropped_broker"], 4)

    def test_cancel_and_close_tell_the_broker(self):
        f = self.client.submit("sleep_ms", 1000)
        (t,) = self.submitted()
        f.cancel()
        self.assertEqual(self.broker.expect(Command.CANCEL)["ids"], [t["id"]])
        g = self.client.submit("sleep_ms", 1000)
        self.submitted()
        self.client.close(cancel=True)
        self.assertEqual(self.broker.expect(Command.CANCEL)["ids"], [t["id"], g.id])
        self.broker.expect(Command.BYE)
        with self.assertRaises(drover.TaskCancelled):
            g.result(0)

    def test_heartbeats_go_every_period(self):
        time.sleep(1.0)
        self.broker.recv(0.1)
        beats = sum(1 for c, _ in self.broker.seen if c == Command.HEARTBEAT)
        self.assertGreaterEqual(beats, 6)
        self.assertLessEqual(beats, 14)


if __name__ == "__main__":
    unittest.main()
