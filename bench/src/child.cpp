// Child processes, temporary directories and process facts for drover-bench.
#include "child.hpp"

#include <csignal>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "drover/common/stop.hpp"

namespace drover::bench {

namespace {

std::mutex g_children_mutex;
std::set<pid_t> g_children;  // process groups to kill if the run is abandoned

}  // namespace

Child::Child(std::vector<std::string> argv, const std::string& log_path) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    // Opened before the fork so that the child only calls async-signal-safe functions.
    const int out = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out < 0 || in < 0) {
        if (out >= 0) ::close(out);
        if (in >= 0) ::close(in);
        throw std::runtime_error("cannot open " + log_path);
    }
    pid_ = fork_for_exec();
    if (pid_ == 0) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(1);
        ::dup2(in, 0);
        ::dup2(out, 1);
        ::dup2(out, 2);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(out);
    ::close(in);
    if (pid_ < 0) throw std::runtime_error("fork failed");
    ::setpgid(pid_, pid_);
    std::lock_guard lock(g_children_mutex);
    g_children.insert(pid_);
}

Child::~Child() { kill(); }

void Child::kill() {
    if (pid_ <= 0 || reaped_) return;
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    std::lock_guard lock(g_children_mutex);
    g_children.erase(pid_);
}

bool Child::running() {
    if (reaped_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        std::lock_guard lock(g_children_mutex);
        g_children.erase(pid_);
        return false;
    }
    return true;
}

void kill_all_children() noexcept {
    std::lock_guard lock(g_children_mutex);
    for (const pid_t pid : g_children) {
        ::kill(-pid, SIGKILL);
        ::kill(pid, SIGKILL);
    }
}

TempDir::TempDir(const std::string& keep) {
    if (!keep.empty()) {
        std::filesystem::create_directories(keep);
        path_ = std::filesystem::absolute(keep).string();
        keep_ = true;
        return;
    }
    char tmpl[] = "/tmp/drover-bench-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
}

TempDir::~TempDir() {
    if (keep_) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

std::optional<std::uint64_t> rss_bytes(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) != 0) continue;
        std::istringstream fields(line.substr(6));
        std::uint64_t kib = 0;
        if (fields >> kib) return kib * 1024;
    }
    return std::nullopt;
}

std::optional<nlohmann::json> wait_json_file(const std::string& path, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        std::ifstream in(path);
        if (in) {
            std::stringstream text;
            text << in.rdbuf();
            try {
                return nlohmann::json::parse(text.str());
            } catch (const nlohmann::json::exception&) {
                // written but not complete yet
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return std::nullopt;
}

std::string tail_file(const std::string& path, std::size_t lines) {
    std::ifstream in(path);
    std::vector<std::string> all;
    std::string line;
    while (std::getline(in, line)) all.push_back(line);
    std::string out;
    for (auto i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out += all[i] + "\n";
    return out;
}

std::string self_exe() {
    char buf[4096];
    const auto n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) throw std::runtime_error("cannot read /proc/self/exe");
    return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace drover::bench
