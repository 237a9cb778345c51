// unpack_object: msgpack bytes to a msgpack::object in a zone, allocating nothing else.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string_view>

#include <msgpack.hpp>

namespace drover {

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
// stacks on the heap every call: a worker's task arguments are unpacked once
// a task, and on small tasks those allocations were a tenth of the worker.
// Throws: UnpackError for bytes that are not one valid value within the
// limits (truncated, trailing bytes, 0xc1, too deep).
msgpack::object unpack_object(msgpack::zone& zone, std::string_view bytes, std::size_t max_depth = 64);

}  // namespace drover
