"""python -m drover submit|map against drover-producer: the same lines in, the same lines out."""

import json
import os
import re
import subprocess
import sys
import time
import unittest

from harness import PYTHON_DIR, Fleet, program

TASK_LINES = "\n".join([
    '{"task":"echo","args":[1]}',
    '{"task":"echo","args":[1],"id":"a"}',
    'bad',
    '{"task":"echo","max_attempt":1}',
    '',
    '{"task":"fail","args":["boom"],"id":7}',
    '{"task":"echo","args":{"b":1,"a":[1.5,null,true]},"id":{"k":[1]}}',
    '{"task":"echo","args":[1e3, 2.5, -0.0, 18446744073709551616]}',
    '[1]',
    '{"task":""}',
    '{"task":"echo","timeout_ms":1.0}',
    '{"task":"echo","max_attempts":0}',
    '{"task":"echo","retry_on_error":1}',
    '{"task":"echo","args":["\\u00e9\\u0001"]}',
    '{"task":"no_such_task","args":[]}',
    '{"task":"echo","args":[' + "[" * 300 + "]" * 300 + "]}",
]) + "\n"


def normalized(lines: str) -> list[str]:
    """Result lines without what differs from run to run (times, workers, own ids, parser messages)."""
    out = []
    for line in lines.splitlines():
        d = json.loads(line)
        if "elapsed_ms" in d:
            d["elapsed_ms"] = type(d["elapsed_ms"]).__name__
        if d.get("worker"):
            d["worker"] = "W"
        if isinstance(d.get("id"), str) and "." in d["id"]:
            d["id"] = "OWN"
        if d.get("error", "").startswith("invalid JSON"):
            d["error"] = "invalid JSON"
        out.append(json.dumps(d, sort_keys=True))
    return sorted(out)


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fleet = Fleet()
        cls.fleet.cpp_worker(pool="threads", concurrency=2)
        cls.env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR))

    @classmethod
    def tearDownClass(cls):
        cls.fleet.stop()

    def py(self, *args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "drover", *args], input=stdin, capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def cpp(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([program("drover-producer"), *args], input=stdin, capture_output=True, text=True,
                              timeout=60)

    def test_submit_prints_what_drover_producer_prints(self):
        py = self.py("submit", "--broker", self.fleet.frontend, stdin=TASK_LINES)
        cpp = self.cpp("submit", "--broker", self.fleet.frontend, stdin=TASK_LINES)
        self.assertEqual((py.returncode, cpp.returncode), (1, 1))
        self.assertEqual(normalized(py.stdout), normalized(cpp.stdout))
        self.assertEqual(len(py.stdout.splitlines()), 15)
        self.assertIn('line 4: unknown field "max_attempt"', py.stderr)

    def test_submit_exits_0_when_all_ok_and_applies_flags(self):
        lines = "".join(json.dumps({"task": "sleep_ms", "args": [n], "id": n}) + "\n" for n in (0, 1, 500))
        r = self.py("submit", "--broker", self.fleet.frontend, "--timeout-ms", "200", "--max-attempts", "1",
                    "--timing", stdin=lines)
        self.assertEqual(r.returncode, 1)
        by_id = {d["id"]: d for d in map(json.loads, r.stdout.splitlines())}
        self.assertEqual((by_id[0]["status"], by_id[1]["status"], by_id[500]["status"]), ("ok", "ok", "timeout"))
        self.assertRegex(r.stderr, r"timing: tasks=3 wall_ms=")
        r = self.py("submit", "--broker", self.fleet.frontend, stdin=lines.replace("500", "2"))
        self.assertEqual((r.returncode, len(r.stdout.splitlines())), (0, 3))

    def test_map_prints_what_drover_producer_prints(self):
        words = ["echo", "1", "[2]", '"3"', '{"a":1}', "abc", "[1e3]", "[1.5e3,2.0]", "-5", "é"]
        py = self.py("map", "--broker", self.fleet.frontend, *words)
        cpp = self.cpp("map", "--broker", self.fleet.frontend, *words)
        self.assertEqual((py.returncode, py.stdout), (cpp.returncode, cpp.stdout))
        stdin = "a b\n\n\"x y\"\nun'term\n5\n"
        py = self.py("map", "--broker", self.fleet.frontend, "echo", "-", stdin=stdin)
        cpp = self.cpp("map", "--broker", self.fleet.frontend, "echo", "-", stdin=stdin)
        self.assertEqual((py.returncode, py.stdout), (1, cpp.stdout))
        self.assertEqual(py.stderr.replace("drover: ", ""), cpp.stderr.replace("drover-producer: ", ""))

    def test_map_keeps_order_over_many_tasks(self):
        n = 3000
        r = self.py("map", "--broker", self.fleet.frontend, "--window", "100", "sleep_ms", "-",
                    stdin="".join(f"{i % 3}\n" for i in range(n)))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), [f'{i % 3}' for i in range(n)])

    def test_map_halts_on_error(self):
        r = self.py("map", "--broker", self.fleet.frontend, "--halt-on-error", "fail", *["x"] * 5)
        self.assertEqual(r.returncode, 1)
        self.assertIn("--halt-on-error: stopped submitting", r.stderr)
        self.assertIn("null", r.stdout)

    def test_usage_errors_exit_2(self):
        self.assertEqual(self.py("submit", "--help").returncode, 0)
        self.assertIn("--broker", self.py("map", "--help").stdout)
        for args in (["submit", "--no-such-flag"], ["map"], ["map", "echo", "[1"], ["map", "echo", "--x"],
                     ["submit", "--broker", "http://x"], ["map", "echo", "1", "--args-from", "/nonexistent"]):
            r = self.py(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertTrue(r.stderr.strip(), args)
        self.assertEqual(self.py("frobnicate").returncode, 2)

    def test_no_broker_exits_1_with_a_reason(self):
        start = time.monotonic()
        r = self.py("map", "--broker", "tcp://127.0.0.1:1", "--connect-timeout-ms", "500", "echo", "1")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"no broker answered at tcp://127\.0\.0\.1:1 in 500 ms")
        self.assertLess(time.monotonic() - start, 10)

    def test_version_names_the_protocol(self):
        r = self.py("submit", "--version")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(re.search(r"protocol 4", r.stdout), r.stdout)


if __name__ == "__main__":
    unittest.main()
