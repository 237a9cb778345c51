// The worker's credit policy: how many tasks to ask the broker for, and when.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "drover/common/clock.hpp"

namespace drover {

// Automatic prefetch: enough credits for about this much queued work per
// slot, from the measured task times (none for tasks this long or longer).
inline constexpr std::chrono::nanoseconds k_queued_work = std::chrono::milliseconds(2);
inline constexpr std::uint32_t k_max_prefetch = 1000;  // per slot
// The mean task time is first taken over k_first_sample tasks, then again
// every k_sample tasks; until many tasks were seen the prefetch is at most
// k_growth times their number, so that a few quick first tasks (errors,
// say) do not queue a thousand long ones here.
inline constexpr std::uint64_t k_first_sample = 4;
inline constexpr std::uint64_t k_sample = 16;
inline constexpr std::uint64_t k_growth = 4;
// The I/O thread runs a lone task itself only while the last sample's tasks
// all took less than this: its hand-off to an executor would cost more.
inline constexpr std::chrono::nanoseconds k_inline_below{1000};
// Tasks queued here behind tasks that have all run this long go back to the
// broker (RETURN): far past the 1 ms from which the broker sends a name only
// to free slots, and past a preempted task's wait on a busy machine.
inline constexpr std::chrono::nanoseconds k_give_back_after = std::chrono::milliseconds(200);

// A time as slots record their tasks' starts: ns since the clock's epoch.
inline std::int64_t ns_since_epoch(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// Tasks run and their time: added by whichever thread ran them, once per
// report rather than per task (one cache line written by every executor at
// every task is slow: drover-bench W1), and sampled by the I/O thread.
class RunMeter {
public:
    // Adds `n` tasks run, `busy_ns` their time in all and `longest_ns` the longest of them (any thread).
    void add(std::uint32_t n, std::uint64_t busy_ns, std::uint64_t longest_ns) {
        auto seen = longest_ns_.load(std::memory_order_relaxed);
        while (longest_ns > seen && !longest_ns_.compare_exchange_weak(seen, longest_ns, std::memory_order_relaxed)) {}
        busy_ns_.fetch_add(busy_ns, std::memory_order_relaxed);
        ran_.fetch_add(n, std::memory_order_release);  // after busy_ns_: see ran()
    }
    // Tasks run so far; busy_ns() read after it includes at least their time.
    [[nodiscard]] std::uint64_t ran() const { return ran_.load(std::memory_order_acquire); }
    [[nodiscard]] std::uint64_t busy_ns() const { return busy_ns_.load(std::memory_order_relaxed); }
    // The longest task added since the last call (I/O thread).
    std::uint64_t take_longest_ns() { return longest_ns_.exchange(0, std::memory_order_relaxed); }

private:
    std::atomic<std::uint64_t> ran_{0}, busy_ns_{0}, longest_ns_{0};
};

struct CreditSettings {
    std::uint32_t slots = 1;     // executors
    std::uint32_t prefetch = 1;  // credits beyond the slots (the least, when automatic)
    bool auto_prefetch = true;
    std::chrono::nanoseconds early_credit_lead{2'000'000};  // at most half the mean task time
};

// What the worker grants the broker: the credits that keep every slot busy
// plus a prefetch, grown from measured task times when automatic; start
// credits for free slots (only these take long tasks); early credits just
// before a long task's expected end; and when to give queued tasks back.
// Socket-free and single-threaded (the I/O thread): it decides, the caller
// sends and reports back what was sent.
class CreditPolicy {
public:
    explicit CreditPolicy(CreditSettings settings);

    // A READY to send: `credits`, `starts` of them start credits (both 0:
    // none due), and how many more tasks must finish before the next one.
    struct TopUp {
        std::uint32_t credits = 0, starts = 0, wait = 1;
    };
    // The credits missing to target_credits(), in batches of half the
    // prefetch (at least 1), so that credits do not cost a READY a task; and
    // a start credit for each free slot the broker holds none for (among
    // those credits, or one more each). Call credits_sent() once sent.
    TopUp top_up(RunMeter& meter);
    // Slots plus the prefetch: grown to about k_queued_work a slot from
    // `meter`'s task times when automatic; just the slots for tasks too long
    // for one a slot (early credits then). Samples `meter`.
    std::uint32_t target_credits(RunMeter& meter);

    // Early credits due at `now`: a start credit for each slot whose task
    // is expected to end within early_credit_lead, while no credit is out
    // unused; one for each task. `started_ns(slot)` is when the slot's task
    // started (ns_since_epoch; 0: idle). `next`: when to look again.
    struct Early {
        std::uint32_t due = 0;
        Clock::time_point next = Clock::time_point::max();
    };
    template <class StartedNs>
    Early early_credits(Clock::time_point now, bool stopping, const StartedNs& started_ns);
    // When the tasks queued here behind the slots' go back to the broker
    // (RETURN): once every slot has run its task (`started_ns` as above) for
    // k_give_back_after. A time <= `now`: now; time_point::max(): not while
    // nothing waits behind the slots (or stopping).
    template <class StartedNs>
    [[nodiscard]] Clock::time_point give_back_at(Clock::time_point now, bool stopping,
                                                 const StartedNs& started_ns) const;
    // Whether the last sample's tasks were all so quick that the I/O thread
    // may run a lone one itself (automatic prefetch only, which samples).
    [[nodiscard]] bool tasks_are_quick() const;

    // The broker got a READY of `credits`, `starts` of them start credits.
    void credits_sent(std::uint32_t credits, std::uint32_t starts);
    // A DISPATCH used `n` start credits.
    void start_credits_used(std::uint32_t n);
    // `n` tasks arrived for the executors.
    void tasks_received(std::uint32_t n) { outstanding_ += n; }
    // `n` tasks held here are done with (finished, or given back).
    void tasks_done(std::uint32_t n);
    // The I/O thread ran a task on arrival (never received): its credit is free again.
    void ran_on_arrival() { promised_ -= std::min(promised_, 1u); }
    // A new registration: the broker forgot every credit (early ones too);
    // tasks held from an earlier one keep theirs.
    void broker_forgot();

    [[nodiscard]] std::uint32_t outstanding() const { return outstanding_; }  // received and not done
    [[nodiscard]] std::uint32_t promised() const { return promised_; }  // granted and not done (at the broker or here)
    // The broker holds fewer start credits than there are slots.
    [[nodiscard]] bool starts_low() const { return starts_out_ < settings_.slots; }
    // How long after a task's start its slot's next credit is due, in ns
    // (0: never, the tasks being short or unmeasured). Set by target_credits().
    [[nodiscard]] std::int64_t early_after_ns() const { return early_after_ns_; }
    [[nodiscard]] std::uint64_t mean_task_ns() const { return mean_task_ns_; }  // 0: not measured yet

private:
    // Takes the mean task time when enough tasks ran since the last sample; returns the tasks run.
    std::uint64_t sample(RunMeter& meter);

    CreditSettings settings_;
    std::uint32_t starts_out_ = 0;   // start credits granted, not yet used by a DISPATCH seen
    std::uint32_t outstanding_ = 0;  // tasks received and not yet done
    std::uint32_t promised_ = 0;     // credits granted and not yet done
    std::uint64_t sampled_ran_ = 0, sampled_busy_ns_ = 0, mean_task_ns_ = 0;
    std::uint64_t window_longest_ns_ = UINT64_MAX;  // the longest of the last sample's tasks
    std::int64_t early_after_ns_ = 0;
    std::vector<std::int64_t> early_granted_;  // by slot: the start its early credit was for
};

template <class StartedNs>
CreditPolicy::Early CreditPolicy::early_credits(Clock::time_point now, bool stopping, const StartedNs& started_ns) {
    // Due within the poll's granularity counts as due (else the credit could
    // be up to a poll late), but never before half the mean task time, the
    // lead's bound.
    constexpr std::int64_t k_poll_granularity_ns = 1'000'000;  // the I/O thread polls in whole ms
    Early early;
    if (early_after_ns_ == 0 || stopping) return early;
    const auto now_ns = ns_since_epoch(now);
    const auto after = std::max(early_after_ns_ - k_poll_granularity_ns, static_cast<std::int64_t>(mean_task_ns_ / 2));
    for (std::uint32_t i = 0; i < settings_.slots; ++i) {
        const std::int64_t started = started_ns(i);
        if (started == 0 || early_granted_[i] == started) continue;  // idle, or granted for this task
        // One credit out and unused is enough: a task is on its way or none is queued.
        if (promised_ + early.due > outstanding_) break;
        if (started + after <= now_ns) {
            early_granted_[i] = started;
            ++early.due;
        } else {
            early.next = std::min(early.next, Clock::time_point(std::chrono::nanoseconds(started + after)));
        }
    }
    return early;
}

template <class StartedNs>
Clock::time_point CreditPolicy::give_back_at(Clock::time_point now, bool stopping, const StartedNs& started_ns) const {
    if (stopping || outstanding_ <= settings_.slots) return Clock::time_point::max();  // nothing waits behind the slots
    std::int64_t latest = 0;
    for (std::uint32_t i = 0; i < settings_.slots; ++i) {
        const std::int64_t started = started_ns(i);
        // A slot is free (or about to start the next task, unannounced): look again later.
        if (started == 0) return now + k_give_back_after;
        latest = std::max(latest, started);
    }
    return Clock::time_point(std::chrono::nanoseconds(latest + k_give_back_after.count()));
}

}  // namespace drover
