// Starting and stopping real drover executables from tests.
#include "process.hpp"

#include <fcntl.h>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

#include <sys/wait.h>
#include <unistd.h>
#include <zmq.hpp>

#include "drover/broker/broker.hpp"
#include "drover/client/status.hpp"

namespace drover::test {

Process::Process(std::vector<std::string> argv, std::string out_path, std::string stdin_path) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    const std::string err_path = out_path.empty() ? "/dev/null" : out_path + ".err";
    if (out_path.empty()) out_path = "/dev/null";
    if (stdin_path.empty()) stdin_path = "/dev/null";
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
        ::setpgid(0, 0);
        const int in = ::open(stdin_path.c_str(), O_RDONLY);
        const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0 || err < 0) ::_exit(126);
        ::dup2(in, 0);
        ::dup2(out, 1);
        ::dup2(err, 2);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::setpgid(pid_, pid_);
}

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), status_(std::exchange(other.status_, std::nullopt)) {}

Process::~Process() {
    if (pid_ > 0) {
        ::kill(-pid_, SIGKILL);
        ::kill(pid_, SIGKILL);
        if (!status_) {
            int st = 0;
            ::waitpid(pid_, &st, 0);
        }
    }
}

void Process::signal(int sig) const { ::kill(pid_, sig); }

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
    if (status_) return status_;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        int st = 0;
        if (::waitpid(pid_, &st, WNOHANG) == pid_) {
            status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            return status_;
        }
        if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

bool Process::running() { return !wait(std::chrono::milliseconds(0)).has_value(); }

TempDir::TempDir() {
    char tmpl[] = "/tmp/drover-test-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
}

TempDir::~TempDir() {
    if (std::getenv("DROVER_TEST_KEEP_DIRS")) return;  // for post-mortems: logs stay in /tmp
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
    std::ofstream out(path);
    out << text;
}

std::vector<nlohmann::json> read_json_lines(const std::string& path) {
    std::vector<nlohmann::json> out;
    const std::string text = read_file(path);
    std::size_t start = 0;
    // Complete lines only: the file may be half-way through a write.
    for (auto nl = text.find('\n'); nl != std::string::npos; start = nl + 1, nl = text.find('\n', start))
        if (nl > start)
            out.push_back(nlohmann::json::parse(text.begin() + static_cast<std::ptrdiff_t>(start),
                                                text.begin() + static_cast<std::ptrdiff_t>(nl)));
    return out;
}

std::string wait_line_file(const std::string& path, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        auto text = read_file(path);
        if (!text.empty() && text.back() == '\n') {
            text.pop_back();
            return text;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return {};
}

std::optional<nlohmann::json> wait_json_file(const std::string& path, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (::access(path.c_str(), R_OK) == 0) {
            try {
                return nlohmann::json::parse(read_file(path));
            } catch (const nlohmann::json::exception&) {}
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::nullopt;
}

BrokerProcess::BrokerProcess(const TempDir& dir, std::vector<std::string> extra) {
    std::vector<std::string> argv{DROVER_BROKER_EXE,   "--frontend",       "tcp://127.0.0.1:*",    "--backend",
                                  "tcp://127.0.0.1:*", "--endpoints-file", dir.file("broker.json")};
    argv.insert(argv.end(), extra.begin(), extra.end());
    process = std::make_unique<Process>(argv, dir.file("broker.log"));
    auto doc = wait_json_file(dir.file("broker.json"), std::chrono::seconds(10));
    if (!doc) throw std::runtime_error("broker did not start: " + read_file(dir.file("broker.log.err")));
    frontend = (*doc)["frontend"];
    backend = (*doc)["backend"];
}

std::optional<nlohmann::json> wait_status(const std::string& frontend,
                                          const std::function<bool(const nlohmann::json&)>& done,
                                          std::chrono::milliseconds timeout) {
    zmq::context_t ctx;
    std::optional<nlohmann::json> last;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (auto doc = fetch_status(ctx, frontend, std::chrono::milliseconds(1000))) {
            last = std::move(doc);
            if (done(*last)) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return last;
}

bool wait_for_workers(const std::string& frontend, std::size_t n, std::chrono::milliseconds timeout) {
    auto doc = wait_status(
        frontend, [n](const nlohmann::json& s) { return s["workers"].size() >= n; }, timeout);
    return doc && (*doc)["workers"].size() >= n;
}

int free_tcp_port() {
    zmq::context_t ctx;
    zmq::socket_t s(ctx, zmq::socket_type::pull);
    s.bind("tcp://127.0.0.1:*");
    const auto ep = s.get(zmq::sockopt::last_endpoint);
    return std::stoi(ep.substr(ep.rfind(':') + 1));
}

std::set<std::string> write_tasks(const std::string& path, int count, const std::string& task,
                                  const nlohmann::json& args, const std::string& prefix) {
    std::string text = read_file(path);  // "" for a new file
    std::set<std::string> ids;
    for (int i = 0; i < count; ++i) {
        const auto id = prefix + std::to_string(i);
        ids.insert(id);
        text += nlohmann::json{{"id", id}, {"task", task}, {"args", args}}.dump() + "\n";
    }
    write_file(path, text);
    return ids;
}

}  // namespace drover::test
