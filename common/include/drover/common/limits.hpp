// Limits every drover program applies to what it receives.
#pragma once

#include <cstddef>
#include <cstdint>

namespace drover {

// The default --max-message-bytes of every program.
inline constexpr std::int64_t k_default_max_message_bytes = 16 * 1024 * 1024;
// The smallest --max-message-bytes: a message keeps 1 KiB for its own
// fields, and a task or result needs room beside them.
inline constexpr std::int64_t k_min_max_message_bytes = 4096;

// The deepest nesting of arrays and maps (JSON objects) accepted in data a
// task carries: its arguments, its result, a task line. Decoders of such
// data recurse once a level, so unbounded nesting from a peer would
// overflow the receiver's stack; 256 leaves every decoder far from it.
inline constexpr std::size_t k_max_data_depth = 256;

}  // namespace drover
