// Running one command: posix_spawn in its own process group, output
// captured through pipes, a deadline enforced on the whole group.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "drover/common/clock.hpp"

namespace drover {

struct SpawnRequest {
    std::vector<std::string> argv;                  // argv[0] is the program; a bare name is looked up on PATH
    std::string cwd;                                // empty: the worker's
    const std::vector<std::string>* env = nullptr;  // "K=V" entries; nullptr: the worker's environment
    std::optional<std::string> input;               // written to stdin; none: stdin is /dev/null
    std::size_t max_output = 1 << 20;               // bytes kept of stdout, and of stderr; the rest is read and dropped
    std::optional<Clock::time_point> deadline;      // then SIGTERM to the group, SIGKILL after `grace`
    Millis grace{2000};
};

struct SpawnResult {
    int spawn_errno = 0;  // posix_spawn failed (nothing ran): its errno
    int exit_code = -1;   // when it exited
    int signal = 0;       // when a signal ended it
    bool timed_out = false;
    std::string out, err;
    bool out_truncated = false, err_truncated = false;
    bool status_taken = false;  // another part of this program reaped it: how it ended is unknown
};

// Runs the command to its end. Whatever the program leaves running in its
// process group when it exits (or times out) is killed with SIGKILL, so no
// process of the task outlives it. Safe from any thread; blocks that thread.
// Throws std::system_error only when pipes cannot be made.
SpawnResult run_command(const SpawnRequest& request);

// Sends `sig` to every command process group running in this process. Any thread.
void signal_command_groups(int sig);
// Waits up to `limit` for every command of this process to end. Returns whether none is left.
bool wait_command_groups(Millis limit);

// "SIGKILL" for 9; "signal 77" when it has no name.
std::string signal_name(int sig);

}  // namespace drover
