// Lines of a file descriptor (line_reader.hpp).
#include "line_reader.hpp"

#include <cerrno>
#include <utility>

#include <poll.h>
#include <unistd.h>

namespace drover {

bool LineReader::next(std::string& line, bool& too_long, const StopSource& stop) {
    too_long = false;
    while (true) {
        if (stop.stop_requested()) return false;
        if (auto nl = buffer_.find('\n', scanned_); nl != std::string::npos) {
            if (skipping_) line.clear();
            else line.assign(buffer_, start_, nl - start_);
            too_long = std::exchange(skipping_, false);
            start_ = scanned_ = nl + 1;
            return true;
        }
        if (buffer_.size() - start_ > k_max_line_bytes) {  // keep nothing more of this line
            skipping_ = true;
            buffer_.clear();
            start_ = scanned_ = 0;
        }
        if (eof_) {
            if (start_ == buffer_.size() && !skipping_) return false;
            if (skipping_) line.clear();
            else line.assign(buffer_, start_);  // a last line without '\n'
            too_long = std::exchange(skipping_, false);
            buffer_.clear();
            start_ = scanned_ = 0;
            return true;
        }
        if (!read_more(stop)) return false;
    }
}

// Appends what fd_ has to buffer_, dropping the lines already taken; false on a stop request.
bool LineReader::read_more(const StopSource& stop) {
    buffer_.erase(0, start_);  // once per read, not once per line
    start_ = 0;
    scanned_ = buffer_.size();
    if (!wait_readable(stop)) return false;
    char chunk[65536];
    const auto n = ::read(fd_, chunk, sizeof chunk);
    if (n > 0) buffer_.append(chunk, static_cast<std::size_t>(n));
    else if (n == 0 || errno != EINTR) eof_ = true;
    return true;
}

// Waits until fd_ is readable (or at its end); false on a stop request.
bool LineReader::wait_readable(const StopSource& stop) {
    pollfd fds[] = {{fd_, POLLIN, 0}, {stop.fd(), POLLIN, 0}};
    while (true) {
        int ready = on_wait ? ::poll(fds, 2, 0) : 0;
        if (ready == 0) {
            if (on_wait) on_wait(true);
            ready = ::poll(fds, 2, -1);
            if (on_wait) on_wait(false);
        }
        if (ready < 0 && errno != EINTR) return false;
        if (fds[1].revents & POLLIN) return false;
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) return true;
    }
}

}  // namespace drover
