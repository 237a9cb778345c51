"""The Python worker's parts without a network: arguments, errors, credits, run times, the CLI's lookup."""

import types
import unittest

import msgpack

import drover
from drover import _cli_worker, _worker_loop as loop
from drover._stall import StallMeter
from drover.worker import ArgumentError, TaskFunction, describe_error


def pack(v):
    return msgpack.packb(v, use_bin_type=True)


class ArgumentsTest(unittest.TestCase):
    def test_an_array_is_one_argument_an_item_a_single_value_one_and_nil_or_nothing_none(self):
        f = TaskFunction("f", lambda *a: a)
        self.assertEqual(f.arguments(pack([1, "x"])), [1, "x"])
        self.assertEqual(f.arguments(pack("x")), ["x"])
        self.assertEqual(f.arguments(pack({"a": 1})), [{"a": 1}])
        self.assertEqual(f.arguments(b""), [])
        self.assertEqual(f.arguments(pack(None)), [])
        self.assertEqual(f.arguments(pack([None])), [None])

    def test_counts_are_checked_against_the_signature(self):
        def two(a, b, c=3):
            return a + b + c

        f = TaskFunction("two", two)
        self.assertEqual(msgpack.unpackb(f.call(pack([1, 2]))), 6)
        for args, message in ((pack([1]), "expected 2 to 3 arguments, got 1"),
                              (pack([1, 2, 3, 4]), "expected 2 to 3 arguments, got 4")):
            with self.assertRaises(ArgumentError) as e:
                f.call(args)
            self.assertEqual(str(e.exception), message)
        with self.assertRaises(ArgumentError) as e:
            TaskFunction("one", lambda x: x).call(b"")
        self.assertEqual(str(e.exception), "expected 1 argument, got 0")

    def test_annotated_numbers_and_booleans_read_strings(self):
        def typed(i: int, f: float, b: bool, s: str):
            return [i, f, b, s]

        f = TaskFunction("typed", typed)
        self.assertEqual(msgpack.unpackb(f.call(pack(["1e3", "-1.5", "true", "7"]))), [1000, -1.5, True, "7"])
        self.assertEqual(msgpack.unpackb(f.call(pack([4, 2.5, False, "x"]))), [4, 2.5, False, "x"])
        for args, message in (([" 1.5", "1", "true", ""], 'argument 1: expected an integer, got " 1.5"'),
                              (["1", "x", "true", ""], 'argument 2: expected a number, got "x"'),
                              (["1", "1", "yes", ""], 'argument 3: expected a boolean, got "yes"')):
            with self.assertRaises(ArgumentError) as e:
                f.call(pack(args))
            self.assertEqual(str(e.exception), message)

    def test_unusable_arguments_and_results_are_task_errors(self):
        f = TaskFunction("echo", lambda *a: a[0] if a else None)
        for args, text in ((b"\xc1", "not valid msgpack"), (b"\x91\x01\x02", "trailing bytes"),
                           (b"\x91" * 5000 + b"\x01", "not valid msgpack"), (b"\x81\x91\x01\x01", "not valid msgpack")):
            with self.assertRaises(ArgumentError) as e:
                f.call(args)
            self.assertIn(text, str(e.exception))
        with self.assertRaises(ArgumentError) as e:
            TaskFunction("o", lambda: object()).call(b"")
        self.assertIn("result of type object cannot be packed", str(e.exception))

    def test_errors_name_the_exception_type(self):
        self.assertEqual(describe_error(ValueError("bad")), "ValueError: bad")
        self.assertEqual(describe_error(KeyError("k")), "KeyError: 'k'")
        self.assertEqual(describe_error(RuntimeError()), "RuntimeError")
        self.assertEqual(describe_error(ArgumentError("expected 1 argument, got 0")), "expected 1 argument, got 0")


class CreditsTest(unittest.TestCase):
    def test_a_credit_and_a_start_credit_a_slot_then_one_back_a_task(self):
        c = loop.Credits(slots=2)
        self.assertEqual(c.top_up(), (3, 2))  # the slots, a prefetch of 1, a start credit each free slot
        c.sent(3, 2)
        self.assertEqual(c.top_up(), (0, 0))
        c.received(2, on_starts=2)
        self.assertEqual(c.top_up(), (0, 0))
        c.add_runs(1, 10**9)
        c.done(1)
        self.assertEqual(c.top_up(), (1, 1))  # a slot freed, and the broker holds no start credit for it

    def test_short_tasks_grow_the_prefetch_long_ones_drop_it(self):
        c = loop.Credits(slots=2)
        c.add_runs(100, 100 * 10_000)  # 10 us a task
        self.assertEqual(c.target(), 2 + min(2_000_000 * 2 // 10_000, 4 * 100))
        long = loop.Credits(slots=2)
        long.add_runs(4, 4 * 10**9)
        self.assertEqual(long.target(), 2)

    def test_a_new_registration_forgets_the_credits_not_the_tasks(self):
        c = loop.Credits(slots=1)
        c.sent(2, 1)
        c.received(1, on_starts=1)
        c.forgot()
        self.assertEqual((c.promised, c.outstanding, c.starts_out), (1, 1, 0))

    def test_a_fixed_prefetch(self):
        c = loop.Credits(slots=1, prefetch=0)
        self.assertEqual(c.top_up(), (1, 1))


class TaskTimesTest(unittest.TestCase):
    def test_told_when_new_or_four_times_off(self):
        t = loop.TaskTimes()
        t.add("a", 1000)
        self.assertEqual(t.take_due(), {"a": 1000})
        t.add("a", 3000)
        self.assertEqual(t.take_due(), {})
        t.add("a", 5000)
        self.assertEqual(t.take_due(), {"a": 5000})
        t.forget_told()
        self.assertEqual(t.take_due(), {"a": 5000})


class StallTest(unittest.TestCase):
    """StallMeter, and Runner._check_stall on a stand-in: the time of a turn that its wait does not explain."""

    def runner(self, now):
        return types.SimpleNamespace(_stall=StallMeter(0.2, now), _last_from_broker=now)

    def test_a_stop_between_two_waits_counts_like_one_inside_a_wait(self):
        r = self.runner(100.0)
        r._stall.will_wait(0.05)
        with self.assertLogs("drover", "WARNING") as logs:
            loop.Runner._check_stall(r, 102.05)  # waited 0.05 s of a 2.05 s turn
        self.assertIn("worker.stalled ms=2000", logs.output[0])
        self.assertAlmostEqual(r._last_from_broker, 102.0)
        self.assertEqual(r._stall.stalls, 1)

    def test_a_turn_its_wait_explains_is_no_stall_and_liveness_never_passes_now(self):
        r = self.runner(100.0)
        r._stall.will_wait(0.2)
        with self.assertNoLogs("drover", "WARNING"):
            loop.Runner._check_stall(r, 100.3)
        self.assertEqual(r._last_from_broker, 100.0)
        r._last_from_broker = 101.0  # then heard from the broker: a 1 s stall would pass now
        with self.assertLogs("drover", "WARNING"):
            loop.Runner._check_stall(r, 101.3)
        self.assertEqual(r._last_from_broker, 101.3)

    def test_the_meter_counts_from_the_last_check_and_forgets_granted_waits(self):
        m = StallMeter(0.2, 10.0)
        m.will_wait(5.0)
        m.will_wait(-1.0)  # a negative wait grants nothing
        self.assertEqual(m.check(15.1), 0.0)
        self.assertAlmostEqual(m.check(15.5), 0.4)  # the 5 s granted before are spent
        self.assertEqual(m.stalls, 1)
        self.assertEqual(StallMeter.shifted(1.0, 0.5, 3.0), 1.5)
        self.assertEqual(StallMeter.shifted(1.0, 5.0, 3.0), 3.0)


class CliLookupTest(unittest.TestCase):
    def module(self, **attrs):
        m = types.ModuleType("m")
        vars(m).update(attrs)
        return m

    def test_the_worker_attribute_a_lone_worker_or_marked_functions(self):
        a, b = drover.Worker(), drover.Worker()
        a.add("x", len)
        self.assertIs(_cli_worker.find_worker(self.module(worker=a, other=b), None), a)
        self.assertIs(_cli_worker.find_worker(self.module(w=b), None), b)
        self.assertIs(_cli_worker.find_worker(self.module(w=a, v=b), "v"), b)
        with self.assertRaises(LookupError):
            _cli_worker.find_worker(self.module(w=a, v=b), None)

        @drover.task("named")
        def f(x):
            return x

        def plain(x):
            return x

        found = _cli_worker.find_worker(self.module(f=f, g=drover.task(plain), h=plain, n=len), None)
        self.assertEqual(sorted(found.tasks), ["named", "plain"])
        with self.assertRaises(LookupError):
            _cli_worker.find_worker(self.module(), None)

    def test_decorator_forms(self):
        wk = drover.Worker()

        @wk.task
        def a():
            pass

        @wk.task()
        def b():
            pass

        @wk.task("c")
        def other():
            pass

        self.assertEqual(sorted(wk.tasks), ["a", "b", "c"])
        self.assertEqual(a(), None)  # the function itself is returned


if __name__ == "__main__":
    unittest.main()
