// Unit tests of the worker's TaskTimes: the run times by task name it tells the broker.
#include <chrono>

#include <catch2/catch.hpp>

#include "task_times.hpp"

using drover::NameTimes;
using drover::RunNs;
using drover::TaskTimes;

TEST_CASE("a task name's mean run time is told once, and again only when it changes 4x", "[task_times]") {
    TaskTimes t;
    CHECK(t.add(NameTimes{{"echo", {4, 4000}}}));
    RunNs due;
    t.take_due(due);
    CHECK(due == RunNs{{"echo", 1000}});
    due.clear();
    t.take_due(due);
    CHECK(due.empty());

    CHECK_FALSE(t.add(NameTimes{{"echo", {1, 3000}}}));  // 3x: the broker's figure still holds
    CHECK(t.add(NameTimes{{"echo", {1, 4000}}}));
    t.take_due(due);
    CHECK(due == RunNs{{"echo", 4000}});
    CHECK(t.add(NameTimes{{"echo", {2, 2000}}}));         // 4x shorter
    CHECK_FALSE(t.add(NameTimes{{"sleep_ms", {0, 0}}}));  // no task: nothing to tell
}

TEST_CASE("a new broker is told every known time again", "[task_times]") {
    TaskTimes t;
    (void)t.add(NameTimes{{"echo", {1, 1000}}, {"sleep_ms", {1, 5'000'000}}});
    RunNs due;
    t.take_due(due);
    REQUIRE(due.size() == 2);
    t.forget_told();
    RunNs again;
    t.take_due(again);
    CHECK(again.size() == 2);
}

TEST_CASE("a time told outside take_due counts as the broker's", "[task_times]") {
    TaskTimes t;
    t.told(RunNs{{"sleep_ms", 200'000'000}});                       // RETURN: the running task's time so far
    CHECK_FALSE(t.add(NameTimes{{"sleep_ms", {1, 100'000'000}}}));  // 2x: no news
    CHECK(t.add(NameTimes{{"sleep_ms", {1, 1'000'000'000}}}));
    RunNs due;
    t.take_due(due);
    CHECK(due == RunNs{{"sleep_ms", 1'000'000'000}});
}
