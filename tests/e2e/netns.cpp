// Several "machines" on one: network namespaces joined by a bridge.
#include "netns.hpp"

#include <atomic>
#include <csignal>
#include <filesystem>
#include <sstream>
#include <thread>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

namespace drover::test {

namespace {

std::string join(const std::vector<std::string>& argv) {
    std::string s;
    for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
    return s;
}

std::atomic<int> g_instances{0};

}  // namespace

const std::string& ip_exe() {
    static const std::string path = [] {
        for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
            if (::access(p, X_OK) == 0) return std::string(p);
        return std::string("ip");
    }();
    return path;
}

int run_command_rc(const std::vector<std::string>& argv, std::string* out, std::chrono::milliseconds timeout,
                   std::string* err) {
    int out_pipe[2], err_pipe[2];
    if (::pipe(out_pipe) != 0 || ::pipe(err_pipe) != 0) throw std::runtime_error("pipe failed");
    std::vector<std::string> copy = argv;
    std::vector<char*> args;
    for (auto& a : copy) args.push_back(a.data());
    args.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
        ::setpgid(0, 0);
        ::dup2(out_pipe[1], 1);
        ::dup2(err_pipe[1], 2);
        ::close(out_pipe[0]);
        ::close(err_pipe[0]);
        ::close(out_pipe[1]);
        ::close(err_pipe[1]);
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    std::string text[2];
    pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    int open_fds = 2;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    bool timed_out = false;
    while (open_fds > 0) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            timed_out = true;
            break;
        }
        if (::poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            const auto n = ::read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                text[i].append(buf, static_cast<std::size_t>(n));
            } else {
                ::close(fds[i].fd);
                fds[i].fd = -1;
                --open_fds;
            }
        }
    }
    for (auto& f : fds)
        if (f.fd >= 0) ::close(f.fd);
    if (timed_out) ::kill(-pid, SIGKILL), ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    if (out) *out = err ? text[0] : text[0] + text[1];
    if (err) *err = text[1];
    if (timed_out) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::string run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
    std::string out, err;
    const int rc = run_command_rc(argv, &out, timeout, &err);
    if (rc != 0)
        throw std::runtime_error("command failed (" + (rc < 0 ? std::string("timeout") : "exit " + std::to_string(rc)) +
                                 "): " + join(argv) + (err.empty() ? "" : ": " + err));
    return out;
}

std::unique_ptr<Process> Host::run(const std::vector<std::string>& argv, const std::string& log_path,
                                   const std::string& stdin_path) const {
    std::vector<std::string> full{ip_exe(), "netns", "exec", ns_};
    full.insert(full.end(), argv.begin(), argv.end());
    return std::make_unique<Process>(full, log_path, stdin_path);
}

std::string Host::exec(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) const {
    std::vector<std::string> full{ip_exe(), "netns", "exec", ns_};
    full.insert(full.end(), argv.begin(), argv.end());
    return run_command(full, timeout);
}

int Host::exec_rc(const std::vector<std::string>& argv, std::string* out, std::chrono::milliseconds timeout) const {
    std::vector<std::string> full{ip_exe(), "netns", "exec", ns_};
    full.insert(full.end(), argv.begin(), argv.end());
    return run_command_rc(full, out, timeout);
}

std::vector<pid_t> Host::pids() const {
    std::vector<pid_t> out;
    std::string text;
    if (run_command_rc({ip_exe(), "netns", "pids", ns_}, &text) != 0) return out;
    std::istringstream in(text);
    for (long p = 0; in >> p;)
        if (p > 0 && p != ::getpid()) out.push_back(static_cast<pid_t>(p));
    return out;
}

void Host::kill_all() const {
    // Repeat: a supervisor may fork a replacement between listing and killing.
    for (int round = 0; round < 20; ++round) {
        const auto ps = pids();
        if (ps.empty()) return;
        for (const auto p : ps) ::kill(p, SIGKILL);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

void Host::cut() const {
    run_command({ip_exe(), "-n", net_->switch_ns_, "link", "set", "p" + std::to_string(index_), "down"});
}

void Host::restore() const {
    run_command({ip_exe(), "-n", net_->switch_ns_, "link", "set", "p" + std::to_string(index_), "up"});
}

void Network::remove_stale() {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind("drvmh-", 0) != 0) continue;
        const auto dash = name.find('-', 6);
        if (dash == std::string::npos) continue;
        const pid_t owner = static_cast<pid_t>(std::atol(name.substr(6, dash - 6).c_str()));
        if (owner <= 0 || owner == ::getpid() || ::kill(owner, 0) == 0 || errno != ESRCH) continue;
        std::string pids;
        if (run_command_rc({ip_exe(), "netns", "pids", name}, &pids) == 0) {
            std::istringstream in(pids);
            for (long p = 0; in >> p;) ::kill(static_cast<pid_t>(p), SIGKILL);
        }
        run_command_rc({ip_exe(), "netns", "del", name});
    }
}

Network::Network(std::size_t hosts) {
    if (::geteuid() != 0)
        throw NetnsUnavailable("network namespaces need root (euid " + std::to_string(::geteuid()) + ")");
    remove_stale();
    const int n = g_instances++;
    prefix_ = "drvmh-" + std::to_string(::getpid()) + "-" + std::to_string(n);
    switch_ns_ = prefix_ + "-sw";
    std::string out;
    if (run_command_rc({ip_exe(), "netns", "add", switch_ns_}, &out) != 0) {
        if (out.find("ermission") != std::string::npos || out.find("not permitted") != std::string::npos)
            throw NetnsUnavailable("ip netns add refused: " + out);
        throw std::runtime_error("ip netns add " + switch_ns_ + " failed: " + out);
    }
    created_.push_back(switch_ns_);
    try {
        // A /24 of 198.18.0.0/15 chosen from pid and instance (each Network is
        // isolated anyway: its bridge lives in its own switch namespace).
        const unsigned net = (static_cast<unsigned>(::getpid()) * 7u + static_cast<unsigned>(n)) % 512u;
        const std::string base = "198." + std::to_string(18 + net / 256) + "." + std::to_string(net % 256) + ".";
        const auto& ip = ip_exe();
        run_command({ip, "-n", switch_ns_, "link", "set", "lo", "up"});
        run_command({ip, "-n", switch_ns_, "link", "add", "br0", "type", "bridge"});
        run_command({ip, "-n", switch_ns_, "link", "set", "br0", "up"});
        for (std::size_t i = 0; i < hosts; ++i) {
            const std::string ns = prefix_ + "-h" + std::to_string(i);
            run_command({ip, "netns", "add", ns});
            created_.push_back(ns);
            const std::string port = "p" + std::to_string(i);
            run_command(
                {ip, "-n", switch_ns_, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns});
            run_command({ip, "-n", switch_ns_, "link", "set", port, "master", "br0"});
            run_command({ip, "-n", switch_ns_, "link", "set", port, "up"});
            const std::string addr = base + std::to_string(i + 1);
            run_command({ip, "-n", ns, "addr", "add", addr + "/24", "dev", "eth0"});
            run_command({ip, "-n", ns, "link", "set", "eth0", "up"});
            run_command({ip, "-n", ns, "link", "set", "lo", "up"});
            hosts_.emplace_back(*this, i, ns, addr);
        }
        // netem needs the sch_netem module, absent where /lib/modules is.
        netem_ = run_command_rc({ip_exe(), "netns", "exec", switch_ns_, "tc", "qdisc", "add", "dev", "lo", "root",
                                 "netem", "delay", "1ms"}) == 0;
        if (netem_) run_command_rc({ip_exe(), "netns", "exec", switch_ns_, "tc", "qdisc", "del", "dev", "lo", "root"});
    } catch (...) {
        teardown();
        throw;
    }
}

std::unique_ptr<Network> Network::try_create(std::size_t hosts, std::string& why) {
    try {
        return std::make_unique<Network>(hosts);
    } catch (const NetnsUnavailable& e) {
        why = e.what();
        return nullptr;
    }
}

void Network::teardown() noexcept {
    try {
        for (auto it = created_.rbegin(); it != created_.rend(); ++it) {
            // Kill whatever still runs in there, then delete (its veth goes with it).
            for (int round = 0; round < 20; ++round) {
                std::string pids;
                if (run_command_rc({ip_exe(), "netns", "pids", *it}, &pids) != 0) break;
                std::istringstream in(pids);
                bool any = false;
                for (long p = 0; in >> p;)
                    if (p != ::getpid()) ::kill(static_cast<pid_t>(p), SIGKILL), any = true;
                if (!any) break;
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
            run_command_rc({ip_exe(), "netns", "del", *it});
        }
    } catch (...) {}
    created_.clear();
}

Network::~Network() { teardown(); }

}  // namespace drover::test
