// unpack_object: msgpack bytes to a msgpack::object in a zone, allocating nothing else.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

#include <msgpack.hpp>

#include "drover/common/limits.hpp"

namespace drover {

// Whether no array or map in the msgpack bytes is nested more than
// `max_depth` deep (at most k_max_data_depth; the outermost container is
// level 1, empty ones count). A loop, not a recursion, and no allocation.
// Bytes after the first value are read as more values at the top level.
// Malformed bytes (a cut, 0xc1) end the scan with true: the decoder then
// refuses them, and any decoder reading up to that point has nested no
// deeper than the scan saw.
[[nodiscard]] bool within_depth_limit(std::string_view bytes, std::size_t max_depth = k_max_data_depth) noexcept;

// "<what> nested deeper than 256 levels (limit)": how a task that carries
// data past k_max_data_depth ends.
[[nodiscard]] std::string too_deep_message(std::string_view what);

struct UnpackError : std::runtime_error {
    // trailing: one valid value was read, and bytes follow it.
    explicit UnpackError(const char* why, bool trailing_bytes = false)
        : std::runtime_error(why), trailing(trailing_bytes) {}
    bool trailing;
};

// Reads exactly one msgpack value from `bytes` into an object tree whose
// arrays and maps live in `zone`. Strings, binaries and extensions point into
// `bytes`, which must outlive the object. At most `max_depth` containers may
// be nested (msgpack-c's depth limit, empty ones included).
//
// msgpack::unpack builds the same tree, but allocates its parser's two
// stacks on the heap every call, and a worker unpacks each task's arguments
// (a cost that shows with small tasks: drover-bench W1).
// Recurses once a level: max_depth bounds its stack.
// Throws: UnpackError for bytes that are not one valid value within the
// limits (truncated, trailing bytes, 0xc1, too deep).
msgpack::object unpack_object(msgpack::zone& zone, std::string_view bytes, std::size_t max_depth = 64);

}  // namespace drover
