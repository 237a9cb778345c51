// The supervisor of drover-worker's processes pool: children started, reaped, restarted.
#include "supervisor.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.hpp>

#include "internal/children.hpp"
#include "internal/net.hpp"
#include "internal/proof.hpp"

namespace drover {

namespace {

struct Child {
    pid_t pid = -1;
    Clock::time_point started{};
    Clock::time_point restart_at{};
    Millis backoff{0};
    unsigned restarts = 0;
};

// Starts this same program as a solo child worker. fork+exec rather than a
// bare fork: the child gets a fresh ZeroMQ context, and a C++ user's own
// main registers its tasks again before calling worker_main.
pid_t spawn_child(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = fork_for_exec();
    if (pid == 0) {
        // Only async-signal-safe calls between fork and exec.
        ::setpgid(0, 0);  // a terminal's Ctrl-C reaches the supervisor only, which passes it on once
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(1);
        ::execv("/proc/self/exe", argv.data());
        ::_exit(127);
    }
    return pid;
}

std::string describe_exit(int status) {
    if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("signal ") + ::strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
}

class Supervisor {
public:
    Supervisor(const WorkerOptions& options, const std::vector<std::string>& child_args, Logger log, StopSource& stop)
        : options_(options),
          child_args_(child_args),
          log_(std::move(log)),
          stop_(stop),
          host_(options.host.empty() ? host_name() : options.host),
          children_(options.concurrency) {
        broker_.set(zmq::sockopt::linger, 500);
        connect_client(broker_, options_.security.get(), options_.broker);
    }

    int run() {
        // A child that dies leaves its commands' processes to this process, not to init: kill_strays ends them.
        ::prctl(PR_SET_CHILD_SUBREAPER, 1);
        // The children inherit the key (fork+exec) and say it at HELLO: only this process can report them LOST.
        ::setenv(k_lost_key_env, to_hex_text(lost_key_).c_str(), 1);
        for (auto& c : children_) start(c);
        log_->info("supervisor.started children={} broker={}", children_.size(), options_.broker);
        while (true) {
            pass_on_stop();
            reap();
            if (stop_.stop_requested() && !any_alive()) break;
            if (!stop_.stop_requested()) restart_due();
            wait_a_turn();
        }
        log_->info("supervisor.stopped");
        return 0;
    }

private:
    void start(Child& c) {
        auto args = child_args_;
        args.insert(args.end(), {"--restarts", std::to_string(c.restarts)});
        c.pid = spawn_child(args);
        c.started = Clock::now();
        if (c.pid < 0) log_->error("supervisor.spawn_failed error=\"{}\"", std::strerror(errno));
    }

    // Each new stop request goes to the children: SIGTERM (finish what you
    // hold), then k_stop_now_signal (stop at once, ending your commands'
    // process groups), then SIGKILL.
    void pass_on_stop() {
        if (stop_.requests() <= signals_seen_) return;
        signals_seen_ = stop_.requests();
        const int sig = signals_seen_ == 1 ? SIGTERM : signals_seen_ == 2 ? k_stop_now_signal : SIGKILL;
        log_->info("supervisor.stopping signal={} children={}", ::strsignal(sig),
                   std::count_if(children_.begin(), children_.end(), [](const Child& c) { return c.pid > 0; }));
        for (auto& c : children_)
            if (c.pid > 0) ::kill(c.pid, sig);
    }

    // Collects every child that has exited, and the processes of commands
    // a dead child left running.
    void reap() {
        int status = 0;
        pid_t pid;
        bool child_exited = false;
        while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
            auto it = std::find_if(children_.begin(), children_.end(), [&](const Child& c) { return c.pid == pid; });
            if (it == children_.end()) continue;  // a stray, reaped
            on_exit(*it, status);
            child_exited = true;
        }
        if (child_exited) kill_strays();
    }

    // SIGKILL to each process (and its group) that came to this subreaper
    // when a child died: the commands it was running, whose tasks go again.
    void kill_strays() {
        for (const auto& p : child_processes()) {
            if (p.zombie ||
                std::any_of(children_.begin(), children_.end(), [&](const Child& c) { return c.pid == p.pid; }))
                continue;
            if (p.pgid != ::getpgrp()) ::kill(-p.pgid, SIGKILL);
            ::kill(p.pid, SIGKILL);
            log_->info("supervisor.killed_stray pid={} (a command of a child that died)", p.pid);
        }
    }

    // Child `c` exited with `status`: its restart is scheduled, and the
    // broker told unless the child said BYE itself.
    void on_exit(Child& c, int status) {
        const std::string id = host_ + ":" + std::to_string(c.pid);
        c.pid = -1;
        if (stop_.stop_requested()) {
            log_->info("supervisor.child_exited id={} how=\"{}\"", id, describe_exit(status));
            return;
        }
        ++c.restarts;
        if (WIFEXITED(status) && WEXITSTATUS(status) == k_exit_replaced) {
            // It reported its timed-out task and said BYE itself: a new one at once.
            log_->info("supervisor.child_replaced id={} reason=timeout restarts={}", id, c.restarts);
            c.backoff = Millis(0);
            c.restart_at = Clock::now();
            return;
        }
        (void)send_message(broker_, proto::Command::lost, proto::encode(proto::Lost{id, lost_key_}));
        const bool quick = Clock::now() - c.started < std::chrono::seconds(1);
        c.backoff = quick ? std::min(std::max(c.backoff * 2, Millis(100)), Millis(5000)) : Millis(0);
        c.restart_at = Clock::now() + c.backoff;
        log_->warn("supervisor.child_died id={} how=\"{}\" restart_in_ms={} restarts={}", id, describe_exit(status),
                   c.backoff.count(), c.restarts);
    }

    [[nodiscard]] bool any_alive() const {
        return std::any_of(children_.begin(), children_.end(), [](const Child& c) { return c.pid > 0; });
    }

    void restart_due() {
        for (auto& c : children_)
            if (c.pid < 0 && Clock::now() >= c.restart_at) start(c);
    }

    // Sleeps up to 50 ms, less if a stop is requested.
    void wait_a_turn() {
        pollfd p{stop_.fd(), POLLIN, 0};
        ::poll(&p, 1, 50);
        if (p.revents & POLLIN) {
            std::uint64_t drain;
            [[maybe_unused]] auto n = ::read(stop_.fd(), &drain, sizeof drain);
        }
    }

    const WorkerOptions& options_;
    const std::vector<std::string>& child_args_;
    Logger log_;
    StopSource& stop_;
    const std::string host_;
    zmq::context_t ctx_;
    zmq::socket_t broker_{ctx_, zmq::socket_type::dealer};  // LOST goes here
    std::vector<Child> children_;
    const std::string lost_key_ = random_secret();
    int signals_seen_ = 0;
};

}  // namespace

int run_supervisor(const WorkerOptions& options, const std::vector<std::string>& child_args, Logger log,
                   StopSource& stop) {
    return Supervisor(options, child_args, std::move(log), stop).run();
}

}  // namespace drover
