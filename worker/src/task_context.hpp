// What a task can know of its run, beyond its arguments (executor thread-local).
#pragma once

#include <optional>
#include <stdexcept>

#include "drover/common/clock.hpp"

namespace drover {

// The deadline of the task running on this thread (its timeout_ms from its
// start), set by run_task around the task; none without a timeout.
std::optional<Clock::time_point>& current_task_deadline();

// Thrown by a task that stopped at a deadline: run_task ends it `timeout`.
class TaskTimedOut : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace drover
