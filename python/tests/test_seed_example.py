"""examples/python/seed.py runs its four ways and prints their table (small tasks: a smoke test, not a timing)."""

import os
import re
import subprocess
import sys
import unittest
from pathlib import Path

from harness import BIN, program

SEED = Path(__file__).resolve().parents[2] / "examples" / "python" / "seed.py"


class SeedExampleTest(unittest.TestCase):
    def test_every_way_gives_eight_sums_and_a_speed_up(self):
        program("drover-broker")
        env = dict(os.environ, DROVER_BIN=str(BIN))
        r = subprocess.run([sys.executable, str(SEED), "--n", "20000"], capture_output=True, text=True, env=env,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        ways = re.findall(r"^(.+): \[([\d, ]+)\]$", r.stdout, re.M)
        self.assertEqual([w for w, _ in ways], ["plain loop", "8 threading.Threads", "multiprocessing.Pool(2)",
                                                "drover, processes pool of 2"], r.stdout)
        for way, sums in ways:
            values = [int(x) for x in sums.split(",")]
            self.assertEqual(len(values), 8, way)
            self.assertTrue(all(20000 <= v <= 2_000_000 for v in values), (way, values))
        table = re.findall(r"^(.+?)\s+(\d+\.\d\d)\s+(\d+\.\d\d)$", r.stdout, re.M)
        self.assertEqual(len(table), 4, r.stdout)
        self.assertEqual(table[0][2], "1.00")


if __name__ == "__main__":
    unittest.main()
