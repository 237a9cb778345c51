// The one clock drover decides timeouts by.
#pragma once

#include <chrono>

namespace drover {

// Monotonic: no timeout in drover reads the wall clock.
using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

}  // namespace drover
