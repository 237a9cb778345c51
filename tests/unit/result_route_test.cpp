// Unit tests of the worker's SinkReachability (result_route.hpp), driven with an injected clock.
#include <chrono>
#include <string>

#include <catch2/catch.hpp>

#include "result_route.hpp"

using drover::Clock;
using drover::SinkReachability;
using Verdict = drover::SinkReachability::Verdict;
using namespace std::chrono_literals;

namespace {

const auto t0 = Clock::time_point{} + std::chrono::hours(1);
const std::string sink = "tcp://10.0.0.7:5600";

}  // namespace

TEST_CASE("a sink's first try is noted once and kept", "[result_route]") {
    SinkReachability r(3s);
    auto s = r.trying(sink, t0);
    CHECK(s.first_try == t0);
    CHECK_FALSE(s.reached);
    CHECK_FALSE(s.via_broker);
    s = r.trying(sink, t0 + 1s);
    CHECK(s.first_try == t0);
    CHECK(r.trying("tcp://10.0.0.8:5600", t0 + 2s).first_try == t0 + 2s);  // each sink its own
}

TEST_CASE("a sink never reached within the liveness window gets its results through the broker", "[result_route]") {
    SinkReachability r(3s);
    (void)r.trying(sink, t0);
    CHECK(r.failed(sink, t0 + 1s) == Verdict::keep_trying);
    CHECK(r.failed(sink, t0 + 3s) == Verdict::keep_trying);
    CHECK(r.failed(sink, t0 + 3s + 1ms) == Verdict::now_via_broker);
    CHECK(r.failed(sink, t0 + 4s) == Verdict::via_broker);  // said once
    CHECK(r.trying(sink, t0 + 5s).via_broker);
    CHECK_FALSE(r.reached_directly(sink));
}

TEST_CASE("a sink once reached is never sent through the broker", "[result_route]") {
    SinkReachability r(3s);
    (void)r.trying(sink, t0);
    CHECK_FALSE(r.reached_directly(sink));
    r.reached(sink);
    CHECK(r.reached_directly(sink));
    CHECK(r.trying(sink, t0 + 1h).reached);
    CHECK(r.failed(sink, t0 + 1h) == Verdict::keep_trying);
    CHECK(r.reached_directly(sink));
}

TEST_CASE("a sink reached only through the broker is tried directly again, and taken off the detour once reached",
          "[result_route]") {
    SinkReachability r(3s);
    (void)r.trying(sink, t0);
    REQUIRE(r.failed(sink, t0 + 4s) == Verdict::now_via_broker);
    CHECK(r.reached_again(sink));  // it was going through the broker
    CHECK_FALSE(r.trying(sink, t0 + 5s).via_broker);
    CHECK_FALSE(r.reached_again(sink));  // already direct: nothing to log
}

TEST_CASE("an unknown sink is not taken for reached", "[result_route]") {
    SinkReachability r(3s);
    CHECK_FALSE(r.reached_directly(sink));
    (void)r.trying(sink, t0);
    CHECK_FALSE(r.reached_directly(sink));
}

TEST_CASE("past 4096 sinks, what was known is forgotten and proved again", "[result_route]") {
    SinkReachability r(3s);
    (void)r.trying(sink, t0);
    r.reached(sink);
    for (int i = 0; i < 4096; ++i) (void)r.trying("tcp://10.1.0.1:" + std::to_string(10000 + i), t0);
    const auto s = r.trying(sink, t0 + 1s);
    CHECK_FALSE(s.reached);
    CHECK(s.first_try == t0 + 1s);
}
