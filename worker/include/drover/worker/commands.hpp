// Command tasks: programs declared by the worker's operator, run as tasks.
//
// A command is a name and an argv template ("sha256sum -- {}"). A task's
// arguments (strings; numbers and booleans written as text) land only
// where the template's placeholders put them, each as one argv element;
// nothing goes through a shell. See README "Running commands".
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "drover/worker/registry.hpp"

namespace drover {

struct CommandSpec {
    std::string name;
    std::vector<std::string> argv;           // the template's words, placeholders included
    std::chrono::milliseconds timeout{0};    // 0: only the task's own timeout_ms
    std::string cwd;                         // empty: the worker's
    std::map<std::string, std::string> env;  // added to the worker's environment
    bool stdin_from_last_arg = false;        // "stdin": "arg": the last argument goes to stdin, not argv
    std::size_t max_output_bytes = 1 << 20;  // kept of stdout and of stderr each
};

// Parses --command 'NAME=PROGRAM ARG…' (the template split into words, quotes respected).
// Throws std::invalid_argument saying what is wrong.
CommandSpec parse_command_option(std::string_view text);

// Reads a commands file: a JSON object, name → {"argv": string or array of
// strings, "timeout_ms", "cwd", "env": {…}, "stdin": "none" | "arg",
// "max_output_bytes"}. Throws std::invalid_argument naming the file and
// the command for unreadable JSON, unknown fields and wrong types.
std::vector<CommandSpec> load_commands_file(const std::string& path);

// Registers each command as a task. Throws std::invalid_argument for a
// bad template, or a name that `registry` already has or that repeats.
void add_command_tasks(Registry& registry, const std::vector<CommandSpec>& commands);

// "NAME  command: TEMPLATE [timeout 5000 ms] …", for --list-tasks.
std::string describe_command(const CommandSpec& command);

// Signals every command process group this process runs (SIGKILL at a
// worker's stop at once). Any thread, not from a signal handler.
void signal_running_commands(int sig);
// Waits up to `limit` for every running command to end; returns whether none is left.
bool wait_running_commands(std::chrono::milliseconds limit);
// Makes this process the subreaper of the processes its commands leave
// behind, and reaps those that exit (once a second). For a program whose
// only children are its commands, such as drover-worker: an embedding
// program's own orphans would be reaped too. Idempotent; any thread.
void adopt_command_orphans();

}  // namespace drover
