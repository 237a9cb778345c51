// The drover-worker command line, and the supervisor of the processes pool.
#include <algorithm>
#include <iostream>
#include <thread>

#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include "cli.hpp"
#include "drover/programs/worker_main.hpp"
#include "drover/worker/worker.hpp"
#include "process.hpp"
#include "security_cli.hpp"

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

// Keeps `count` solo children alive until stopped, and tells the broker at
// once when one dies so that its tasks come back without waiting for the
// heartbeat to expire. A child that dies within a second of its start is
// restarted after a growing back-off (100 ms doubling to 5 s).
int run_supervisor(const WorkerOptions& options, const std::vector<std::string>& child_args, Logger log,
                   StopSource& stop) {
    zmq::context_t ctx;
    zmq::socket_t broker(ctx, zmq::socket_type::dealer);
    broker.set(zmq::sockopt::linger, 500);
    connect_client(broker, options.security.get(), options.broker);
    const std::string host = options.host.empty() ? host_name() : options.host;

    std::vector<Child> children(options.concurrency);
    const auto start = [&](Child& c) {
        auto args = child_args;
        args.insert(args.end(), {"--restarts", std::to_string(c.restarts)});
        c.pid = spawn_child(args);
        c.started = Clock::now();
        if (c.pid < 0) log->error("supervisor.spawn_failed error=\"{}\"", std::strerror(errno));
    };
    for (auto& c : children) start(c);
    log->info("supervisor.started children={} broker={}", children.size(), options.broker);

    int signals_seen = 0;
    while (true) {
        if (stop.requests() > signals_seen) {
            signals_seen = stop.requests();
            const int sig = signals_seen == 1 ? SIGTERM : SIGKILL;
            log->info("supervisor.stopping signal={} children={}", ::strsignal(sig),
                      std::count_if(children.begin(), children.end(), [](const Child& c) { return c.pid > 0; }));
            for (auto& c : children)
                if (c.pid > 0) ::kill(c.pid, sig);
        }
        int status = 0;
        pid_t pid;
        while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
            auto it = std::find_if(children.begin(), children.end(), [&](const Child& c) { return c.pid == pid; });
            if (it == children.end()) continue;
            it->pid = -1;
            const std::string id = host + ":" + std::to_string(pid);
            if (stop.stop_requested()) {
                log->info("supervisor.child_exited id={} how=\"{}\"", id, describe_exit(status));
                continue;
            }
            ++it->restarts;
            if (WIFEXITED(status) && WEXITSTATUS(status) == k_exit_replaced) {
                // It reported its timed-out task and said BYE itself: a new one at once.
                log->info("supervisor.child_replaced id={} reason=timeout restarts={}", id, it->restarts);
                it->backoff = Millis(0);
                it->restart_at = Clock::now();
                continue;
            }
            (void)send_message(broker, proto::Command::lost, proto::encode(proto::Lost{id}));
            const bool quick = Clock::now() - it->started < std::chrono::seconds(1);
            it->backoff = quick ? std::min(std::max(it->backoff * 2, Millis(100)), Millis(5000)) : Millis(0);
            it->restart_at = Clock::now() + it->backoff;
            log->warn("supervisor.child_died id={} how=\"{}\" restart_in_ms={} restarts={}", id, describe_exit(status),
                      it->backoff.count(), it->restarts);
        }
        const bool any_alive = std::any_of(children.begin(), children.end(), [](const Child& c) { return c.pid > 0; });
        if (stop.stop_requested() && !any_alive) break;
        if (!stop.stop_requested()) {
            for (auto& c : children)
                if (c.pid < 0 && Clock::now() >= c.restart_at) start(c);
        }
        pollfd p{stop.fd(), POLLIN, 0};
        ::poll(&p, 1, 50);
        if (p.revents & POLLIN) {
            std::uint64_t drain;
            [[maybe_unused]] auto n = ::read(stop.fd(), &drain, sizeof drain);
        }
    }
    log->info("supervisor.stopped");
    return 0;
}

}  // namespace

int worker_main(int argc, char** argv, const Registry& registry) {
    tune_allocator();
    WorkerOptions options;
    std::string log_level;
    std::int64_t heartbeat_ms = 1000;
    bool child = false;
    bool list_tasks = false;
    int concurrency = 0;
    SecurityOptions security;

    CLI::App app{
        "drover-worker: runs tasks from a drover broker.\n"
        "Pools: solo (one executor thread), threads (-c executor threads),\n"
        "processes (-c supervised child processes, restarted when they die)."};
    app.add_option("--broker", options.broker, "the broker's backend endpoint")->capture_default_str();
    app.add_option("--pool", options.pool, "solo | threads | processes")
        ->capture_default_str()
        ->check(CLI::IsMember({"solo", "threads", "processes"}));
    app.add_option("-c,--concurrency", concurrency, "executor threads or child processes (default: cores)")
        ->check(CLI::Range(1, 4096));
    app.add_option("--prefetch", options.prefetch,
                   "credits granted beyond the free slots (default: automatic, about 2 ms of queued work per slot; "
                   "for longer tasks none, a slot's next credit going out just before its task's expected end)")
        ->check(CLI::Range(0, 100000))
        ->each([&](const std::string&) { options.auto_prefetch = false; });
    app.add_option("--heartbeat-ms", heartbeat_ms, "heartbeat period")
        ->capture_default_str()
        ->check(CLI::Range(10, 600000));
    app.add_option("--liveness", options.liveness, "missed heartbeats before the broker is presumed dead")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    app.add_option("--host-name", options.host,
                   "host name given to the broker (STATUS groups workers by it; default: this machine's name)");
    app.add_option("--id", options.id, "worker id shown in status and results (default HOST:pid)");
    add_max_message_bytes_option(app, options.max_message_bytes);
    add_log_level_option(app, log_level);
    app.add_flag("--list-tasks", list_tasks, "print the task names this worker runs and exit");
    app.add_flag("--child", child, "run as a child of a processes pool (set by the supervisor)")->group("");
    app.add_option("--restarts", options.restarts, "times the supervisor restarted this child's slot")->group("");
    add_security_options(app, security, Role::worker);
    try {
        app.parse(argc, argv);
        check_endpoint(options.broker, "--broker", /*inproc_ok=*/false);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    } catch (const std::invalid_argument& e) {
        std::cerr << "drover-worker: " << e.what() << "\n";
        return 2;
    }
    if (list_tasks) {
        for (const auto& n : registry.names()) std::cout << n << "\n";
        return 0;
    }
    options.heartbeat = Millis(heartbeat_ms);
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    options.concurrency = concurrency > 0 ? static_cast<unsigned>(concurrency) : (options.pool == "solo" ? 1u : cores);

    try {
        auto log = make_logger(child ? "worker-child" : "worker", log_level);
        StopSource stop;
        stop_on_signals(stop);
        ignore_hangup();
        options.security = make_security(security, Role::worker, log);
        if (options.pool == "processes" && !child) {
            std::vector<std::string> args{argv[0],
                                          "--child",
                                          "--broker",
                                          options.broker,
                                          "--heartbeat-ms",
                                          std::to_string(heartbeat_ms),
                                          "--liveness",
                                          std::to_string(options.liveness),
                                          "--max-message-bytes",
                                          std::to_string(options.max_message_bytes)};
            const auto security_args = security.to_args();
            args.insert(args.end(), security_args.begin(), security_args.end());
            if (!log_level.empty()) args.insert(args.end(), {"--log-level", log_level});
            if (!options.host.empty()) args.insert(args.end(), {"--host-name", options.host});
            if (!options.auto_prefetch) args.insert(args.end(), {"--prefetch", std::to_string(options.prefetch)});
            return run_supervisor(options, args, log, stop);
        }
        if (child) {
            options.pool = "processes";  // as STATUS shows it; each child runs one task at a time
            options.concurrency = 1;
            options.replace_on_timeout = true;
        }
        zmq::context_t ctx;
        Worker worker(ctx, registry, options, log);
        switch (worker.run(stop)) {
            case Worker::Stopped::gracefully: return 0;
            case Worker::Stopped::at_once: std::_Exit(130);
            case Worker::Stopped::replaced: std::_Exit(k_exit_replaced);
        }
        return 0;
    } catch (const SecurityError& e) {
        std::cerr << "drover-worker: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "drover-worker: " << e.what() << "\n";
        return 1;
    }
}

}  // namespace drover
