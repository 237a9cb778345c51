// A stop request that a signal handler can raise and a poll loop can wait on.
#pragma once

#include <atomic>
#include <csignal>

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

// The signal a processes pool's supervisor sends its children for a second
// stop (stop at once): a child counts SIGTERM and SIGINT once only.
inline constexpr int k_stop_now_signal = SIGUSR2;

// Routes SIGINT and SIGTERM to `stop` for the rest of the process's life.
// With `once`, only the first of them is a request, and k_stop_now_signal
// is a request every time: for a processes pool's child, so that one
// SIGTERM sent both to it and through its supervisor (systemd's and
// Slurm's, to every process) is not two, while its supervisor can still
// stop it at once (it then ends its commands' process groups).
void stop_on_signals(StopSource& stop, bool once = false);

// Ignores SIGHUP, whose default action would end a daemon (broker, worker,
// sink) that has nothing to reload. With --security the reload handler
// (Security::reload_on_sighup) replaces this.
void ignore_hangup();

// fork() for a child that will exec at once. SIGINT and SIGTERM are blocked
// around the fork, and the child resets them to their defaults before it
// unblocks them, so a signal in between neither runs the parent's handler
// in the child nor gets lost. Returns what fork() returns.
int fork_for_exec() noexcept;

}  // namespace drover
