// When a task runs again: drover's one attempt and retry policy.
#pragma once

// The broker and the worker both decide whether an attempt that ended runs
// again (the worker for a timeout or an error it sees, the broker for a
// death and for a RETRY): both ask next_attempt(), so that they agree.
// Pure and allocation-free: callable on any thread, per task.

#include <algorithm>
#include <cstdint>

#include "drover/common/clock.hpp"

namespace drover {

// Attempts a task gets when its producer names none: ClientOptions's
// default, and a Task's when its max_attempts field is left out on the wire.
inline constexpr std::uint32_t k_default_max_attempts = 3;
// The most attempts the broker keeps for a task (16 bits a task).
inline constexpr std::uint32_t k_max_max_attempts = 0xffff;
// The back-off before a task's second attempt, doubling with each attempt
// after it, at most k_retry_backoff_max.
inline constexpr Millis k_retry_backoff_base{100};
inline constexpr Millis k_retry_backoff_max{10000};

// The attempts a task asking for `asked` gets: at least one, at most k_max_max_attempts.
[[nodiscard]] constexpr std::uint32_t allowed_attempts(std::uint32_t asked) {
    return std::clamp<std::uint32_t>(asked, 1, k_max_max_attempts);
}

// How an attempt ended, as far as running the task again goes.
enum class AttemptEnd : std::uint8_t {
    died,       // its worker died (or was lost) while it may have been running it
    timed_out,  // it ran past its timeout_ms
    failed,     // it ended with an error
    // Its worker asked for another attempt (RETRY: a timeout or an error it
    // retries, or an outcome that could not reach its sink).
    retried,
};

// What the deciding process knows of a task's attempts.
struct AttemptCount {
    std::uint32_t attempt = 0;  // the attempt that ended: times dispatched, it included
    std::uint32_t max_attempts = k_default_max_attempts;
    std::uint32_t deaths = 0;  // attempts its workers' deaths ended, this one included (`died` only)
    bool retry_on_error = false;
};

struct RetryBackoff {
    Millis base = k_retry_backoff_base;
    Millis max = k_retry_backoff_max;
};

struct NextAttempt {
    // It runs again; else it ends (`lost` after a death or a RETRY, else
    // with the outcome of the attempt that ended).
    bool again = false;
    Millis after{0};  // wait before it is queued again; 0: at once, at the front of its queue
};

// The back-off after attempt `attempt` (1-based) failed: base x 2^(attempt-1), at most max.
[[nodiscard]] constexpr Millis retry_backoff(std::uint32_t attempt, const RetryBackoff& backoff = {}) {
    const auto shift = std::min<std::uint32_t>(std::max<std::uint32_t>(attempt, 1) - 1, 16);
    return std::min<Millis>(backoff.base * (1LL << shift), backoff.max);
}

// Whether a task whose attempt ended as `end` runs again, and when. A death
// counts against max_attempts by deaths (a task dispatched again for other
// reasons keeps its chances), and it runs again at once; every other end
// counts by attempts and waits out retry_backoff(). An error runs again
// only with retry_on_error.
[[nodiscard]] constexpr NextAttempt next_attempt(AttemptEnd end, const AttemptCount& count,
                                                 const RetryBackoff& backoff = {}) {
    switch (end) {
        case AttemptEnd::died: return NextAttempt{count.deaths < count.max_attempts, Millis(0)};
        case AttemptEnd::failed:
            if (!count.retry_on_error) return NextAttempt{};
            break;
        case AttemptEnd::timed_out:
        case AttemptEnd::retried: break;
    }
    if (count.attempt >= count.max_attempts) return NextAttempt{};
    return NextAttempt{true, retry_backoff(count.attempt, backoff)};
}

}  // namespace drover
