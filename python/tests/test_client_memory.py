"""One client, a million tasks: its memory stays bounded by its window, not by the tasks run."""

import os
import unittest

import drover
from harness import Fleet


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


class MemoryTest(unittest.TestCase):
    def test_a_million_tasks_in_a_window_stay_bounded(self):
        n, window = 1_000_000, 5000
        with Fleet(heartbeat_ms=1000) as fleet, drover.Client(fleet.frontend, window=window) as c:
            fleet.cpp_worker(pool="threads", concurrency=2)
            self.assertTrue(c.wait_for_workers(1, 10))
            rss = {}
            total = 0
            for i, v in enumerate(c.map("echo", range(n))):
                total += v
                if i in (100_000, n - 1):
                    rss[i] = rss_mib()
                    self.assertLessEqual(c.unfinished, window)
            self.assertEqual(total, n * (n - 1) // 2)
            grown = rss[n - 1] - rss[100_000]
            self.assertLess(grown, 20, f"RSS grew {grown:.1f} MiB from task 100,000 to 1,000,000: {rss}")
            # Futures dropped as they finish: the same bound through submit().
            done = []
            before = rss_mib()
            for i in range(200_000):
                c.submit("echo", i).add_done_callback(lambda f: done.append(1) if len(done) < 1 else None)
            self.assertTrue(c.wait_all(60))
            self.assertLess(rss_mib() - before, 20)
            self.assertEqual(c.stats()["unfinished"], 0)


if __name__ == "__main__":
    unittest.main()
