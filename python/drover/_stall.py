"""Notices when this process itself stopped running, so that peers are not blamed for its silence.

A process that is stopped (SIGSTOP, a suspended VM, a machine that swaps) reads nothing, so every
peer looks silent to it when it wakes up. A poll loop asks a StallMeter at each turn: will_wait()
before it waits (a wait it asked for is not a stall), check() after it and before it judges any
peer. The loop then pushes every peer's liveness deadline forward by the stall (shifted()), so that
a peer is declared gone only after a silence while this process was running and reading. The same
contract as the C++ StallMeter (common/src/internal/stall.hpp). Single-threaded, like its loop.
"""


class StallMeter:
    """Times in seconds (time.monotonic(): it runs on while the process is stopped)."""

    __slots__ = ("threshold", "stalls", "_last", "_granted")

    def __init__(self, threshold: float, now: float) -> None:
        """`threshold`: the longest turn that is not a stall (one heartbeat period: a loaded machine
        delays a turn by less)."""
        self.threshold = threshold
        self.stalls = 0  # stalls seen so far
        self._last = now
        self._granted = 0.0

    def will_wait(self, wait: float) -> None:
        """The loop is about to wait up to `wait` seconds for input."""
        if wait > 0:
            self._granted += wait

    def check(self, now: float) -> float:
        """Returns the stall since the previous check: the time no wait explains, if over the
        threshold; else 0.0."""
        unexplained = now - self._last - self._granted
        self._last = now
        self._granted = 0.0
        if unexplained <= self.threshold:
            return 0.0
        self.stalls += 1
        return unexplained

    @staticmethod
    def shifted(t: float, stall: float, now: float) -> float:
        """`t` (a peer's last-seen time) pushed forward by a stall, but never past `now`."""
        return min(now, t + stall)
