// A stop request that a signal handler can raise and a poll loop can wait on.
#pragma once

#include <atomic>

namespace drover {

// Counts stop requests. request() is async-signal-safe; fd() becomes readable
// at the first request, so a zmq poll loop wakes up at once.
class StopSource {
public:
    StopSource();
    ~StopSource();
    StopSource(const StopSource&) = delete;
    StopSource& operator=(const StopSource&) = delete;

    void request() noexcept;
    [[nodiscard]] int requests() const noexcept { return requests_.load(); }
    [[nodiscard]] bool stop_requested() const noexcept { return requests_.load() > 0; }
    [[nodiscard]] int fd() const noexcept { return fd_; }

private:
    int fd_ = -1;
    std::atomic<int> requests_{0};
};

// Routes SIGINT and SIGTERM to `stop` for the rest of the process's life.
void stop_on_signals(StopSource& stop);

}  // namespace drover
