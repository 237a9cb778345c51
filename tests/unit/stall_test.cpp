// Unit tests of StallMeter and of a stalled Scheduler: a process's own pause is not its peers' silence.
#include <chrono>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "internal/stall.hpp"
#include "scheduler.hpp"

using drover::Clock;
using drover::Scheduler;
using drover::StallMeter;
namespace proto = drover::proto;
using namespace std::chrono_literals;

namespace {

const auto t0 = Clock::time_point{} + std::chrono::hours(1);

proto::Task make_task(const std::string& id) {
    proto::Task t;
    t.id = id;
    t.name = "sum_random";
    t.args = std::string("\x90", 1);
    t.reply_to = "inproc://sink";
    t.max_attempts = 3;
    return t;
}

proto::Hello make_hello(const std::string& worker) {
    proto::Hello h;
    h.worker = worker;
    h.host = "host";
    h.pid = 1;
    h.pool = "solo";
    h.slots = 1;
    h.tasks = {"sum_random"};
    return h;
}

}  // namespace

TEST_CASE("a turn within its wait and the threshold is no stall", "[stall]") {
    StallMeter m(1s, t0);
    m.will_wait(1s);
    CHECK(m.check(t0 + 1s) == Clock::duration::zero());  // woke at the end of its wait
    m.will_wait(200ms);
    CHECK(m.check(t0 + 1s + 1100ms) == Clock::duration::zero());  // 900 ms late: a slow turn, not a stall
    CHECK(m.check(t0 + 3s) == Clock::duration::zero());           // 900 ms of work with no wait
    CHECK(m.stalls() == 0);
}

TEST_CASE("a gap that no wait explains is a stall of that length", "[stall]") {
    StallMeter m(1s, t0);
    m.will_wait(500ms);
    CHECK(m.check(t0 + 4500ms) == 4s);  // stopped for 4 s while waiting 500 ms
    m.will_wait(-5ms);                  // a wait that is due already counts as none
    CHECK(m.check(t0 + 7s) == 2500ms);  // stopped mid-turn
    CHECK(m.check(t0 + 7s) == Clock::duration::zero());
    CHECK(m.stalls() == 2);
}

TEST_CASE("a shifted time moves on by the stall but never past now", "[stall]") {
    CHECK(StallMeter::shifted(t0, 4s, t0 + 10s) == t0 + 4s);
    CHECK(StallMeter::shifted(t0 + 8s, 4s, t0 + 10s) == t0 + 10s);
}

TEST_CASE("a worker is not expired for the silence of the broker's own stall, only for its own after", "[stall]") {
    Scheduler s;  // 1 s x 3
    REQUIRE(s.hello("A", make_hello("a"), t0).empty());
    REQUIRE(s.hello("B", make_hello("b"), t0).empty());
    REQUIRE(s.seen("B", t0 + 2s));
    // The broker was stopped from t0 + 2.5 s to t0 + 6.5 s.
    s.stalled(4s, t0 + 6500ms);
    CHECK(s.expired(t0 + 6500ms).empty());
    CHECK(s.expired(t0 + 7s).empty());
    // A, heard last 2.5 s before the stall, is past its 3 s of silence 0.5 s after it.
    CHECK(s.expired(t0 + 7001ms) == std::vector<std::string>{"A"});
    CHECK(s.expired(t0 + 9001ms).size() == 2);
}

TEST_CASE("a broker-made outcome is not resent, nor given up, for a stall of the broker", "[stall]") {
    drover::SchedulerLimits limits;  // window 3 s
    limits.report_tries = 2;
    Scheduler s(limits);
    REQUIRE(s.hello("A", make_hello("a"), t0).empty());
    REQUIRE(s.submit("P", {make_task("t1")}, t0).accepted == 1);
    REQUIRE(s.cancel("P", {"t1"}).size() == 1);
    CHECK(s.reports_due(t0).empty());  // first resend due at t0 + 3 s
    s.stalled(10s, t0 + 11s);          // stopped from t0 + 1 s: the sink's SETTLE may be waiting unread
    CHECK(s.reports_due(t0 + 11s).empty());
    s.settle("P", {"t1"});  // read once the broker runs again
    CHECK(s.reports_due(t0 + 60s).empty());
    CHECK(s.task_count() == 0);
    CHECK(s.totals().reports_abandoned == 0);
}

TEST_CASE("unsettled tasks of an idle worker get their whole grace counted while the broker runs", "[stall]") {
    Scheduler s;  // 12 s of grace
    REQUIRE(s.hello("A", make_hello("a"), t0).empty());
    REQUIRE(s.ready("A", 2, t0));
    REQUIRE(s.submit("P", {make_task("t1"), make_task("t2")}, t0).accepted == 2);
    REQUIRE(s.dispatch().size() == 1);
    REQUIRE(s.worker_holds("A", 0, t0)->empty());
    REQUIRE(s.worker_holds("A", 0, t0 + 1s)->empty());  // suspect from here
    s.stalled(20s, t0 + 22s);                           // stopped from t0 + 2 s: SETTLEs unread
    REQUIRE(s.worker_holds("A", 0, t0 + 22s)->empty());
    CHECK(s.totals().recovered == 0);
    s.settle("P", {"t1", "t2"});
    CHECK(s.task_count() == 0);
}

TEST_CASE("a worker process that registers again after the broker's stall keeps its tasks, and another's go back",
          "[stall]") {
    Scheduler s;
    REQUIRE(s.hello("A1", make_hello("a"), t0).empty());
    // Two credits for one slot: the name timed short, so that a plain credit takes it too.
    REQUIRE(s.ready("A1", proto::Ready{2, 0, {{"sum_random", 1000}}}, t0));
    REQUIRE(s.submit("P", {make_task("t1"), make_task("t2"), make_task("t3")}, t0).accepted == 3);
    REQUIRE(s.dispatch().size() == 1);
    CHECK(s.held_by("A1") == 2);
    // The same process over a new connection, after the broker's stall: t1 and t2 run on there.
    auto again = make_hello("a");
    again.held = 2;
    REQUIRE(s.hello("A2", again, t0 + 5s, /*same_process_keeps_tasks=*/true).empty());
    CHECK(!s.knows("A1"));
    CHECK(s.held_by("A2") == 2);
    CHECK(s.queued_count() == 1);
    CHECK(s.totals().redispatched == 0);
    // Holding one, it never got the second: that one goes back to the queue.
    again.held = 1;
    REQUIRE(s.hello("A3", again, t0 + 6s, true).empty());
    CHECK(s.held_by("A3") == 1);
    CHECK(s.queued_count() == 2);
    // Its death still blames the task it was running.
    CHECK(s.remove_worker("A3").empty());
    CHECK(s.queued_count() == 3);
    // A restarted process (another pid) gets none of its predecessor's tasks.
    REQUIRE(s.hello("B1", make_hello("b"), t0).empty());
    REQUIRE(s.ready("B1", 1, t0));
    REQUIRE(s.dispatch().size() == 1);
    auto restarted = make_hello("b");
    restarted.pid = 99;
    REQUIRE(s.hello("B2", restarted, t0 + 5s, true).empty());
    CHECK(s.held_by("B2") == 0);
    CHECK(s.queued_count() == 3);
}
