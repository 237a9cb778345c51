// Unit tests of the broker's dispatch policy and worker credit accounting (no Scheduler).
#include <cstdint>
#include <vector>

#include <catch2/catch.hpp>

#include "dispatch_policy.hpp"

using drover::scheduling::Credit;
using drover::scheduling::credit_for;
using drover::scheduling::k_long_task_ns;
using drover::scheduling::k_prefetched_work_ns;
using drover::scheduling::WorkerState;

namespace {

WorkerState worker(std::uint32_t slots, std::uint32_t credits, std::uint32_t starts, std::size_t held = 0) {
    WorkerState w;
    w.hello.slots = slots;
    w.credits = credits;
    w.starts = starts;
    w.held_count = held;
    return w;
}

constexpr std::uint64_t k_short = 10'000;  // 10 us

}  // namespace

TEST_CASE("a long or untimed task takes a start credit, else a free slot, never a prefetch place", "[dispatch]") {
    for (const std::uint64_t run_ns : {std::uint64_t{0}, k_long_task_ns, 5 * k_long_task_ns}) {
        CHECK(credit_for(worker(2, 4, 1, 1), run_ns, false) == Credit::start);
        CHECK(credit_for(worker(2, 4, 0, 1), run_ns, false) == Credit::plain);  // one of its 2 slots is free
        CHECK(credit_for(worker(2, 4, 0, 2), run_ns, false) == Credit::none);   // both busy: it would wait there
        CHECK(credit_for(worker(2, 4, 0, 2), run_ns, true) == Credit::none);
    }
}

TEST_CASE("a short task takes plain credits first, then start credits", "[dispatch]") {
    CHECK(credit_for(worker(1, 8, 1), k_short, false) == Credit::plain);
    CHECK(credit_for(worker(1, 1, 1), k_short, false) == Credit::start);
}

TEST_CASE("a short task takes no plain credit once a worker's prefetch holds enough work a slot", "[dispatch]") {
    WorkerState w = worker(2, 8, 0);
    w.prefetched = 4;
    w.prefetched_ns = 2 * k_prefetched_work_ns - k_short;
    CHECK(credit_for(w, k_short, false) == Credit::plain);  // exactly at the bound
    w.prefetched_ns += 1;
    CHECK(credit_for(w, k_short, false) == Credit::none);
    w.starts = 1;
    CHECK(credit_for(w, k_short, false) == Credit::start);
}

TEST_CASE("the spread gives short tasks only to workers of long tasks with a slot free", "[dispatch]") {
    CHECK(credit_for(worker(1, 2, 0), k_short, true) == Credit::plain);    // few credits a slot
    CHECK(credit_for(worker(1, 64, 0), k_short, true) == Credit::none);    // many: it runs short tasks
    CHECK(credit_for(worker(1, 2, 0, 1), k_short, true) == Credit::none);  // its slot is busy
    CHECK(credit_for(worker(1, 64, 0), k_short, false) == Credit::plain);  // the fill gives it them
}

TEST_CASE("the fill serves workers of long tasks oldest first, then workers of short tasks newest first",
          "[dispatch]") {
    // By least recently served: 0 (short), 1 (long), 2 (short), 3 (long).
    const std::vector<WorkerState> ready{worker(1, 64, 0), worker(1, 2, 0), worker(1, 64, 0), worker(1, 2, 0)};
    std::vector<std::size_t> order;
    drover::scheduling::fill_order(
        ready.size(), [&](std::size_t i) -> const WorkerState& { return ready[i]; }, order);
    CHECK(order == std::vector<std::size_t>{1, 3, 2, 0});
}

TEST_CASE("a worker's credits come back with READY and take the prefetched work with them", "[dispatch]") {
    WorkerState w = worker(2, 4, 0);
    w.take_credit(false, true, 1000);
    w.take_credit(false, true, 3000);
    w.take_credit(false, false, 5'000'000);  // a long task queues no prefetched work
    CHECK(w.credits == 1);
    CHECK(w.prefetched == 2);
    CHECK(w.prefetched_ns == 4000);
    w.credited(1, 5);  // at most as many start credits as credits
    CHECK(w.credits == 2);
    CHECK(w.starts == 1);
    CHECK(w.prefetched == 1);
    CHECK(w.prefetched_ns == 2000);  // the mean leaves with each
    w.take_credit(true, true, 1000);
    CHECK(w.starts == 0);
    CHECK(w.prefetched == 1);
    w.return_credit(true);
    CHECK(w.credits == 2);
    CHECK(w.starts == 1);
    w.credited(3, 0);
    CHECK(w.prefetched == 0);
    CHECK(w.prefetched_ns == 0);
}
