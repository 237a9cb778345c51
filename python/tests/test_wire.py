"""The codec and the proofs against hand-checked values (the golden vectors are in test_vectors)."""

import unittest

from drover import _wire as w


class WireTest(unittest.TestCase):
    def test_task_round_trip_keeps_fields_and_leaves_defaults_out(self):
        t = w.Task(id="p.1", name="echo", args=w.pack([1]), timeout_ms=500, reply_to="tcp://h:1",
                   secret=w.task_secret(bytes(16), "p.1"))
        body = w.encode_tasks([t])
        self.assertNotIn(b"max_attempts", body)
        self.assertEqual(w.decode_tasks(body), [t])

    def test_batch_reply_to_is_written_once(self):
        ts = [w.Task(id=f"p.{i}", name="n", reply_to="tcp://h:1") for i in range(3)]
        self.assertEqual(w.encode_tasks(ts).count(b"tcp://h:1"), 1)
        ts[1].reply_to = "tcp://other:2"
        self.assertEqual(w.encode_tasks(ts).count(b"tcp://other:2"), 1)
        self.assertEqual([t.reply_to for t in w.decode_tasks(w.encode_tasks(ts))],
                         ["tcp://h:1", "tcp://other:2", "tcp://h:1"])

    def test_header_errors_name_their_reason(self):
        self.assertEqual(w.parse_header(b"DRV4\x10"), w.Command.SUBMIT)
        self.assertEqual(w.parse_header(b"DRV9\x7f"), w.Command.ERROR)
        for frame, reason in ((b"DRV3\x10", "wrong_version"), (b"DRV4\x66", "unknown_command"),
                              (b"HTTP/", "bad_header"), (b"DRV4", "bad_header")):
            with self.assertRaises(w.ProtocolError) as e:
                w.parse_header(frame)
            self.assertEqual(e.exception.reason, reason)

    def test_bad_bodies_raise_protocol_errors(self):
        for body, reason in ((b"\x91\x01", "bad_body"), (b"\x80\x00", "trailing_bytes"), (b"\xc1", "bad_body"),
                             (w.pack({"tasks": [{"id": "a", "name": "n", "attempt": -1}]}), "bad_body"),
                             (w.pack({"reply_to": "x"}), "bad_body")):
            with self.assertRaises(w.ProtocolError) as e:
                w.decode_tasks(body)
            self.assertEqual(e.exception.reason, reason, body)

    def test_tokens_depend_on_secret_attempt_and_domain(self):
        s = w.task_secret(b"k" * 16, "p.1")
        self.assertEqual(len(s), 16)
        self.assertNotEqual(w.attempt_token(s, 1), w.attempt_token(s, 2))
        self.assertNotEqual(w.attempt_token(s, 1), w.broker_token(s, 1))
        o = w.Outcome(id="p.1", attempt=1, worker="w", token=w.attempt_token(s, 1))
        self.assertTrue(w.genuine(s, o))
        o.worker = "broker"
        self.assertFalse(w.genuine(s, o))

    def test_settle_proofs_are_little_endian(self):
        d = w.unpack(w.encode_settle(["a"], 0, [1]))
        self.assertEqual(d["proofs"], b"\x01" + bytes(7))


if __name__ == "__main__":
    unittest.main()
