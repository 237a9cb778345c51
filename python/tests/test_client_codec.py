"""The producer's fast codec (Prover, TaskEncoder) against the reference functions of _wire."""

import os
import random
import unittest

from drover import _wire as w


class ProverTest(unittest.TestCase):
    def test_secrets_and_tokens_equal_the_reference(self):
        key = os.urandom(16)
        p = w.Prover(key)
        for task_id in ("a", "p.1", "0123456789abcdef.ffff", "é-ü", "x" * 300, "\udcff"):
            s = p.secret(task_id)
            self.assertEqual(s, w.task_secret(key, task_id))
            for attempt in (0, 1, 2, 255, 256, 70000, 2**32 - 1):
                self.assertEqual(p.token(s, False, attempt), w.attempt_token(s, attempt))
                self.assertEqual(p.token(s, True, attempt), w.broker_token(s, attempt))

    def test_token_refuses_attempts_past_uint32(self):
        p = w.Prover(bytes(16))
        for bad in (-1, 2**32):
            with self.assertRaises((OverflowError, ValueError)):
                p.token(bytes(16), False, bad)

    def test_sink_key_must_be_16_bytes(self):
        with self.assertRaises(ValueError):
            w.Prover(b"short")


class TaskEncoderTest(unittest.TestCase):
    def test_submit_bodies_equal_encode_tasks(self):
        rng = random.Random(7)
        enc = w.TaskEncoder()
        for n in (1, 15, 16, 17, 1000, 70000):
            tasks, items = [], []
            for i in range(n):
                args = rng.choice([b"", w.pack([i]), w.pack(["x" * rng.randrange(300)])])
                t = w.Task(id=f"s.{i:x}", name=rng.choice(["echo", "n" * 40]), args=args,
                           max_attempts=rng.choice([1, 3, 7, 300]), timeout_ms=rng.choice([0, 5, 70000]),
                           retry_on_error=rng.random() < 0.5, reply_to="tcp://10.0.0.1:4000", secret=os.urandom(16))
                tasks.append(t)
                items.append(enc.task(t.id, t.name, t.args, t.secret, t.max_attempts, t.timeout_ms,
                                      t.retry_on_error))
            body = enc.submit(items, "tcp://10.0.0.1:4000")
            self.assertEqual(body, w.encode_tasks(tasks), n)
            self.assertEqual(w.decode_tasks(body), tasks)


if __name__ == "__main__":
    unittest.main()
