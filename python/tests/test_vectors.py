"""The golden vectors of docs/protocol.md (tests/vectors/protocol.json, made by
the C++ encoders): this package reads each one as C++ wrote it, and writes the
same bytes again."""

import json
import os
import unittest
from pathlib import Path

from drover import _wire as w

SOURCE = Path(os.environ.get("DROVER_SOURCE", Path(__file__).resolve().parents[2]))
VECTORS = json.loads((SOURCE / "tests" / "vectors" / "protocol.json").read_text())


def from_json(v):
    """A vector's body as msgpack-python decodes it: {"bin": hex} is bytes."""
    if isinstance(v, dict):
        if list(v) == ["bin"]:
            return bytes.fromhex(v["bin"])
        return {k: from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


def encode_again(command: w.Command, body: bytes) -> bytes:
    """The body decoded by this package's typed decoder and encoded by its encoder."""
    d = w.unpack(body)
    if command in (w.Command.SUBMIT, w.Command.DISPATCH):
        return w.encode_tasks(w.decode_tasks(body))
    if command == w.Command.RESULT:
        return w.encode_results(w.decode_results(body))
    if command == w.Command.HELLO:
        return w.encode_hello(**d)
    if command == w.Command.READY:
        return w.encode_ready(d["credits"], d.get("starts", 0), d.get("run_ns"))
    if command == w.Command.HEARTBEAT:
        return w.encode_heartbeat(instance=d.get("instance"), held=d.get("held"))
    if command in (w.Command.BYE, w.Command.RETRY, w.Command.RETURN, w.Command.ACCEPTED, w.Command.SETTLED,
                   w.Command.CANCEL):
        return w.encode_ids(w.decode_ids(body))
    if command == w.Command.LOST:
        return w.encode_lost(d["worker"], d.get("key", b""))
    if command == w.Command.REJECTED:
        return w.encode_rejected(*w.decode_rejected(body))
    if command == w.Command.SETTLE:
        proofs = d.get("proofs", b"")
        return w.encode_settle(d["ids"], d["timed_out"],
                               [int.from_bytes(proofs[i:i + 8], "little") for i in range(0, len(proofs), 8)])
    if command == w.Command.ERROR:
        return w.encode_error(d["reason"], d["detail"], d.get("command"))
    return w.pack(d)


class GoldenVectorsTest(unittest.TestCase):
    def test_there_is_a_vector_for_every_command(self):
        seen = {m["command"] for m in VECTORS["messages"]}
        missing = {c.name for c in w.Command} - seen - {"STATUS_REPLY"}
        self.assertEqual(missing, set())

    def test_each_message_decodes_to_its_body_and_encodes_to_the_same_bytes(self):
        for m in VECTORS["messages"]:
            with self.subTest(m["name"]):
                frames = [bytes.fromhex(f) for f in m["frames"]]
                command = w.parse_header(frames[0])
                self.assertEqual(command.name, m["command"])
                if len(frames) == 1:
                    self.assertIsNone(m["body"])
                    self.assertEqual(w.unpack(b""), {})
                    continue
                self.assertEqual(w.unpack(frames[1]), from_json(m["body"]))
                self.assertEqual(encode_again(command, frames[1]).hex(), frames[1].hex())

    def test_proofs_match_the_cpp_ones(self):
        for p in VECTORS["proofs"]:
            with self.subTest(p["id"]):
                secret = w.task_secret(bytes.fromhex(p["sink_key"]), p["id"])
                self.assertEqual(secret.hex(), p["task_secret"])
                self.assertEqual(w.attempt_token(secret, p["attempt"]), p["attempt_token"])
                self.assertEqual(w.broker_token(secret, p["attempt"]), p["broker_token"])
                self.assertEqual(w.settle_proof(secret), p["settle_proof"])


if __name__ == "__main__":
    unittest.main()
