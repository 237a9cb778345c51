// Unit tests of the worker's CreditPolicy, driven with an injected clock.
#include <chrono>
#include <cstdint>
#include <vector>

#include <catch2/catch.hpp>

#include "credits.hpp"

using drover::Clock;
using drover::CreditPolicy;
using drover::CreditSettings;
using drover::RunMeter;
using namespace std::chrono_literals;

namespace {

const auto t0 = Clock::time_point{} + std::chrono::hours(1);

CreditSettings settings(std::uint32_t slots, std::uint32_t prefetch, bool auto_prefetch) {
    return {slots, prefetch, auto_prefetch, std::chrono::nanoseconds(2ms)};
}

// The slots' task starts, as the policy reads them (0: idle).
struct Starts {
    std::vector<std::int64_t> ns;
    std::int64_t operator()(std::size_t slot) const { return ns[slot]; }
};

std::int64_t ns(Clock::time_point t) { return drover::ns_since_epoch(t); }

std::uint64_t ns_of(std::chrono::nanoseconds d) { return static_cast<std::uint64_t>(d.count()); }

// Grants what top_up() says, as the worker does, and returns it.
CreditPolicy::TopUp grant(CreditPolicy& p, RunMeter& m) {
    const auto t = p.top_up(m);
    p.credits_sent(t.credits, t.starts);
    return t;
}

}  // namespace

TEST_CASE("a worker first grants its slots and prefetch, its free slots as start credits", "[credits]") {
    CreditPolicy p(settings(2, 8, false));
    RunMeter m;
    const auto t = p.top_up(m);
    CHECK(t.credits == 10);
    CHECK(t.starts == 2);
    CHECK(p.starts_low());
    p.credits_sent(t.credits, t.starts);
    CHECK(p.promised() == 10);
    CHECK_FALSE(p.starts_low());
}

TEST_CASE("credits come back in batches of half the prefetch, not one a task", "[credits]") {
    CreditPolicy p(settings(2, 8, false));
    RunMeter m;
    (void)grant(p, m);
    p.start_credits_used(2);
    p.tasks_received(10);

    p.tasks_done(1);
    auto t = p.top_up(m);
    CHECK(t.credits == 0);
    CHECK(t.wait == 3);  // three more tasks, then a batch of 4
    p.tasks_done(2);
    t = p.top_up(m);
    CHECK(t.credits == 0);
    CHECK(t.wait == 1);
    p.tasks_done(1);
    t = p.top_up(m);
    CHECK(t.credits == 4);
    CHECK(t.starts == 0);  // both slots still busy
}

TEST_CASE("a prefetch of one gives each finished task's credit back at once", "[credits]") {
    CreditPolicy p(settings(1, 1, false));
    RunMeter m;
    CHECK(grant(p, m).credits == 2);
    p.start_credits_used(1);
    p.tasks_received(2);
    p.tasks_done(1);
    const auto t = p.top_up(m);
    CHECK(t.credits == 1);
    CHECK(t.starts == 0);  // the task queued here takes the slot
    p.credits_sent(t.credits, t.starts);
    p.tasks_done(1);
    const auto idle = p.top_up(m);
    CHECK(idle.credits == 1);
    CHECK(idle.starts == 1);  // the slot is free, and the broker holds no start credit for it
}

TEST_CASE("a slot freed while the broker holds no start credit for it gets one", "[credits]") {
    CreditPolicy p(settings(2, 4, false));
    RunMeter m;
    (void)grant(p, m);  // 6 credits, 2 of them start credits
    p.start_credits_used(2);
    p.tasks_received(2);
    CHECK(p.starts_low());
    p.tasks_done(1);  // promised 5 of 6: no batch due yet
    const auto t = p.top_up(m);
    CHECK(t.credits == 1);
    CHECK(t.starts == 1);
}

TEST_CASE("a new registration grants again what the broker forgot", "[credits]") {
    CreditPolicy p(settings(1, 2, false));
    RunMeter m;
    (void)grant(p, m);  // 3
    p.start_credits_used(1);
    p.tasks_received(1);
    CHECK(p.top_up(m).credits == 0);
    p.broker_forgot();
    CHECK(p.promised() == 1);  // the task held keeps its credit
    const auto t = p.top_up(m);
    CHECK(t.credits == 2);
    CHECK(t.starts == 0);
}

TEST_CASE("the automatic prefetch grows from measured task times, slowly at first", "[credits]") {
    CreditPolicy p(settings(1, 1, true));
    RunMeter m;
    CHECK(p.target_credits(m) == 2);  // nothing measured: slots + prefetch
    m.add(3, 3 * 10'000, 10'000);
    CHECK(p.target_credits(m) == 2);  // fewer tasks than a first sample
    CHECK(p.mean_task_ns() == 0);
    m.add(1, 10'000, 10'000);
    // 2 ms of 10 us tasks is 200, but at most 4x the 4 tasks seen so far.
    CHECK(p.target_credits(m) == 1 + 16);
    CHECK(p.mean_task_ns() == 10'000);
    m.add(16, 16 * 10'000, 10'000);
    CHECK(p.target_credits(m) == 1 + 80);
    m.add(96, 96 * 10'000, 10'000);
    CHECK(p.target_credits(m) == 1 + 200);
    // Each sample measures the tasks since the last: these take 1 ms, 2 fit in 2 ms.
    m.add(16, 16 * 1'000'000, 1'000'000);
    CHECK(p.target_credits(m) == 1 + 2);
    CHECK(p.early_after_ns() == 0);
}

TEST_CASE("the automatic prefetch is at most 1000 a slot and never below the prefetch set", "[credits]") {
    CreditPolicy quick(settings(2, 1, true));
    RunMeter m;
    m.add(100'000, 100'000 * 100, 100);  // 100 ns tasks: 40,000 would fit in 2 ms
    CHECK(quick.target_credits(m) == 2 + 2000);

    CreditPolicy floor(settings(1, 50, true));
    RunMeter slow;
    slow.add(100, 100 * 1'000'000, 1'000'000);  // 1 ms tasks: 2 would fit
    CHECK(floor.target_credits(slow) == 1 + 50);
}

TEST_CASE("a fixed prefetch ignores measured task times", "[credits]") {
    CreditPolicy p(settings(1, 3, false));
    RunMeter m;
    m.add(100, 100 * 10'000, 10'000);
    CHECK(p.target_credits(m) == 4);
    CHECK(p.mean_task_ns() == 0);
    CHECK_FALSE(p.tasks_are_quick());
}

TEST_CASE("a slot's early credit for a long task is due just before its expected end", "[credits]") {
    CreditPolicy p(settings(1, 1, true));
    RunMeter m;
    m.add(4, 4 * ns_of(100ms), ns_of(100ms));
    auto t = grant(p, m);
    CHECK(t.credits == 1);  // no prefetch: not one 100 ms task fits in 2 ms
    CHECK(t.starts == 1);
    CHECK(p.early_after_ns() == (98ms).count() * 1'000'000);  // the mean less the 2 ms lead
    p.start_credits_used(1);
    p.tasks_received(1);
    const Starts first{{ns(t0)}};

    auto early = p.early_credits(t0 + 50ms, false, first);
    CHECK(early.due == 0);
    CHECK(early.next == t0 + 97ms);  // within the poll's 1 ms counts as due
    early = p.early_credits(t0 + 97ms, false, first);
    CHECK(early.due == 1);
    p.credits_sent(early.due, early.due);
    CHECK(p.early_credits(t0 + 98ms, false, first).due == 0);  // that credit is still out
    // The task it brought waits here while the first runs on: one early credit a task.
    p.start_credits_used(1);
    p.tasks_received(1);
    CHECK(p.early_credits(t0 + 99ms, false, first).due == 0);

    // The next task starts as the first one ends.
    p.tasks_done(1);
    const Starts second{{ns(t0 + 100ms)}};
    early = p.early_credits(t0 + 150ms, false, second);
    CHECK(early.due == 0);
    CHECK(early.next == t0 + 197ms);
    CHECK(p.early_credits(t0 + 197ms, true, second).due == 0);  // stopping: none
    CHECK(p.early_credits(t0 + 197ms, false, second).due == 1);
}

TEST_CASE("an early credit out and unused holds back the other slots' early credits", "[credits]") {
    CreditPolicy p(settings(2, 1, true));
    RunMeter m;
    m.add(4, 4 * ns_of(100ms), ns_of(100ms));
    CHECK(grant(p, m).credits == 2);
    p.start_credits_used(2);
    p.tasks_received(2);
    const Starts both{{ns(t0), ns(t0)}};
    auto early = p.early_credits(t0 + 98ms, false, both);
    CHECK(early.due == 1);
    p.credits_sent(early.due, early.due);
    early = p.early_credits(t0 + 98ms, false, both);
    CHECK(early.due == 0);
    // Once that credit brought a task, the other slot gets its own.
    p.start_credits_used(1);
    p.tasks_received(1);
    CHECK(p.early_credits(t0 + 98ms, false, both).due == 1);
}

TEST_CASE("an early credit is never due before half the mean task time", "[credits]") {
    CreditPolicy p(settings(1, 1, true));
    RunMeter m;
    m.add(4, 4 * ns_of(3ms), ns_of(3ms));  // the lead is then 1.5 ms, not 2
    (void)grant(p, m);
    CHECK(p.early_after_ns() == 1'500'000);
    p.start_credits_used(1);
    p.tasks_received(1);
    const auto early = p.early_credits(t0, false, Starts{{ns(t0)}});
    CHECK(early.due == 0);
    CHECK(early.next == t0 + 1500us);
}

TEST_CASE("tasks queued behind slots busy for 200 ms are given back", "[credits]") {
    CreditPolicy p(settings(2, 4, false));
    RunMeter m;
    (void)grant(p, m);
    p.start_credits_used(2);
    p.tasks_received(4);  // two running, two queued
    const auto never = Clock::time_point::max();

    // A slot is free (or about to take the next task): look again later.
    CHECK(p.give_back_at(t0 + 10ms, false, Starts{{ns(t0 - 1s), 0}}) == t0 + 210ms);
    const Starts busy{{ns(t0), ns(t0 + 50ms)}};
    CHECK(p.give_back_at(t0 + 100ms, false, busy) == t0 + 250ms);  // when the later task has run 200 ms
    CHECK(p.give_back_at(t0 + 250ms, false, busy) <= t0 + 250ms);  // due
    CHECK(p.give_back_at(t0 + 250ms, true, busy) == never);        // stopping: they run here
    p.tasks_done(2);                                               // nothing queued behind the slots
    CHECK(p.give_back_at(t0 + 250ms, false, busy) == never);
}

TEST_CASE("the I/O thread runs tasks itself only while every task of the last sample was quick", "[credits]") {
    CreditPolicy p(settings(1, 1, true));
    RunMeter m;
    CHECK_FALSE(p.tasks_are_quick());  // nothing measured
    m.add(4, 4 * 500, 900);
    (void)p.target_credits(m);
    CHECK(p.tasks_are_quick());
    m.add(15, 15 * 500, 900);
    m.add(1, 5000, 5000);  // one of the next sample took 5 us
    (void)p.target_credits(m);
    CHECK_FALSE(p.tasks_are_quick());
}
