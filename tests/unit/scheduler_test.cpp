// Unit tests of the broker's Scheduler, driven with an injected clock.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "scheduler.hpp"

using drover::Clock;
using drover::FinalOutcome;
using drover::Millis;
using drover::Scheduler;
using drover::SchedulerLimits;
namespace proto = drover::proto;
using namespace std::chrono_literals;

namespace {

const auto t0 = Clock::time_point{} + std::chrono::hours(1);

proto::Task make_task(const std::string& id, const std::string& name = "sum_random", std::uint32_t max_attempts = 3) {
    proto::Task t;
    t.id = id;
    t.name = name;
    t.args = std::string("\x92\x01\x02", 3);
    t.reply_to = "inproc://sink";
    t.max_attempts = max_attempts;
    return t;
}

std::vector<proto::Task> tasks_of(std::initializer_list<proto::Task> list) { return std::vector<proto::Task>(list); }

proto::Hello make_hello(const std::string& worker, std::vector<std::string> names = {"sum_random"},
                        std::uint32_t slots = 1) {
    proto::Hello h;
    h.worker = worker;
    h.host = "host-" + worker;
    h.pid = 1234;
    h.pool = "default";
    h.slots = slots;
    h.tasks = std::move(names);
    return h;
}

// Grants credits with the names these tests use timed as short tasks (1 us):
// every credit then takes them.
bool ready_timed(Scheduler& s, const std::string& identity, std::uint32_t credits, Clock::time_point now) {
    proto::Ready r{credits, 0, {}};
    for (const char* name : {"sum_random", "hello", "reverse", "echo"}) r.run_ns.emplace_back(name, 1000);
    return s.ready(identity, r, now);
}

// Registers a worker and grants it credits.
void add_worker(Scheduler& s, const std::string& identity, std::uint32_t credits,
                std::vector<std::string> names = {"sum_random"}, std::uint32_t slots = 1) {
    REQUIRE(s.hello(identity, make_hello("id-" + identity, std::move(names), slots), t0).empty());
    if (credits > 0) REQUIRE(ready_timed(s, identity, credits, t0));
}

std::size_t total_tasks(const std::vector<Scheduler::Batch>& batches) {
    std::size_t n = 0;
    for (const auto& b : batches) n += b.tasks.size();
    return n;
}

}  // namespace

TEST_CASE("A submitted task is queued and dispatched only against credits", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 2);
    auto sub = s.submit("P", tasks_of({make_task("t1"), make_task("t2"), make_task("t3")}), t0);
    CHECK(sub.accepted == 3);
    CHECK(sub.rejected.empty());
    CHECK(sub.finals.empty());
    CHECK(s.queued_count() == 3);
    CHECK(s.task_count() == 3);

    auto batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    CHECK(batches[0].worker == "A");
    REQUIRE(batches[0].tasks.size() == 2);
    CHECK(batches[0].tasks[0].id == "t1");
    CHECK(batches[0].tasks[1].id == "t2");
    CHECK(batches[0].tasks[0].attempt == 1);
    CHECK(batches[0].tasks[0].reply_to == "inproc://sink");
    CHECK(batches[0].tasks[0].args == std::string("\x92\x01\x02", 3));
    CHECK(s.credits_of("A") == 0);
    CHECK(s.held_by("A") == 2);
    CHECK(s.queued_count() == 1);
    CHECK(s.task_count() == 3);

    // No credits left: nothing more goes out.
    CHECK(s.dispatch().empty());
    CHECK(s.queued_count() == 1);

    // One more credit: the last task goes.
    REQUIRE(ready_timed(s, "A", 1, t0 + 1s));
    batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    REQUIRE(batches[0].tasks.size() == 1);
    CHECK(batches[0].tasks[0].id == "t3");
    CHECK(s.queued_count() == 0);
    CHECK(s.totals().dispatched == 3);
    CHECK(s.totals().accepted == 3);
}

TEST_CASE("A worker with no credits gets nothing", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 0);
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    CHECK(s.dispatch().empty());
    CHECK(s.held_by("A") == 0);
    CHECK(s.queued_count() == 1);
    CHECK(s.totals().dispatched == 0);
}

TEST_CASE("Credits go unused while nothing is queued and are kept for later tasks", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 3);
    CHECK(s.dispatch().empty());
    CHECK(s.credits_of("A") == 3);
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    auto batches = s.dispatch();
    REQUIRE(total_tasks(batches) == 1);
    CHECK(s.credits_of("A") == 2);
}

TEST_CASE("Two workers with one credit each get one of two tasks each", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 1);
    add_worker(s, "B", 1);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2")}), t0).accepted == 2);
    auto batches = s.dispatch();
    REQUIRE(batches.size() == 2);
    CHECK(batches[0].worker != batches[1].worker);
    CHECK(batches[0].tasks.size() == 1);
    CHECK(batches[1].tasks.size() == 1);
    CHECK(s.held_by("A") == 1);
    CHECK(s.held_by("B") == 1);
    CHECK(s.queued_count() == 0);
}

TEST_CASE("A short queue of long tasks is spread over the workers with a free slot", "[scheduler]") {
    Scheduler s;
    // A slot and a prefetch of 1 each: what a worker grants for tasks of 2 ms or more.
    add_worker(s, "A", 2);
    add_worker(s, "B", 2);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2")}), t0).accepted == 2);
    auto batches = s.dispatch();
    REQUIRE(batches.size() == 2);
    CHECK(s.held_by("A") == 1);
    CHECK(s.held_by("B") == 1);
}

TEST_CASE("Short tasks (many credits a slot) go in batches to the most recently served worker while it has credits",
          "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 100);
    add_worker(s, "B", 100);
    // Not spread: workers that grant 100 credits a slot run tasks of about
    // 20 us, where a message of one task costs more than the wait it saves.
    REQUIRE(s.submit("P", tasks_of({make_task("a"), make_task("b")}), t0).accepted == 2);
    auto first = s.dispatch();
    REQUIRE(first.size() == 1);
    CHECK(first[0].tasks.size() == 2);
    const std::string hot = first[0].worker;
    const std::string other = hot == "A" ? "B" : "A";
    // 50 more go as one batch to the same worker: it still has 98 credits.
    std::vector<proto::Task> more;
    for (int i = 0; i < 50; ++i) more.push_back(make_task("m" + std::to_string(i)));
    REQUIRE(s.submit("P", std::move(more), t0).accepted == 50);
    auto second = s.dispatch();
    REQUIRE(second.size() == 1);
    CHECK(second[0].worker == hot);
    CHECK(second[0].tasks.size() == 50);
    // Past its credits (48 left), the rest goes to the other worker.
    std::vector<proto::Task> big;
    for (int i = 0; i < 120; ++i) big.push_back(make_task("b" + std::to_string(i)));
    REQUIRE(s.submit("P", std::move(big), t0).accepted == 120);
    auto third = s.dispatch();
    REQUIRE(third.size() == 2);
    CHECK(total_tasks(third) == 120);
    CHECK(s.held_by(hot) == 100);
    CHECK(s.held_by(other) == 72);
    CHECK(s.queued_count() == 0);
    // STATUS counts the DISPATCH messages: 1 + 1 + 2.
    CHECK(s.totals().dispatch_batches == 4);
    CHECK(s.totals().dispatched == 172);
}

TEST_CASE("A worker's credits bound what it gets, the rest goes to the next worker", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 3);
    add_worker(s, "B", 3);
    std::vector<proto::Task> tasks;
    for (int i = 0; i < 5; ++i) tasks.push_back(make_task("t" + std::to_string(i)));
    REQUIRE(s.submit("P", std::move(tasks), t0).accepted == 5);
    REQUIRE(total_tasks(s.dispatch()) == 5);
    // One each for their free slots, then A (served first) fills its 2 more, B takes the last.
    CHECK(s.held_by("A") + s.held_by("B") == 5);
    CHECK(s.credits_of("A") + s.credits_of("B") == 1);
    CHECK(s.queued_count() == 0);
}

TEST_CASE("Tasks go to the least recently served worker", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 1);
    add_worker(s, "B", 0);

    // Only A has credits: A is served first.
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    auto batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    CHECK(batches[0].worker == "A");

    // Both have a credit now; B has never been served, so B gets the next task.
    REQUIRE(ready_timed(s, "A", 1, t0 + 1s));
    REQUIRE(ready_timed(s, "B", 1, t0 + 1s));
    REQUIRE(s.submit("P", tasks_of({make_task("t2")}), t0 + 1s).accepted == 1);
    batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    CHECK(batches[0].worker == "B");
    CHECK(batches[0].tasks[0].id == "t2");

    // A (served before B) is now the least recently served.
    REQUIRE(ready_timed(s, "B", 1, t0 + 2s));
    REQUIRE(s.submit("P", tasks_of({make_task("t3")}), t0 + 2s).accepted == 1);
    batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    CHECK(batches[0].worker == "A");
    CHECK(batches[0].tasks[0].id == "t3");

    // And then B again.
    REQUIRE(ready_timed(s, "A", 1, t0 + 3s));
    REQUIRE(s.submit("P", tasks_of({make_task("t4")}), t0 + 3s).accepted == 1);
    batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    CHECK(batches[0].worker == "B");
}

TEST_CASE("A task goes only to a worker that runs its name", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 5, {"hello"});
    add_worker(s, "B", 5, {"sum_random"});
    REQUIRE(s.submit("P", tasks_of({make_task("t1", "sum_random"), make_task("t2", "hello")}), t0).accepted == 2);
    auto batches = s.dispatch();
    REQUIRE(batches.size() == 2);
    for (const auto& b : batches) {
        REQUIRE(b.tasks.size() == 1);
        if (b.worker == "A") CHECK(b.tasks[0].name == "hello");
        else CHECK(b.tasks[0].name == "sum_random");
    }
}

TEST_CASE("A task whose name no worker can run waits and status shows it waiting for workers", "[scheduler]") {
    Scheduler s;
    // No worker yet: the task waits, since its worker may be on its way.
    auto sub = s.submit("P", tasks_of({make_task("t1", "reverse")}), t0);
    CHECK(sub.accepted == 1);
    CHECK(sub.finals.empty());

    // A worker that runs other tasks arrives with credits: nothing for it.
    add_worker(s, "A", 5, {"sum_random"});
    CHECK(s.dispatch().empty());
    CHECK(s.queued_count() == 1);

    auto st = s.status(t0 + 1s);
    REQUIRE(st["waiting_for_workers"].is_array());
    CHECK(st["waiting_for_workers"] == nlohmann::json::array({"reverse"}));
    CHECK(st["queues"]["reverse"]["queued"] == 1);
    CHECK(st["queues"]["reverse"]["workers"] == 0);
    CHECK(st["queued"] == 1);
    CHECK(st["held"] == 1);

    // A worker that runs it arrives: it is dispatched and no longer waiting.
    add_worker(s, "B", 1, {"reverse"});
    auto batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    CHECK(batches[0].worker == "B");
    st = s.status(t0 + 2s);
    CHECK(st["waiting_for_workers"].empty());
    CHECK(st["in_flight"] == 1);
}

TEST_CASE("A task whose name no live worker announced ends at once with an error", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 1, {"sum_random"});
    auto sub = s.submit("P", tasks_of({make_task("t1", "no_such_task")}), t0);
    CHECK(sub.accepted == 1);
    REQUIRE(sub.finals.size() == 1);
    CHECK(sub.finals[0].reply_to == "inproc://sink");
    CHECK(sub.finals[0].outcome.id == "t1");
    CHECK(sub.finals[0].outcome.status == proto::Status::error);
    CHECK_THAT(sub.finals[0].outcome.error, Catch::Matchers::Contains("unknown task"));
    CHECK_THAT(sub.finals[0].outcome.error, Catch::Matchers::Contains("no_such_task"));
    CHECK(s.task_count() == 1);  // kept, to send again, until its sink settles it
    CHECK(s.queued_count() == 0);
    auto long_name = s.submit("P", tasks_of({make_task("t2", std::string(10'000, 'n'))}), t0);
    REQUIRE(long_name.finals.size() == 1);
    CHECK(long_name.finals[0].outcome.error.size() < 300);  // the name cut, not echoed whole
    s.settle("P", {"t2"});
    s.settle("P", {"t1"});
    CHECK(s.task_count() == 0);
}

TEST_CASE("A task without name or reply_to is rejected as invalid", "[scheduler]") {
    Scheduler s;
    auto no_reply = make_task("t1");
    no_reply.reply_to.clear();
    auto no_name = make_task("t2", "");
    auto sub = s.submit("P", tasks_of({no_reply, no_name}), t0);
    CHECK(sub.accepted == 0);
    REQUIRE(sub.rejected.size() == 1);
    CHECK(sub.rejected.begin()->first.rfind("invalid", 0) == 0);
    CHECK(sub.rejected.begin()->second == std::vector<std::string>{"t1", "t2"});
    CHECK(s.task_count() == 0);
    CHECK(s.totals().rejected == 2);
}

TEST_CASE("Tasks past max_queued are rejected with queue_full", "[scheduler]") {
    SchedulerLimits limits;
    limits.max_queued = 2;
    Scheduler s(limits);
    add_worker(s, "A", 0);
    auto sub = s.submit("P", tasks_of({make_task("t1"), make_task("t2"), make_task("t3"), make_task("t4")}), t0);
    CHECK(sub.accepted == 2);
    REQUIRE(sub.rejected.count("queue_full") == 1);
    CHECK(sub.rejected.at("queue_full") == std::vector<std::string>{"t3", "t4"});
    CHECK(s.task_count() == 2);
    CHECK(s.totals().rejected == 2);

    // Running tasks still count against the limit.
    REQUIRE(ready_timed(s, "A", 2, t0));
    REQUIRE(total_tasks(s.dispatch()) == 2);
    sub = s.submit("P", tasks_of({make_task("t5")}), t0);
    CHECK(sub.accepted == 0);
    CHECK(sub.rejected.count("queue_full") == 1);

    // Settling one frees a place.
    s.settle("P", {"t1"});
    sub = s.submit("P", tasks_of({make_task("t5")}), t0);
    CHECK(sub.accepted == 1);
    CHECK(sub.rejected.empty());
}

TEST_CASE("Resubmitting the same id is accepted without queuing it twice", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 0);
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    auto again = s.submit("P", tasks_of({make_task("t1")}), t0 + 1s);
    CHECK(again.accepted == 1);
    CHECK(again.rejected.empty());
    CHECK(s.task_count() == 1);
    CHECK(s.queued_count() == 1);

    REQUIRE(ready_timed(s, "A", 5, t0 + 2s));
    auto batches = s.dispatch();
    REQUIRE(total_tasks(batches) == 1);
    CHECK(s.credits_of("A") == 4);

    // A resend while it runs is accepted too, and does not queue it again.
    again = s.submit("P", tasks_of({make_task("t1")}), t0 + 3s);
    CHECK(again.accepted == 1);
    CHECK(s.queued_count() == 0);
    CHECK(s.dispatch().empty());
}

TEST_CASE("Only tasks whose outcome goes elsewhere are acknowledged with ACCEPTED", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 0);
    auto detached = make_task("t2");
    detached.detached = true;
    auto unknown = make_task("t4", "no_such_task");
    unknown.detached = true;
    auto sub = s.submit("P", tasks_of({make_task("t1"), detached, make_task("t3"), unknown}), t0);
    CHECK(sub.accepted == 4);
    // The others are acknowledged by their outcome: no ACCEPTED message for them.
    CHECK(sub.acknowledged == std::vector<std::string>{"t2", "t4"});
    // A resend is acknowledged again the same way.
    sub = s.submit("P", tasks_of({make_task("t1"), detached}), t0 + 1s);
    CHECK(sub.accepted == 2);
    CHECK(sub.acknowledged == std::vector<std::string>{"t2"});
}

TEST_CASE("Settle names the detached tasks it forgot, under their producer", "[scheduler]") {
    Scheduler s;
    auto d1 = make_task("d1");
    d1.detached = true;
    auto d2 = make_task("d2");
    d2.detached = true;
    REQUIRE(s.submit("P", tasks_of({d1, make_task("a1")}), t0).accepted == 2);
    REQUIRE(s.submit("Q", tasks_of({d2}), t0).accepted == 1);
    drover::IdsByProducer detached;
    const drover::IdsByProducer p_d1{{"P", {"d1"}}}, q_d2{{"Q", {"d2"}}};
    REQUIRE(s.settle("P", {"d1", "a1", "nope"}, {}, nullptr, &detached) == 0);
    CHECK(detached == p_d1);  // an attached task's outcome told its producer already
    detached.clear();
    CHECK(s.settle("P", {"d2"}, {}, nullptr, &detached) == 1);  // not P's: refused, not named
    CHECK(detached.empty());
    REQUIRE(s.settle("Q", {"d2"}, {}, nullptr, &detached) == 0);
    CHECK(detached == q_d2);
}

TEST_CASE("Settle forgets the task and counts it done for its worker", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 2);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2")}), t0).accepted == 2);
    REQUIRE(total_tasks(s.dispatch()) == 2);
    REQUIRE(s.task_count() == 2);

    s.settle("P", {"t1"});
    CHECK(s.task_count() == 1);
    CHECK(s.held_by("A") == 1);
    CHECK(s.totals().settled == 1);
    auto st = s.status(t0);
    REQUIRE(st["workers"].size() == 1);
    CHECK(st["workers"][0]["done"] == 1);
    CHECK(st["workers"][0]["held"] == 1);
    CHECK(st["totals"]["settled"] == 1);

    // Settling an unknown or already settled id changes nothing.
    s.settle("P", {"t1", "nope"});
    CHECK(s.task_count() == 1);
    CHECK(s.totals().settled == 1);

    s.settle("P", {"t2"});
    CHECK(s.task_count() == 0);
    CHECK(s.held_by("A") == 0);
    CHECK(s.status(t0)["workers"][0]["done"] == 2);
}

TEST_CASE("Settling a queued task removes it from the queue", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 0);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2")}), t0).accepted == 2);
    s.settle("P", {"t1"});
    CHECK(s.task_count() == 1);
    CHECK(s.queued_count() == 1);
    REQUIRE(ready_timed(s, "A", 5, t0));
    auto batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    REQUIRE(batches[0].tasks.size() == 1);
    CHECK(batches[0].tasks[0].id == "t2");
}

TEST_CASE("A worker silent for liveness times heartbeat is expired, and not before", "[scheduler]") {
    SchedulerLimits limits;
    limits.heartbeat = drover::Millis(1000);
    limits.liveness = 3;
    Scheduler s(limits);
    add_worker(s, "A", 0);  // last seen at t0
    REQUIRE(s.hello("B", make_hello("id-B"), t0 + 2s).empty());

    CHECK(s.expired(t0).empty());
    CHECK(s.expired(t0 + 2999ms).empty());
    CHECK(s.expired(t0 + 3000ms).empty());
    CHECK(s.expired(t0 + 3001ms) == std::vector<std::string>{"A"});

    // A heartbeat (seen) or READY resets the clock.
    REQUIRE(s.seen("A", t0 + 3001ms));
    CHECK(s.expired(t0 + 4s).empty());
    CHECK(s.expired(t0 + 5001ms) == std::vector<std::string>{"B"});
    REQUIRE(ready_timed(s, "B", 1, t0 + 5001ms));
    CHECK(s.expired(t0 + 6002ms) == std::vector<std::string>{"A"});

    // expired() only reports: the worker is still known.
    CHECK(s.knows("A"));
    CHECK(s.worker_count() == 2);
}

TEST_CASE("remove_worker requeues its held tasks with the attempt count raised on the next dispatch", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 2, {"sum_random"}, /*slots=*/2);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2")}), t0).accepted == 2);
    auto batches = s.dispatch();
    REQUIRE(total_tasks(batches) == 2);
    CHECK(batches[0].tasks[0].attempt == 1);

    auto finals = s.remove_worker("A");
    CHECK(finals.empty());
    CHECK_FALSE(s.knows("A"));
    CHECK(s.worker_count() == 0);
    CHECK(s.task_count() == 2);
    CHECK(s.queued_count() == 2);
    CHECK(s.totals().redispatched == 2);

    add_worker(s, "B", 2);
    batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    CHECK(batches[0].worker == "B");
    REQUIRE(batches[0].tasks.size() == 2);
    // Back in their original order, each on its second attempt.
    CHECK(batches[0].tasks[0].id == "t1");
    CHECK(batches[0].tasks[1].id == "t2");
    CHECK(batches[0].tasks[0].attempt == 2);
    CHECK(batches[0].tasks[1].attempt == 2);
}

TEST_CASE("Requeued tasks go ahead of tasks that were queued behind them", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 1);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2")}), t0).accepted == 2);
    REQUIRE(total_tasks(s.dispatch()) == 1);  // t1 to A
    REQUIRE(s.remove_worker("A").empty());
    add_worker(s, "B", 1);
    auto batches = s.dispatch();
    REQUIRE(total_tasks(batches) == 1);
    CHECK(batches[0].tasks[0].id == "t1");
}

TEST_CASE("After max_attempts worker deaths a task is lost", "[scheduler]") {
    Scheduler s;
    REQUIRE(s.submit("P", tasks_of({make_task("t1", "sum_random", /*max_attempts=*/2)}), t0).accepted == 1);

    add_worker(s, "A", 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    auto finals = s.remove_worker("A", /*died=*/true);
    CHECK(finals.empty());  // one death of two allowed
    CHECK(s.queued_count() == 1);

    add_worker(s, "B", 1);
    auto batches = s.dispatch();
    REQUIRE(total_tasks(batches) == 1);
    CHECK(batches[0].tasks[0].attempt == 2);
    finals = s.remove_worker("B", /*died=*/true);
    REQUIRE(finals.size() == 1);
    const FinalOutcome& f = finals[0];
    CHECK(f.reply_to == "inproc://sink");
    CHECK(f.outcome.id == "t1");
    CHECK(f.outcome.task == "sum_random");
    CHECK(f.outcome.status == proto::Status::lost);
    CHECK_THAT(f.outcome.error, Catch::Matchers::Contains("worker died"));
    CHECK(f.outcome.attempt == 2);
    CHECK(s.task_count() == 1);  // until settled
    CHECK(s.queued_count() == 0);
    CHECK(s.totals().lost == 1);
}

TEST_CASE("A task with max_attempts 1 is lost on the first worker death", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 1);
    REQUIRE(s.submit("P", tasks_of({make_task("t1", "sum_random", 1)}), t0).accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    auto finals = s.remove_worker("A");
    REQUIRE(finals.size() == 1);
    CHECK(finals[0].outcome.status == proto::Status::lost);
    CHECK_THAT(finals[0].outcome.error, Catch::Matchers::Contains("worker died 1 time"));
}

TEST_CASE("A dead worker's prefetched tasks beyond its slots do not count a death", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 3, {"sum_random"}, /*slots=*/1);
    REQUIRE(s.submit("P",
                     tasks_of({make_task("t1", "sum_random", 1), make_task("t2", "sum_random", 1),
                               make_task("t3", "sum_random", 1)}),
                     t0)
                .accepted == 3);
    REQUIRE(total_tasks(s.dispatch()) == 3);
    auto finals = s.remove_worker("A", true);
    // Only the first task (the one its single slot was running) is blamed.
    REQUIRE(finals.size() == 1);
    CHECK(finals[0].outcome.id == "t1");
    CHECK(s.task_count() == 3);  // t1 waits for SETTLE
    CHECK(s.queued_count() == 2);
}

TEST_CASE("a LOST with the worker's lost_key removes it as dead, and any other LOST is refused", "[scheduler]") {
    Scheduler s;
    auto hello = make_hello("id-A");
    hello.lost_key = std::string(16, 'k');
    REQUIRE(s.hello("A", hello, t0).empty());
    REQUIRE(ready_timed(s, "A", 1, t0));
    add_worker(s, "B", 0);  // registered without a lost_key: no supervisor speaks for it
    REQUIRE(s.submit("P", tasks_of({make_task("t1", "sum_random", 1)}), t0).accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    const auto gone = s.remove_lost_worker("no-such-worker", "any");
    REQUIRE(gone.has_value());  // gone already: nothing to do
    CHECK(gone->empty());
    CHECK_FALSE(s.remove_lost_worker("id-A", std::string(16, 'x')).has_value());
    CHECK_FALSE(s.remove_lost_worker("id-A", "").has_value());
    CHECK_FALSE(s.remove_lost_worker("id-B", "").has_value());
    CHECK(s.knows("A"));
    CHECK(s.knows("B"));
    auto finals = s.remove_lost_worker("id-A", std::string(16, 'k'));
    REQUIRE(finals.has_value());
    CHECK_FALSE(s.knows("A"));
    REQUIRE(finals->size() == 1);
    CHECK((*finals)[0].outcome.status == proto::Status::lost);
}

TEST_CASE("A worker that says BYE gives its tasks back without counting a death", "[scheduler]") {
    Scheduler s;
    REQUIRE(s.submit("P", tasks_of({make_task("t1", "sum_random", /*max_attempts=*/1)}), t0).accepted == 1);
    for (int round = 0; round < 3; ++round) {
        const std::string w = "W" + std::to_string(round);
        add_worker(s, w, 1);
        auto batches = s.dispatch();
        REQUIRE(total_tasks(batches) == 1);
        CHECK(batches[0].tasks[0].attempt == static_cast<std::uint32_t>(round + 1));
        auto finals = s.remove_worker(w, /*died=*/false);
        CHECK(finals.empty());
        CHECK(s.task_count() == 1);
        CHECK(s.queued_count() == 1);
    }
    CHECK(s.totals().lost == 0);

    // The task's single allowed death is still unused.
    add_worker(s, "last", 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    auto finals = s.remove_worker("last", /*died=*/true);
    REQUIRE(finals.size() == 1);
    CHECK(finals[0].outcome.status == proto::Status::lost);
}

TEST_CASE("A worker that says HELLO again gets its earlier tasks requeued", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 1);
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    auto finals = s.hello("A", make_hello("id-A2"), t0 + 1s);
    CHECK(finals.empty());
    CHECK(s.held_by("A") == 0);
    CHECK(s.credits_of("A") == 0);
    CHECK(s.queued_count() == 1);
    CHECK(s.worker_count() == 1);
}

TEST_CASE("ready and seen on an unknown identity return false", "[scheduler]") {
    Scheduler s;
    CHECK_FALSE(ready_timed(s, "ghost", 5, t0));
    CHECK_FALSE(s.seen("ghost", t0));
    CHECK_FALSE(s.knows("ghost"));
    CHECK(s.worker_count() == 0);
    CHECK(s.credits_of("ghost") == 0);
    CHECK(s.held_by("ghost") == 0);
    CHECK(s.remove_worker("ghost").empty());

    add_worker(s, "A", 0);
    CHECK(ready_timed(s, "A", 1, t0));
    CHECK(s.seen("A", t0));
    // A removed worker is unknown again.
    REQUIRE(s.remove_worker("A", false).empty());
    CHECK_FALSE(ready_timed(s, "A", 1, t0));
    CHECK_FALSE(s.seen("A", t0));
}

TEST_CASE("Cancelling a queued task returns a cancelled outcome", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 0);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2")}), t0).accepted == 2);
    auto finals = s.cancel("P", {"t1", "unknown"});
    REQUIRE(finals.size() == 1);
    CHECK(finals[0].reply_to == "inproc://sink");
    CHECK(finals[0].outcome.id == "t1");
    CHECK(finals[0].outcome.task == "sum_random");
    CHECK(finals[0].outcome.status == proto::Status::cancelled);
    CHECK(s.task_count() == 2);  // t1 waits for SETTLE
    CHECK(s.queued_count() == 1);
    CHECK(s.totals().cancelled == 1);

    // The cancelled task is never dispatched.
    REQUIRE(ready_timed(s, "A", 5, t0));
    auto batches = s.dispatch();
    REQUIRE(total_tasks(batches) == 1);
    CHECK(batches[0].tasks[0].id == "t2");
}

TEST_CASE("Cancelling a running task leaves it to finish", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 1);
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    CHECK(s.cancel("P", {"t1"}).empty());
    CHECK(s.task_count() == 1);
    CHECK(s.held_by("A") == 1);
}

TEST_CASE("A gone producer's queued tasks are cancelled except detached ones", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 0);
    auto detached = make_task("t3");
    detached.detached = true;
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2"), detached}), t0).accepted == 3);
    REQUIRE(s.submit("Q", tasks_of({make_task("q1")}), t0).accepted == 1);
    const auto finals = s.producer_gone("P");
    REQUIRE(finals.size() == 2);
    for (const auto& f : finals) {
        CHECK(f.outcome.status == drover::proto::Status::cancelled);
        CHECK(f.outcome.error == "producer gone");
    }
    CHECK(s.task_count() == 2);
    CHECK(s.queued_count() == 2);
    CHECK(s.totals().cancelled == 2);
}

TEST_CASE("a gone producer's running tasks are forgotten and leave their worker's held set", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 1);
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    CHECK(s.held_by("A") == 1);
    CHECK(s.producer_gone("P").size() == 1);
    CHECK(s.held_by("A") == 0);
    CHECK(s.task_count() == 0);
}

TEST_CASE("a worker that registers again over a new connection gives its tasks back without a death", "[scheduler]") {
    Scheduler s;
    drover::proto::Hello h;
    h.worker = "w1";
    h.slots = 1;
    h.tasks = {"sum_random"};
    (void)s.hello("old", h, t0);
    REQUIRE(ready_timed(s, "old", 1, t0));
    auto t = make_task("t1");
    t.max_attempts = 1;
    REQUIRE(s.submit("P", tasks_of({t}), t0).accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    const auto finals = s.hello("new", h, t0);
    CHECK(finals.empty());  // not lost, although max_attempts is 1
    CHECK(!s.knows("old"));
    CHECK(s.queued_count() == 1);
}

TEST_CASE("undo_dispatch returns the tasks to the queue and the credits to the worker", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 2);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2"), make_task("t3")}), t0).accepted == 3);
    auto batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    REQUIRE(batches[0].tasks.size() == 2);
    REQUIRE(s.credits_of("A") == 0);

    s.undo_dispatch(batches[0]);
    CHECK(s.credits_of("A") == 2);
    CHECK(s.held_by("A") == 0);
    CHECK(s.queued_count() == 3);
    CHECK(s.task_count() == 3);
    CHECK(s.totals().dispatched == 0);
    CHECK(s.totals().dispatch_batches == 0);

    // The same tasks go again, in order, and the failed send is not an attempt.
    auto again = s.dispatch();
    REQUIRE(again.size() == 1);
    REQUIRE(again[0].tasks.size() == 2);
    CHECK(again[0].tasks[0].id == "t1");
    CHECK(again[0].tasks[1].id == "t2");
    CHECK(again[0].tasks[0].attempt == 1);
    CHECK(again[0].tasks[1].attempt == 1);
}

TEST_CASE("A task refused as too large for its worker ends with an error and the worker keeps its credit",
          "[scheduler]") {
    Scheduler s;
    auto h = make_hello("id-A");
    h.max_message_bytes = 8192;
    REQUIRE(s.hello("A", h, t0).empty());
    REQUIRE(ready_timed(s, "A", 1, t0));
    add_worker(s, "B", 1);
    REQUIRE(s.submit("P", tasks_of({make_task("big"), make_task("t2")}), t0).accepted == 2);
    auto batches = s.dispatch();
    REQUIRE(batches.size() == 2);
    const auto& to_a = batches[0].worker == "A" ? batches[0] : batches[1];
    const auto& to_b = batches[0].worker == "A" ? batches[1] : batches[0];
    CHECK(to_a.accepts == 8192);  // from its HELLO
    CHECK(to_b.accepts == 0);     // not said
    REQUIRE(to_a.tasks.size() == 1);
    const std::string id(to_a.tasks[0].id);
    const std::string other = id == "big" ? "t2" : "big";

    CHECK_FALSE(s.refuse_dispatched("B", id, "not B's"));  // held by A, not B
    auto f = s.refuse_dispatched("A", id, "too large for A");
    REQUIRE(f);
    CHECK(f->outcome.id == id);
    CHECK(f->outcome.status == proto::Status::error);
    CHECK(f->outcome.error == "too large for A");
    CHECK(f->outcome.worker == "broker");
    CHECK(f->outcome.attempt == 0);  // it never ran
    CHECK(f->reply_to == "inproc://sink");
    CHECK(s.credits_of("A") == 1);
    CHECK(s.held_by("A") == 0);
    CHECK(s.held_by("B") == 1);
    CHECK(s.totals().too_large == 1);
    CHECK(s.totals().dispatched == 1);
    CHECK_FALSE(s.refuse_dispatched("A", id, "again"));  // ended already
    s.settle("P", {id, other});
    CHECK(s.task_count() == 0);
}

TEST_CASE("status reports workers, queues and totals", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 3, {"sum_random", "hello"}, 4);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2", "hello")}), t0).accepted == 2);
    REQUIRE(total_tasks(s.dispatch()) == 2);
    auto st = s.status(t0 + 1500ms);
    REQUIRE(st["workers"].size() == 1);
    const auto& w = st["workers"][0];
    CHECK(w["id"] == "id-A");
    CHECK(w["host"] == "host-id-A");
    CHECK(w["pid"] == 1234);
    CHECK(w["slots"] == 4);
    CHECK(w["credits"] == 1);
    CHECK(w["held"] == 2);
    CHECK(w["last_heartbeat_ms"] == 1500);
    CHECK(st["in_flight"] == 2);
    CHECK(st["queued"] == 0);
    CHECK(st["queues"]["sum_random"]["in_flight"] == 1);
    CHECK(st["queues"]["hello"]["workers"] == 1);
    CHECK(st["totals"]["accepted"] == 2);
    CHECK(st["totals"]["dispatched"] == 2);
}

TEST_CASE("status groups workers by host", "[scheduler]") {
    Scheduler s;
    auto h1 = make_hello("w1", {"sum_random"}, 2);
    h1.host = "hostC";
    h1.pool = "threads";
    auto h2 = make_hello("w2", {"sum_random"}, 1);
    h2.host = "hostC";
    h2.pool = "processes";
    auto h3 = make_hello("w3", {"sum_random"}, 4);
    h3.host = "hostD";
    const std::vector<std::pair<std::string, proto::Hello*>> workers{{"A", &h1}, {"B", &h2}, {"C", &h3}};
    for (const auto& [identity, hello] : workers) {
        REQUIRE(s.hello(identity, *hello, t0).empty());
        REQUIRE(ready_timed(s, identity, 1, t0));
    }
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    const auto hosts = s.status(t0)["hosts"];
    REQUIRE(hosts.size() == 2);
    CHECK(hosts["hostC"]["workers"] == 2);
    CHECK(hosts["hostC"]["slots"] == 3);
    CHECK(hosts["hostC"]["pools"] == nlohmann::json::array({"threads", "processes"}));
    CHECK(hosts["hostD"]["workers"] == 1);
    CHECK(hosts["hostD"]["slots"] == 4);
    CHECK(hosts["hostC"]["held"].get<int>() + hosts["hostD"]["held"].get<int>() == 1);
}

TEST_CASE("compact gives back the memory of settled tasks only when none is held, and tasks run after it",
          "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 100);
    std::vector<proto::Task> batch;
    for (int i = 0; i < 50; ++i) batch.push_back(make_task("t" + std::to_string(i)));
    REQUIRE(s.submit("P", std::move(batch), t0).accepted == 50);
    REQUIRE(total_tasks(s.dispatch()) == 50);
    CHECK_FALSE(s.compact());  // tasks are held
    std::vector<std::string> ids;
    for (int i = 0; i < 50; ++i) ids.push_back("t" + std::to_string(i));
    s.settle("P", ids);
    REQUIRE(s.task_count() == 0);
    CHECK(s.compact());
    CHECK_FALSE(s.compact());  // nothing left to give back
    // Slots start again from 0 with generation 0: nothing stale may match.
    REQUIRE(s.submit("P", tasks_of({make_task("again"), make_task("t1")}), t0).accepted == 2);
    REQUIRE(ready_timed(s, "A", 2, t0));
    const auto batches = s.dispatch();
    REQUIRE(total_tasks(batches) == 2);
    CHECK(s.held_by("A") == 2);
    s.settle("P", {"again", "t1"});
    CHECK(s.task_count() == 0);
    CHECK(s.status(t0)["workers"][0]["done"] == 52);
}

// cancel()/settle() leave the id's slot in its name's queue (dispatch skips
// it lazily); status() must still count the resubmitted task once.
TEST_CASE("status counts a queued task once after it was cancelled and resubmitted", "[scheduler]") {
    Scheduler s;
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    REQUIRE(s.cancel("P", {"t1"}).size() == 1);
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    s.settle("P", {"t1"});
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    REQUIRE(s.queued_count() == 1);
    auto st = s.status(t0);
    CHECK(st["queued"] == 1);
    CHECK(st["queues"]["sum_random"]["queued"] == 1);
}

TEST_CASE("RETRY queues a task again after an exponential back-off", "[scheduler][retry]") {
    SchedulerLimits limits;
    limits.retry_base = Millis(100);
    limits.retry_max = Millis(250);
    Scheduler s(limits);
    add_worker(s, "A", 5);
    REQUIRE(s.submit("P", tasks_of({make_task("t1", "sum_random", 4)}), t0).accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);

    CHECK_FALSE(s.retry("ghost", {"t1"}, t0).has_value());  // unknown worker: RESET
    auto finals = s.retry("A", {"t1"}, t0);
    REQUIRE(finals.has_value());
    CHECK(finals->empty());
    CHECK(s.held_by("A") == 0);
    CHECK(s.queued_count() == 0);
    CHECK(s.status(t0)["retrying"] == 1);
    // Attempt 1 failed: 100 ms.
    CHECK(s.release_retries(t0 + Millis(99)) == t0 + Millis(100));
    CHECK(total_tasks(s.dispatch()) == 0);
    CHECK(s.release_retries(t0 + Millis(100)) == Clock::time_point::max());
    auto b = s.dispatch();
    REQUIRE(total_tasks(b) == 1);
    CHECK(b[0].tasks[0].attempt == 2);
    // Attempt 2 failed: 200 ms; attempt 3: capped at 250 ms.
    REQUIRE(s.retry("A", {"t1"}, t0 + Millis(1000)));
    CHECK(s.release_retries(t0 + Millis(1000)) == t0 + Millis(1200));
    s.release_retries(t0 + Millis(1200));
    REQUIRE(total_tasks(s.dispatch()) == 1);
    REQUIRE(s.retry("A", {"t1"}, t0 + Millis(2000)));
    CHECK(s.release_retries(t0 + Millis(2000)) == t0 + Millis(2250));
    CHECK(s.totals().retried == 3);
}

TEST_CASE("RETRY of a task with no attempt left ends it as lost", "[scheduler][retry]") {
    Scheduler s;
    add_worker(s, "A", 1);
    REQUIRE(s.submit("P", tasks_of({make_task("t1", "sum_random", 1)}), t0).accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    auto finals = s.retry("A", {"t1", "not-held"}, t0);
    REQUIRE(finals.has_value());
    REQUIRE(finals->size() == 1);
    CHECK((*finals)[0].outcome.status == proto::Status::lost);
    CHECK(s.totals().lost == 1);
}

TEST_CASE("A task waiting out its back-off can be cancelled and settled", "[scheduler][retry]") {
    Scheduler s;
    add_worker(s, "A", 2);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2")}), t0).accepted == 2);
    REQUIRE(total_tasks(s.dispatch()) == 2);
    REQUIRE(s.retry("A", {"t1", "t2"}, t0));
    auto finals = s.cancel("P", {"t1"});
    REQUIRE(finals.size() == 1);
    CHECK(finals[0].outcome.status == proto::Status::cancelled);
    s.settle("P", {"t2"});
    s.release_retries(t0 + Millis(60000));
    REQUIRE(ready_timed(s, "A", 2, t0));
    CHECK(total_tasks(s.dispatch()) == 0);
}

TEST_CASE("A broker-made outcome is sent again until settled, then given up", "[scheduler][report]") {
    SchedulerLimits limits;  // window 3 s
    limits.report_tries = 3;
    Scheduler s(limits);
    add_worker(s, "A", 0);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2")}), t0).accepted == 2);
    REQUIRE(s.cancel("P", {"t1", "t2"}).size() == 2);
    CHECK(s.reports_due(t0).empty());  // scheduled: first resend after one window
    CHECK(s.reports_due(t0 + Millis(2999)).empty());
    auto again = s.reports_due(t0 + Millis(3000));
    CHECK(again.size() == 2);
    s.settle("P", {"t2"});
    CHECK(s.reports_due(t0 + Millis(8999)).empty());  // then after two windows
    again = s.reports_due(t0 + Millis(9000));
    REQUIRE(again.size() == 1);
    CHECK(again[0].outcome.id == "t1");
    CHECK(again[0].outcome.status == proto::Status::cancelled);
    // Three sends in all: the next one gives up and forgets the task.
    CHECK(s.reports_due(t0 + Millis(60000)).empty());
    CHECK(s.task_count() == 0);
    CHECK(s.totals().reports_resent == 3);  // t1 and t2, then t1
    CHECK(s.totals().reports_abandoned == 1);
}

TEST_CASE("A resubmitted id whose outcome the broker made gets that outcome again", "[scheduler][report]") {
    Scheduler s;
    add_worker(s, "A", 0);
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    REQUIRE(s.cancel("P", {"t1"}).size() == 1);
    auto sub = s.submit("P", tasks_of({make_task("t1")}), t0);
    CHECK(sub.accepted == 1);
    REQUIRE(sub.finals.size() == 1);
    CHECK(sub.finals[0].outcome.status == proto::Status::cancelled);
    CHECK(s.queued_count() == 0);
}

TEST_CASE("BYE with ids: those tasks end as timeout, sent until settled, and the others go back unblamed",
          "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 2, {"sum_random"}, /*slots=*/1);
    auto t1 = make_task("t1", "sum_random", 1);
    t1.timeout_ms = 200;
    REQUIRE(s.submit("P", tasks_of({t1, make_task("t2", "sum_random", 1)}), t0).accepted == 2);
    REQUIRE(total_tasks(s.dispatch()) == 2);
    auto finals = s.remove_worker("A", /*died=*/false, {"t1"});
    // The worker's own `timeout` may never leave it (it exits): the broker's is the same outcome.
    REQUIRE(finals.size() == 1);
    CHECK(finals[0].outcome.id == "t1");
    CHECK(finals[0].outcome.status == proto::Status::timeout);
    CHECK(finals[0].outcome.error == "timed out after 200 ms");
    CHECK(finals[0].outcome.worker == "broker");
    CHECK(s.reports_due(t0).empty());
    REQUIRE(s.reports_due(t0 + 4s).size() == 1);  // again after a liveness window (3 s): not settled yet
    CHECK(s.task_count() == 2);
    CHECK(s.queued_count() == 1);  // t2
    CHECK(s.status(t0)["awaiting_settle"] == 1);
    add_worker(s, "B", 5);
    auto b = s.dispatch();
    REQUIRE(total_tasks(b) == 1);
    CHECK(b[0].tasks[0].id == "t2");
    s.settle("P", {"t1"});
    CHECK(s.task_count() == 1);
    // A producer that goes gets no second outcome for an ended task.
    REQUIRE(s.submit("Q", tasks_of({make_task("t3")}), t0).accepted == 1);
    std::size_t refused = 0;
    CHECK(s.cancel("P", {"t3"}, &refused).empty());  // not P's task
    CHECK(refused == 1);
    REQUIRE(s.cancel("Q", {"t3"}).size() == 1);
    CHECK(s.producer_gone("Q").empty());
}

TEST_CASE("Tasks whose worker holds none of them and no sink settles run again after the grace",
          "[scheduler][unsettled]") {
    Scheduler s;  // heartbeat 1 s x liveness 3 x 4 windows: 12 s of grace
    add_worker(s, "A", 3);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2"), make_task("t3")}), t0).accepted == 3);
    REQUIRE(total_tasks(s.dispatch()) == 3);
    s.settle("P", {"t1"});  // its outcome arrived

    CHECK_FALSE(s.worker_holds("ghost", 0, t0).has_value());  // unknown worker: RESET
    REQUIRE(s.worker_holds("A", 0, t0)->empty());             // the tasks may not have reached it yet
    REQUIRE(s.worker_holds("A", 0, t0 + 1s)->empty());        // now they had: done, their outcomes should settle
    // A task dispatched after that is not suspect.
    REQUIRE(s.submit("P", tasks_of({make_task("t4")}), t0 + 2s).accepted == 1);
    REQUIRE(ready_timed(s, "A", 1, t0 + 2s));
    REQUIRE(total_tasks(s.dispatch()) == 1);
    REQUIRE(s.worker_holds("A", 0, t0 + 12s)->empty());  // 11 s: within the grace
    CHECK(s.held_by("A") == 3);
    CHECK(s.totals().recovered == 0);

    auto finals = s.worker_holds("A", 0, t0 + 13s);
    REQUIRE(finals.has_value());
    CHECK(finals->empty());  // attempts left: they run again
    CHECK(s.totals().recovered == 2);
    CHECK(s.held_by("A") == 1);  // t4
    CHECK(s.status(t0 + 13s)["retrying"] == 2);
    s.release_retries(t0 + 20s);
    add_worker(s, "B", 5);
    auto again = s.dispatch();
    REQUIRE(total_tasks(again) == 2);
    CHECK(again[0].worker == "B");
    CHECK(again[0].tasks[0].attempt == 2);
    CHECK(s.status(t0 + 20s)["totals"]["recovered"] == 2);
}

TEST_CASE("A worker busy again after saying it holds none does not delay the re-run of what it had finished",
          "[scheduler][unsettled]") {
    Scheduler s;
    add_worker(s, "A", 2);
    REQUIRE(s.submit("P", tasks_of({make_task("t1")}), t0).accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    REQUIRE(s.worker_holds("A", 0, t0)->empty());
    REQUIRE(s.worker_holds("A", 0, t0 + 1s)->empty());  // t1 finished: the grace starts
    REQUIRE(s.submit("P", tasks_of({make_task("t2")}), t0 + 2s).accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    REQUIRE(s.worker_holds("A", 1, t0 + 5s)->empty());  // busy with t2 (a long task)
    REQUIRE(s.worker_holds("A", 1, t0 + 12s)->empty());
    CHECK(s.totals().recovered == 0);
    REQUIRE(s.worker_holds("A", 1, t0 + 13s)->empty());
    CHECK(s.totals().recovered == 1);  // t1, not the running t2
    CHECK(s.held_by("A") == 1);
    CHECK(s.status(t0 + 13s)["retrying"] == 1);
    // t2 is not suspect while the worker says it holds it, however long.
    for (int i = 14; i < 60; ++i) REQUIRE(s.worker_holds("A", 1, t0 + std::chrono::seconds(i))->empty());
    CHECK(s.totals().recovered == 1);
    CHECK(s.held_by("A") == 1);
}

TEST_CASE("An unsettled task with no attempt left is not ended by its idle worker", "[scheduler][unsettled]") {
    // Its outcome may be slow rather than lost: a `lost` sent now could reach
    // the sink before the real outcome. It waits for that, or its worker's end.
    Scheduler s;
    add_worker(s, "A", 2);
    REQUIRE(s.submit("P", tasks_of({make_task("t1", "sum_random", 1), make_task("t2")}), t0).accepted == 2);
    REQUIRE(total_tasks(s.dispatch()) == 2);
    REQUIRE(s.worker_holds("A", 0, t0)->empty());
    REQUIRE(s.worker_holds("A", 0, t0 + 1s)->empty());
    auto finals = s.worker_holds("A", 0, t0 + 13s);
    REQUIRE(finals.has_value());
    CHECK(finals->empty());
    CHECK(s.totals().recovered == 1);  // t2 only
    CHECK(s.totals().lost == 0);
    CHECK(s.held_by("A") == 1);  // t1
    auto gone = s.remove_worker("A");
    REQUIRE(gone.size() == 1);  // its worker died: now it is lost
    CHECK(gone[0].outcome.id == "t1");
    CHECK(gone[0].outcome.status == proto::Status::lost);
}

TEST_CASE("A task without a reply_to of its own takes its batch's, and with neither it is invalid", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 5);
    auto own = make_task("t1");
    own.reply_to = "tcp://10.0.0.2:7000";
    auto inherits = make_task("t2");
    inherits.reply_to.clear();
    auto sub = s.submit("P", tasks_of({own, inherits}), t0, "tcp://10.0.0.1:6000");
    CHECK(sub.accepted == 2);
    CHECK(s.route_of("t1")->reply_to == "tcp://10.0.0.2:7000");
    CHECK(s.route_of("t2")->reply_to == "tcp://10.0.0.1:6000");

    auto none = make_task("t3");
    none.reply_to.clear();
    auto bad = s.submit("P", tasks_of({none}), t0);
    CHECK(bad.accepted == 0);
    CHECK(bad.rejected.begin()->second == std::vector<std::string>{"t3"});
}

TEST_CASE("Names alternating in one batch are each checked against the workers' tasks", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 10);
    auto sub = s.submit("P",
                        tasks_of({make_task("a1"), make_task("n1", "nope"), make_task("n2", "nope"), make_task("a2"),
                                  make_task("n3", "nope"), make_task("a3")}),
                        t0);
    CHECK(sub.accepted == 6);
    REQUIRE(sub.finals.size() == 3);
    for (const auto& f : sub.finals) {
        CHECK(f.outcome.id[0] == 'n');
        CHECK(f.outcome.status == proto::Status::error);
    }
    CHECK(s.queued_count() == 3);
}

TEST_CASE("An untimed or long task takes only a start credit or a free slot, never a prefetch credit", "[scheduler]") {
    Scheduler s;
    // Two solo workers with a big prefetch each (as after a burst of short tasks), busy.
    for (const auto* w : {"A", "B"})
        REQUIRE(s.hello(w, make_hello(std::string("id-") + w, {"sleep_ms", "echo"}), t0).empty());
    REQUIRE(s.ready("A", proto::Ready{1, 0, {{"echo", 1000}}}, t0));
    REQUIRE(s.submit("P", tasks_of({make_task("e1", "echo")}), t0, "tcp://sink").accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    REQUIRE(s.ready("B", proto::Ready{1, 0, {{"echo", 1000}}}, t0));
    REQUIRE(s.submit("P", tasks_of({make_task("e2", "echo")}), t0, "tcp://sink").accepted == 1);
    REQUIRE(total_tasks(s.dispatch()) == 1);
    REQUIRE(s.held_by("B") == 1);
    for (const auto* w : {"A", "B"}) REQUIRE(s.ready(w, proto::Ready{1000, 0, {}}, t0));
    // Each holds one task (its slot busy): untimed sleep_ms tasks wait.
    REQUIRE(s.submit("P", tasks_of({make_task("s1", "sleep_ms"), make_task("s2", "sleep_ms")}), t0, "tcp://sink")
                .accepted == 2);
    CHECK(s.dispatch().empty());
    // A start credit (a slot freed) takes one, on that worker only.
    REQUIRE(s.ready("A", proto::Ready{1, 1, {}}, t0));
    auto batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    CHECK(batches[0].worker == "A");
    REQUIRE(batches[0].tasks.size() == 1);
    CHECK(batches[0].tasks[0].start);
    // Timed long, it still does not take B's thousand prefetch credits.
    REQUIRE(s.ready("A", proto::Ready{0, 0, {{"sleep_ms", 500'000'000}}}, t0));
    CHECK(s.dispatch().empty());
    // B's echo settles: a free slot there takes the other.
    CHECK(s.settle("P", {"e2"}) == 0);
    batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    CHECK(batches[0].worker == "B");
    CHECK(batches[0].tasks.size() == 1);
}

TEST_CASE("Short tasks fill prefetch credits only up to about 16 ms of their run time a slot", "[scheduler]") {
    Scheduler s;
    REQUIRE(s.hello("A", make_hello("id-A", {"work"}), t0).empty());
    std::vector<proto::Task> tasks;
    for (int i = 0; i < 100; ++i) tasks.push_back(make_task("t" + std::to_string(i), "work"));
    REQUIRE(s.submit("P", std::move(tasks), t0, "tcp://sink").accepted == 100);
    REQUIRE(s.ready("A", proto::Ready{1000, 0, {{"work", 500'000}}}, t0));  // 0.5 ms each
    CHECK(total_tasks(s.dispatch()) == 32);
}

TEST_CASE("Tasks a worker gives back go to the front of the queue without counting an attempt", "[scheduler]") {
    Scheduler s;
    add_worker(s, "A", 3);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2"), make_task("t3")}), t0, "tcp://sink").accepted ==
            3);
    REQUIRE(total_tasks(s.dispatch()) == 3);
    // t1 runs; t2 and t3 come back (an id it does not hold is ignored).
    REQUIRE(s.give_back("A", {"t2", "t3", "nope"}, t0));
    CHECK(s.held_by("A") == 1);
    CHECK(s.queued_count() == 2);
    CHECK(s.totals().returned == 2);
    CHECK_FALSE(s.give_back("ghost", {"t2"}, t0));
    add_worker(s, "B", 2);
    const auto batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    CHECK(batches[0].worker == "B");
    REQUIRE(batches[0].tasks.size() == 2);
    CHECK(batches[0].tasks[0].id == "t2");
    CHECK(batches[0].tasks[1].id == "t3");
    CHECK(batches[0].tasks[0].attempt == 1);  // its first run
    // Given back twice is a no-op the second time: B holds them now.
    REQUIRE(s.give_back("A", {"t2"}, t0));
    CHECK(s.held_by("B") == 2);
}

TEST_CASE("A task name no task and no worker uses any more is forgotten", "[scheduler]") {
    Scheduler s;
    std::vector<std::string> ids;
    std::vector<proto::Task> tasks;
    for (int i = 0; i < 1000; ++i) {
        tasks.push_back(make_task("t" + std::to_string(i), "name-" + std::to_string(i)));
        ids.push_back(tasks.back().id);
    }
    REQUIRE(s.submit("P", std::move(tasks), t0).accepted == 1000);
    CHECK(s.name_count() == 1000);
    CHECK(s.cancel("P", ids).size() == 1000);
    s.settle("P", ids);
    CHECK(s.task_count() == 0);
    CHECK(s.name_count() == 0);
    CHECK(s.compact());
    // The ids of freed names are used again, and a name comes back as new.
    REQUIRE(s.submit("P", tasks_of({make_task("again", "name-7")}), t0).accepted == 1);
    CHECK(s.name_count() == 1);
    CHECK(s.status(t0)["queues"]["name-7"]["queued"] == 1);
}

TEST_CASE("Names workers announced are remembered, up to remembered_names, once nobody uses them", "[scheduler]") {
    SchedulerLimits limits;
    limits.remembered_names = 2;
    Scheduler s(limits);
    add_worker(s, "A", 0, {"n1", "n2", "n3"});
    add_worker(s, "B", 0, {"other"});
    (void)s.remove_worker("A", false);
    CHECK(s.name_count() == 3);  // "other" and the two last released of A's
    // A task of a remembered name waits for its worker; n1 was forgotten:
    // with a live worker that does not run it, its task ends as unknown.
    auto sub = s.submit("P", tasks_of({make_task("t3", "n3"), make_task("t1", "n1")}), t0);
    CHECK(sub.accepted == 2);
    REQUIRE(sub.finals.size() == 1);
    CHECK(sub.finals[0].outcome.id == "t1");
    CHECK_THAT(sub.finals[0].outcome.error, Catch::Matchers::Contains("unknown task"));
    CHECK(s.queued_count() == 1);
    // A worker that comes back with n1 makes it known again; renumbered names keep working.
    s.settle("P", {"t3", "t1"});
    CHECK(s.compact());
    add_worker(s, "C", 1, {"n1"});
    REQUIRE(s.submit("P", tasks_of({make_task("t4", "n1")}), t0).accepted == 1);
    const auto batches = s.dispatch();
    REQUIRE(batches.size() == 1);
    CHECK(batches[0].worker == "C");
    CHECK(batches[0].tasks[0].name == "n1");
}

TEST_CASE("max_queued counts queued, running and retrying tasks, and outcomes waiting for SETTLE have max_held",
          "[scheduler]") {
    SchedulerLimits limits;
    limits.max_queued = 2;
    limits.max_held = 3;
    Scheduler s(limits);
    add_worker(s, "A", 0);
    REQUIRE(s.submit("P", tasks_of({make_task("t1"), make_task("t2")}), t0).accepted == 2);
    CHECK(s.full());
    CHECK(s.submit("P", tasks_of({make_task("t3")}), t0).rejected.count("queue_full") == 1);
    // Cancelled: its outcome waits for SETTLE, and no longer counts as queued.
    REQUIRE(s.cancel("P", {"t1"}).size() == 1);
    CHECK(!s.full());
    CHECK(s.submit("P", tasks_of({make_task("t3")}), t0).accepted == 1);
    REQUIRE(s.cancel("P", {"t2"}).size() == 1);
    CHECK(s.active_count() == 1);
    // Three held in all: max_held refuses a fourth until a SETTLE.
    CHECK(s.submit("P", tasks_of({make_task("t4")}), t0).rejected.count("queue_full") == 1);
    s.settle("P", {"t1"});
    CHECK(s.submit("P", tasks_of({make_task("t4")}), t0).accepted == 1);
    // Running and waiting out a retry both count.
    REQUIRE(ready_timed(s, "A", 2, t0));
    REQUIRE(total_tasks(s.dispatch()) == 2);
    CHECK(s.active_count() == 2);
    REQUIRE(s.retry("A", {"t3"}, t0));
    CHECK(s.active_count() == 2);
    CHECK(s.full());
    s.settle("P", {"t2", "t3", "t4"});
    CHECK(s.active_count() == 0);
    CHECK(s.task_count() == 0);
}

TEST_CASE("A name's queue drops the refs of tasks that left it instead of keeping them all", "[scheduler]") {
    Scheduler s;
    REQUIRE(s.submit("P", tasks_of({make_task("stays")}), t0).accepted == 1);
    for (int i = 0; i < 10000; ++i) {
        const std::string id = "c" + std::to_string(i);
        REQUIRE(s.submit("P", tasks_of({make_task(id)}), t0).accepted == 1);
        REQUIRE(s.cancel("P", {id}).size() == 1);
        s.settle("P", {id});
    }
    CHECK(s.queue_refs("sum_random") <= 200);
    add_worker(s, "A", 5);
    const auto batches = s.dispatch();
    REQUIRE(total_tasks(batches) == 1);
    CHECK(batches[0].tasks[0].id == "stays");
}

TEST_CASE("An ended id submitted again and again gets its outcome again at most once a window", "[scheduler]") {
    Scheduler s;  // heartbeat 1 s x liveness 3
    add_worker(s, "A", 0);
    auto t = make_task("gone", "no_such_task");
    t.detached = true;
    auto sub = s.submit("P", tasks_of({t}), t0);
    REQUIRE(sub.finals.size() == 1);
    sub = s.submit("P", tasks_of({t}), t0 + 1ms);
    CHECK(sub.acknowledged == std::vector<std::string>{"gone"});  // answered each time
    CHECK(sub.finals.size() == 1);                                // the first repeat: it may have been missed
    for (int i = 0; i < 100; ++i) {
        sub = s.submit("P", tasks_of({t}), t0 + 2ms);
        CHECK(sub.acknowledged.size() == 1);
        CHECK(sub.finals.empty());
    }
    sub = s.submit("P", tasks_of({t}), t0 + 1ms + 3s);
    CHECK(sub.finals.size() == 1);
}

TEST_CASE("A ring queue keeps order at both ends and holds nothing when empty", "[scheduler]") {
    drover::RingQueue<int> q;
    CHECK(q.capacity() == 0);
    for (int i = 0; i < 100; ++i) q.push_back(i);
    q.push_front(-1);
    REQUIRE(q.size() == 101);
    CHECK(q.front() == -1);
    CHECK(q[100] == 99);
    q.remove_if([](int v) { return v % 2 != 0; });  // -1 and the odd ones
    REQUIRE(q.size() == 50);
    for (std::size_t i = 0; i < q.size(); ++i) CHECK(q[i] == static_cast<int>(2 * i));
    CHECK(q.capacity() == 128);
    q.remove_if([](int v) { return v >= 20; });  // a quarter full or less: the buffer shrinks
    REQUIRE(q.size() == 10);
    CHECK(q.capacity() == 32);
    CHECK(q[9] == 18);
    while (!q.empty()) q.pop_front();
    q.shrink();
    CHECK(q.capacity() == 0);
}
