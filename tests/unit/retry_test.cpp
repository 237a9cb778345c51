// Unit tests of the retry policy (drover/common/retry.hpp) that broker and worker share.
#include <chrono>
#include <cstdint>

#include <catch2/catch.hpp>

#include "drover/client/client.hpp"
#include "drover/common/protocol.hpp"
#include "drover/common/retry.hpp"

using drover::AttemptCount;
using drover::AttemptEnd;
using drover::Millis;
using drover::next_attempt;
using drover::RetryBackoff;
using namespace std::chrono_literals;

TEST_CASE("a task gets 3 attempts unless its producer says otherwise, wherever the default is read", "[retry]") {
    CHECK(drover::k_default_max_attempts == 3);
    CHECK(drover::proto::k_default_max_attempts == drover::k_default_max_attempts);
    CHECK(drover::proto::Task{}.max_attempts == drover::k_default_max_attempts);
    CHECK(drover::ClientOptions{}.max_attempts == drover::k_default_max_attempts);
    CHECK(AttemptCount{}.max_attempts == drover::k_default_max_attempts);
}

TEST_CASE("a task asking for no attempts gets one, and at most 65535", "[retry]") {
    CHECK(drover::allowed_attempts(0) == 1);
    CHECK(drover::allowed_attempts(1) == 1);
    CHECK(drover::allowed_attempts(7) == 7);
    CHECK(drover::allowed_attempts(0xffff) == 0xffff);
    CHECK(drover::allowed_attempts(0x10000) == 0xffff);
    CHECK(drover::allowed_attempts(0xffffffff) == 0xffff);
}

TEST_CASE("a task whose worker died runs again at once until it has died max_attempts times", "[retry]") {
    // Deaths count, not attempts: a task dispatched again for other reasons keeps its chances.
    CHECK(next_attempt(AttemptEnd::died, {5, 3, 1}).again);
    CHECK(next_attempt(AttemptEnd::died, {5, 3, 2}).again);
    CHECK(next_attempt(AttemptEnd::died, {5, 3, 2}).after == 0ms);
    CHECK_FALSE(next_attempt(AttemptEnd::died, {1, 3, 3}).again);
    CHECK_FALSE(next_attempt(AttemptEnd::died, {1, 1, 1}).again);
}

TEST_CASE("a timed-out task runs again after a doubling back-off while it has attempts left", "[retry]") {
    const auto first = next_attempt(AttemptEnd::timed_out, {1, 3});
    CHECK(first.again);
    CHECK(first.after == 100ms);
    const auto second = next_attempt(AttemptEnd::timed_out, {2, 3});
    CHECK(second.again);
    CHECK(second.after == 200ms);
    CHECK_FALSE(next_attempt(AttemptEnd::timed_out, {3, 3}).again);
    CHECK_FALSE(next_attempt(AttemptEnd::timed_out, {1, 1}).again);
}

TEST_CASE("a task that failed with an error runs again only with retry_on_error", "[retry]") {
    CHECK_FALSE(next_attempt(AttemptEnd::failed, {1, 3, 0, false}).again);
    const auto again = next_attempt(AttemptEnd::failed, {1, 3, 0, true});
    CHECK(again.again);
    CHECK(again.after == 100ms);
    CHECK_FALSE(next_attempt(AttemptEnd::failed, {3, 3, 0, true}).again);
}

TEST_CASE("a task its worker sent back (RETRY) runs again while it has attempts left, else it ends", "[retry]") {
    CHECK(next_attempt(AttemptEnd::retried, {1, 2}).again);
    CHECK_FALSE(next_attempt(AttemptEnd::retried, {2, 2}).again);
    CHECK_FALSE(next_attempt(AttemptEnd::retried, {9, 2}).again);
}

TEST_CASE("the retry back-off doubles from its base up to its cap", "[retry]") {
    const RetryBackoff b{Millis(100), Millis(250)};
    CHECK(drover::retry_backoff(0, b) == 100ms);  // an attempt never counted waits as the first
    CHECK(drover::retry_backoff(1, b) == 100ms);
    CHECK(drover::retry_backoff(2, b) == 200ms);
    CHECK(drover::retry_backoff(3, b) == 250ms);
    CHECK(drover::retry_backoff(60000, b) == 250ms);
    CHECK(drover::retry_backoff(17) == 10000ms);  // the default cap
    CHECK(next_attempt(AttemptEnd::retried, {2, 5}, b).after == 200ms);
}

TEST_CASE("every end of an attempt is decided by its one rule, for any count", "[retry]") {
    // The rules, one expression each: deaths against max_attempts; attempts
    // against it for a timeout, a RETRY, or an error with retry_on_error;
    // the back-off 100 ms x 2^(attempt-1), at most 10 s.
    const auto backoff_of = [](std::uint32_t attempt) {
        const auto shift = std::min<std::uint32_t>(std::max<std::uint32_t>(attempt, 1) - 1, 16);
        return std::min<Millis>(Millis(100) * (1LL << shift), Millis(10000));
    };
    for (std::uint32_t max = 1; max <= 6; ++max) {
        for (std::uint32_t attempt = 0; attempt <= 24; ++attempt) {
            for (std::uint32_t deaths = 0; deaths <= 7; ++deaths) {
                CHECK(next_attempt(AttemptEnd::died, {attempt, max, deaths}).again == !(deaths >= max));
                CHECK(next_attempt(AttemptEnd::timed_out, {attempt, max, deaths}).again == (attempt < max));
            }
            for (const bool on_error : {false, true}) {
                const auto failed = next_attempt(AttemptEnd::failed, {attempt, max, 0, on_error});
                CHECK(failed.again == (on_error && attempt < max));
            }
            const auto retried = next_attempt(AttemptEnd::retried, {attempt, max});
            CHECK(retried.again == !(attempt >= max));
            if (retried.again) CHECK(retried.after == backoff_of(attempt));
        }
    }
}
