"""A Python worker whose broker is a raw ROUTER socket of the test: the registration it
sends, and messages no broker should send (garbage, wrong types, deep nesting, more
tasks than credits) that must never stop it."""

import time
import unittest

import msgpack
import zmq

from drover import Security, _wire as w
from harness import Fleet

TASK_NAMES = sorted(["add", "compute", "crash", "echo", "fail", "fail_times", "fork_and_sleep", "mark_and_sleep", "pid",
                     "sleep_ms", "unpackable"])


class FakeBroker:
    """A ROUTER the worker connects to as its broker, and a PULL sink for the outcomes."""

    def __init__(self, security: Security | None = None):
        """With `security` (the fleet's broker keys) both sockets are CURVE servers, and
        sink_endpoint names the sink's key ("?curve=KEY") as a producer's reply_to does."""
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.sink = self.ctx.socket(zmq.PULL)
        self.sink.linger = 0
        key = ""
        if security:  # no ZAP handler: every client with the server's key gets in
            security.server(self.router)
            public, secret = zmq.curve_keypair()
            self.sink.curve_secretkey, self.sink.curve_publickey, self.sink.curve_server = secret, public, True
            key = "?curve=" + public.decode()
        self.router.bind("tcp://127.0.0.1:*")
        self.endpoint = self.router.last_endpoint.decode()
        self.sink.bind("tcp://127.0.0.1:*")
        self.sink_endpoint = self.sink.last_endpoint.decode() + key
        self.seen: list[tuple[bytes, w.Command, bytes]] = []

    def close(self):
        self.router.close()
        self.sink.close()
        self.ctx.term()

    def expect(self, command: w.Command, timeout: float = 5.0, after: int = 0) -> tuple[bytes, bytes]:
        """(identity, body) of the first `command` the worker sent, from message `after` on."""
        end = time.monotonic() + timeout
        while True:
            for ident, c, body in self.seen[after:]:
                if c == command:
                    return ident, body
            left = end - time.monotonic()
            if left <= 0 or not self.router.poll(left * 1000):
                raise AssertionError(f"no {command.name} from the worker in {timeout} s; saw "
                                     f"{[c.name for _, c, _ in self.seen[after:]]}")
            frames = self.router.recv_multipart()
            self.seen.append((frames[0], w.parse_header(frames[1]), frames[2] if len(frames) > 2 else b""))

    def wait_seen(self, predicate, timeout: float = 5.0, what: str = "a message") -> tuple[bytes, w.Command, bytes]:
        """The first message seen (ident, command, body) for which predicate(command, body) holds."""
        end = time.monotonic() + timeout
        checked = 0
        while True:
            for m in self.seen[checked:]:
                if predicate(m[1], m[2]):
                    return m
            checked = len(self.seen)
            left = end - time.monotonic()
            if left <= 0 or not self.router.poll(left * 1000):
                raise AssertionError(f"no {what} from the worker in {timeout} s")
            frames = self.router.recv_multipart()
            self.seen.append((frames[0], w.parse_header(frames[1]), frames[2] if len(frames) > 2 else b""))

    def send(self, ident: bytes, *frames: bytes) -> None:
        self.router.send_multipart([ident, *frames])

    def dispatch(self, ident: bytes, tasks: list[w.Task]) -> None:
        self.send(ident, w.header(w.Command.DISPATCH), w.encode_tasks(tasks))

    def outcomes(self, n: int, timeout: float = 10.0) -> dict[str, w.Outcome]:
        out = {}
        end = time.monotonic() + timeout
        while len(out) < n:
            left = end - time.monotonic()
            if left <= 0 or not self.sink.poll(left * 1000):
                raise AssertionError(f"{len(out)} outcomes of {n} reached the sink: {sorted(out)}")
            header, body = self.sink.recv_multipart()
            self.assert_result(header)
            for o in w.decode_results(body):
                out[o.id] = o
        return out

    @staticmethod
    def assert_result(header: bytes) -> None:
        assert w.parse_header(header) == w.Command.RESULT


class HostileBrokerTest(unittest.TestCase):
    HEARTBEAT = 1.0  # s: this broker sends no heartbeats, so a window of silence is 3 s
    SECURE = False

    def setUp(self):
        self.fleet = Fleet(heartbeat_ms=int(self.HEARTBEAT * 1000), secure=self.SECURE)
        self.addCleanup(self.fleet.stop)
        self.broker = FakeBroker(Security.from_fleet(self.fleet.security_dir, "broker") if self.SECURE else None)
        self.addCleanup(self.broker.close)
        self.fleet.backend = self.broker.endpoint
        self.worker = self.fleet.python_worker("worker_tasks", pool="threads", concurrency=2)
        self.ident, body = self.broker.expect(w.Command.HELLO, timeout=15)
        self.hello = w.unpack(body)

    def task(self, id, name="add", args=b"\x92\x01\x02", **kw):
        kw.setdefault("reply_to", self.broker.sink_endpoint)
        return w.Task(id=id, name=name, args=args, attempt=1, token=0x1234_5678_9ABC_DEF0, **kw)

    def assertAlive(self):
        self.assertIsNone(self.worker.poll(), self.fleet.log_of(self.worker))

    def test_hello_and_first_credits_say_what_the_spec_asks(self):
        h = self.hello
        self.assertEqual((h["pool"], h["slots"], h["tasks"], h["restarts"]), ("threads", 2, TASK_NAMES, 0))
        self.assertEqual((h["pid"], h["worker"]), (self.worker.pid, f"{h['host']}:{self.worker.pid}"))
        self.assertEqual(h["max_message_bytes"], 16 * 1024 * 1024)
        self.assertNotIn("held", h)
        _, ready = self.broker.expect(w.Command.READY)
        r = w.unpack(ready)
        self.assertEqual(r["starts"], 2)  # a start credit a free slot
        self.assertGreaterEqual(r["credits"], 2)

    def test_outcomes_carry_the_token_and_a_run_time_follows(self):
        self.broker.dispatch(self.ident, [self.task("a"), self.task("b", args=w.pack([5, 6]), start=True)])
        out = self.broker.outcomes(2)
        self.assertEqual((out["a"].status, msgpack.unpackb(out["a"].result)), ("ok", 3))
        self.assertEqual((out["b"].token, out["b"].attempt, out["b"].task), (0x1234_5678_9ABC_DEF0, 1, "add"))
        _, _, ready = self.broker.wait_seen(lambda c, b: c == w.Command.READY and "run_ns" in w.unpack(b),
                                            what="a READY telling the new name's run time")
        self.assertEqual(list(w.unpack(ready)["run_ns"]), ["add"])
        _, _, body = self.broker.wait_seen(lambda c, b: c == w.Command.HEARTBEAT, what="a HEARTBEAT")
        self.assertEqual(w.unpack(body), {"held": 0})  # said even when 0: the broker's recovery needs it

    def test_garbage_never_stops_the_worker(self):
        b, i = self.broker, self.ident
        dispatch = w.header(w.Command.DISPATCH)
        for frames in ([b"garbage"], [dispatch, b"\xc1"], [dispatch, b"\x91" * 200_000 + b"\x01"],
                       [dispatch, w.pack({"tasks": "x"})], [dispatch, w.pack({"tasks": [{"id": 5, "name": "add"}]})],
                       [dispatch, w.pack({"tasks": [{"id": "a", "name": "add", "attempt": -1}]})],
                       [dispatch, b"\x81\x91\x01\x01"], [dispatch, b"\x81\xa5tasks\x91\x81\x80\x01"],
                       [dispatch, b"x", b"y"], [b"DRV3\x03", b"\x80"], [b"DRV4\x66", b"\x80"],
                       [w.header(w.Command.SUBMIT), b"\x80"], [w.header(w.Command.HEARTBEAT), b"\xc1"],
                       [w.header(w.Command.ERROR), w.encode_error("wrong_version", "test", 3)],
                       [w.header(w.Command.ERROR), b"\xc1"], [dispatch, w.pack({"tasks": []})]):
            b.send(i, *frames)
        # An unreadable DISPATCH took credits nothing gives back: the worker registers again.
        b.expect(w.Command.HELLO, after=1)
        self.assertAlive()
        log = self.fleet.log_of(self.worker)
        self.assertIn("an unreadable DISPATCH", log)
        self.assertIn("worker.refused_by_broker reason='wrong_version'", log)
        self.assertEqual(log.count("reason=wrong_version detail"), 1, log)  # DRV3: logged once

    def test_bad_tasks_end_as_errors_or_come_back(self):
        deep = b"\x91" * 100_000 + b"\x01"
        self.broker.dispatch(self.ident, [
            self.task("junk", args=b"\xc1"), self.task("deep", name="echo", args=deep),
            self.task("trailing", args=b"\x92\x01\x02\x03"), self.task("nameless", name="no_such_task"),
            self.task("keys", name="echo", args=b"\x81\x91\x01\x01"), self.task("nowhere", reply_to="garbage://x"),
            self.task("empty", reply_to=""), self.task("fine"), self.task("not utf-8 \udcff", name="echo\udcff")])
        out = self.broker.outcomes(7)
        self.assertEqual(out["not utf-8 \udcff"].error, "unknown task 'echo\udcff'")  # the same bytes back
        self.assertEqual(out["fine"].status, "ok")
        self.assertIn("arguments are not valid msgpack", out["junk"].error)
        self.assertIn("arguments are not valid msgpack", out["deep"].error)
        self.assertEqual(out["trailing"].error, "arguments have trailing bytes")
        self.assertEqual(out["nameless"].error, "unknown task 'no_such_task'")
        self.assertIn("arguments are not valid msgpack", out["keys"].error)
        # A sink it cannot connect to: the task goes back to the broker to run again.
        retried = set()
        self.broker.wait_seen(lambda c, b: c == w.Command.RETRY and retried.update(w.decode_ids(b)) is None and
                              retried == {"nowhere", "empty"}, what="RETRY of the tasks without a usable sink")
        self.assertAlive()

    def test_more_tasks_than_any_credit_are_refused_whole(self):
        many = [w.Task(id=str(k), name="add") for k in range(120_000)]
        self.broker.dispatch(self.ident, many)
        n = len(self.broker.seen)
        self.broker.expect(w.Command.HELLO, after=n, timeout=10)
        self.assertIn("over_credits", self.fleet.log_of(self.worker))
        self.broker.dispatch(self.broker.seen[-1][0], [self.task("after")])
        self.assertEqual(self.broker.outcomes(1)["after"].status, "ok")
        self.assertAlive()

    def test_reset_bye_and_silence_make_it_register_again(self):
        b = self.broker
        b.send(self.ident, w.header(w.Command.RESET))
        new_ident, body = b.expect(w.Command.HELLO, after=len(b.seen))
        self.assertNotEqual(new_ident, self.ident)  # a fresh connection
        self.assertNotIn("held", w.unpack(body))
        # A task it holds is counted in the next registration's `held`.
        b.dispatch(new_ident, [self.task("slow", name="sleep_ms", args=w.pack([3000]), start=True)])
        time.sleep(0.3)
        b.send(new_ident, w.header(w.Command.RESET))
        _, body = b.expect(w.Command.HELLO, after=len(b.seen))
        self.assertEqual(w.unpack(body)["held"], 1)
        # Silence (this broker answers nothing): it connects again within about a window.
        start = time.monotonic()
        b.expect(w.Command.HELLO, after=len(b.seen), timeout=5)
        self.assertLess(time.monotonic() - start, 3 * self.HEARTBEAT + 1.0)
        self.assertEqual(b.outcomes(1)["slow"].status, "ok")
        self.assertAlive()


class SecureHostileBrokerTest(HostileBrokerTest):
    """The same under CURVE, where a reply_to also names its sink's key."""

    SECURE = True

    def test_sink_keys_that_are_no_keys(self):
        sink = self.broker.sink_endpoint.split("?")[0]
        self.broker.dispatch(self.ident, [
            self.task("bad key", reply_to=sink + "?curve=short"), self.task("odd key", reply_to=sink + "?curve=\udcff"),
            self.task("fine")])
        self.assertEqual(self.broker.outcomes(1)["fine"].status, "ok")
        retried = set()
        self.broker.wait_seen(lambda c, b: c == w.Command.RETRY and retried.update(w.decode_ids(b)) is None and
                              retried == {"bad key", "odd key"}, what="RETRY of the tasks whose sink has no key")
        self.assertAlive()


if __name__ == "__main__":
    unittest.main()
