// Notices when this process itself stopped running, so that peers are not blamed for its silence.
#pragma once

// A process that is stopped (SIGSTOP, a suspended VM, a machine that
// swaps) reads nothing, so every peer looks silent to it when it wakes up.
// A poll loop asks a StallMeter at each turn: will_wait() before it waits
// (a wait it asked for is not a stall), check() after it and before it
// judges any peer. check() returns the time since the previous check that
// no wait explains, if over the threshold: a stall. The loop then pushes
// every peer's liveness deadline forward by it, so that a peer is declared
// gone only after a silence while this process was running and reading.
// Single-threaded, like the loop that owns it.

#include <chrono>

namespace drover {

class StallMeter {
public:
    using Clock = std::chrono::steady_clock;  // monotonic: it runs on while the process is stopped

    // `threshold`: the longest turn that is not a stall (one heartbeat
    // period: a loaded machine delays a turn by less).
    explicit StallMeter(Clock::duration threshold, Clock::time_point now = Clock::now())
        : threshold_(threshold), last_(now) {}

    // The loop is about to wait up to `wait` for input.
    void will_wait(Clock::duration wait) {
        if (wait > Clock::duration::zero()) granted_ += wait;
    }

    // Returns the stall since the previous check: the time no wait explains,
    // if over the threshold; else zero.
    [[nodiscard]] Clock::duration check(Clock::time_point now) {
        const auto unexplained = now - last_ - granted_;
        last_ = now;
        granted_ = Clock::duration::zero();
        if (unexplained <= threshold_) return Clock::duration::zero();
        ++stalls_;
        return unexplained;
    }

    // Stalls seen so far.
    [[nodiscard]] unsigned long stalls() const { return stalls_; }

    // `t` pushed forward by a stall, but never past `now`: a peer's
    // last-seen time, or a deadline measured from one.
    [[nodiscard]] static Clock::time_point shifted(Clock::time_point t, Clock::duration stall, Clock::time_point now) {
        return t + stall < now ? t + stall : now;
    }

private:
    Clock::duration threshold_;
    Clock::time_point last_;
    Clock::duration granted_{};
    unsigned long stalls_ = 0;
};

}  // namespace drover
