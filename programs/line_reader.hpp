// Lines of a file descriptor for drover-producer's submit and map.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "drover/common/stop.hpp"

namespace drover {

// The longest input line taken: a task travels in one message, at most 16
// MiB by default. A longer line is read past without being kept.
inline constexpr std::size_t k_max_line_bytes = std::size_t{16} << 20;

// Reads lines from a file descriptor, and gives up at once when `stop` is
// requested, even while no line is coming (a terminal, an idle pipe). Not
// thread-safe: one reading thread.
class LineReader {
public:
    explicit LineReader(int fd) : fd_(fd) {}

    // Called with true before waiting for input that is not there yet, and
    // with false once it is (submit flushes its results then).
    std::function<void(bool)> on_wait;

    // The next line, without its '\n'. A line past k_max_line_bytes comes
    // back empty with `too_long` set. Returns false at the end of the input
    // or on a stop request.
    bool next(std::string& line, bool& too_long, const StopSource& stop);

private:
    bool wait_readable(const StopSource& stop);
    bool read_more(const StopSource& stop);

    int fd_;
    std::string buffer_;
    std::size_t start_ = 0;    // where the next line begins
    std::size_t scanned_ = 0;  // buffer_[start_, scanned_) has no '\n'
    bool eof_ = false;
    bool skipping_ = false;  // inside a line past k_max_line_bytes
};

}  // namespace drover
