// Child processes, temporary directories and process facts for drover-bench.
#pragma once

// Every process the benchmark starts is a Child: its own process group, its
// output appended to a log file, SIGKILL when the benchmark dies
// (PR_SET_PDEATHSIG), and killed and reaped by the destructor, so a failing
// or interrupted run leaves nothing behind. Children are started from the
// main thread only: PR_SET_PDEATHSIG fires when the thread that forked ends.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>
#include <nlohmann/json.hpp>

namespace drover::bench {

class Child {
public:
    // Starts argv[0] (a path) with stdin from /dev/null and stdout and stderr
    // appended to `log_path`. Throws: std::runtime_error if fork fails.
    Child(std::vector<std::string> argv, const std::string& log_path);
    ~Child();
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    [[nodiscard]] pid_t pid() const { return pid_; }
    // False once the process has exited (it is then reaped).
    [[nodiscard]] bool running();
    // Kills the process group and reaps the process.
    void kill();

private:
    pid_t pid_ = -1;
    bool reaped_ = false;
};

// A fresh directory under /tmp, removed with its files by the destructor;
// or, if `keep` is given, that directory (created if missing) left in place.
class TempDir {
public:
    explicit TempDir(const std::string& keep = {});
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    [[nodiscard]] const std::string& path() const { return path_; }
    [[nodiscard]] std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
    bool keep_ = false;
};

// Kills every Child still alive (for the watchdog; async from the main thread).
void kill_all_children() noexcept;

// The resident set size of `pid` in bytes (VmRSS), or nullopt if unreadable.
std::optional<std::uint64_t> rss_bytes(pid_t pid);

// Waits until `path` holds a JSON document. Returns nullopt on timeout.
std::optional<nlohmann::json> wait_json_file(const std::string& path, std::chrono::milliseconds timeout);

// The last `lines` lines of a text file (for error reports).
std::string tail_file(const std::string& path, std::size_t lines);

// The path of the running executable.
std::string self_exe();

}  // namespace drover::bench
