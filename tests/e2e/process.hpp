// Starting and stopping real drover executables from tests.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <sys/types.h>
#include <nlohmann/json.hpp>

namespace drover::test {

// A child process in its own process group. The destructor kills the whole
// group (SIGKILL) and reaps it, so a failing test leaves nothing running.
class Process {
public:
    // Starts argv[0] with stdin from `stdin_path` (or /dev/null) and stdout and
    // stderr to `out_path` and `out_path + ".err"` (or /dev/null).
    explicit Process(std::vector<std::string> argv, std::string out_path = {}, std::string stdin_path = {});
    ~Process();
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;
    // The moved-from object owns no process.
    Process(Process&& other) noexcept;
    Process& operator=(Process&&) = delete;

    [[nodiscard]] pid_t pid() const { return pid_; }
    void signal(int sig) const;
    // Waits for exit. Returns the exit code (128+signal if killed), or nullopt on timeout.
    std::optional<int> wait(std::chrono::milliseconds timeout);
    [[nodiscard]] bool running();

private:
    pid_t pid_ = -1;
    std::optional<int> status_;
};

// A fresh directory under /tmp, removed with its files by the destructor
// (kept when DROVER_TEST_KEEP_DIRS is set).
class TempDir {
public:
    TempDir();
    ~TempDir();
    [[nodiscard]] const std::string& path() const { return path_; }
    [[nodiscard]] std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);
// The complete lines of a JSON-lines file (a last line still being written is left out).
std::vector<nlohmann::json> read_json_lines(const std::string& path);
// Waits until `path` holds a line (e.g. an endpoint file); returns it without
// the newline, or "" on timeout.
std::string wait_line_file(const std::string& path, std::chrono::milliseconds timeout);
// Waits until `path` exists and holds a JSON document.
std::optional<nlohmann::json> wait_json_file(const std::string& path, std::chrono::milliseconds timeout);

// A broker on ephemeral tcp ports (or as given), with its endpoints read back.
struct BrokerProcess {
    explicit BrokerProcess(const TempDir& dir, std::vector<std::string> extra = {});
    std::string frontend, backend;
    std::unique_ptr<Process> process;
};

// Polls the broker's STATUS until `done(status)` holds or `timeout` passes;
// returns the last STATUS read (nullopt if none came).
std::optional<nlohmann::json> wait_status(const std::string& frontend,
                                          const std::function<bool(const nlohmann::json&)>& done,
                                          std::chrono::milliseconds timeout);

// Polls the broker's STATUS until it lists `n` workers.
bool wait_for_workers(const std::string& frontend, std::size_t n, std::chrono::milliseconds timeout);

// Appends `count` task lines {"id": prefix + i, "task", "args"} for
// drover-producer submit to `path`; returns their ids.
std::set<std::string> write_tasks(const std::string& path, int count, const std::string& task,
                                  const nlohmann::json& args, const std::string& prefix = "t");

// `a` followed by `b`: two argument lists joined.
inline std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// A loopback tcp port free a moment ago (nothing listens on it now).
int free_tcp_port();

}  // namespace drover::test
