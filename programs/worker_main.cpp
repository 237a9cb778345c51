// The drover-worker command line.
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>

#include "cli.hpp"
#include "drover/programs/worker_main.hpp"
#include "drover/worker/commands.hpp"
#include "drover/worker/worker.hpp"
#include "internal/proof.hpp"
#include "process.hpp"
#include "security_cli.hpp"
#include "supervisor.hpp"

namespace drover {

namespace {

// The flags that are not WorkerOptions fields.
struct Flags {
    std::string log_level;
    std::int64_t heartbeat_ms = 1000;
    bool child = false;
    bool list_tasks = false;
    int concurrency = 0;
    SecurityOptions security;
    std::vector<std::string> commands;  // --command NAME=TEMPLATE, as given
    std::string commands_file;
};

void add_worker_options(CLI::App& app, WorkerOptions& options, Flags& f) {
    app.add_option("--broker", options.broker, "the broker's backend endpoint")->capture_default_str();
    app.add_option("--pool", options.pool, "solo | threads | processes")
        ->capture_default_str()
        ->check(CLI::IsMember({"solo", "threads", "processes"}));
    app.add_option("-c,--concurrency", f.concurrency, "executor threads or child processes (default: cores)")
        ->check(CLI::Range(1, 4096));
    app.add_option("--prefetch", options.prefetch,
                   "credits granted beyond the free slots (default: automatic, about 2 ms of queued work per slot; "
                   "for longer tasks none, a slot's next credit going out just before its task's expected end)")
        ->check(CLI::Range(0, 100000))
        ->each([&](const std::string&) { options.auto_prefetch = false; });
    app.add_option("--heartbeat-ms", f.heartbeat_ms, "heartbeat period")
        ->capture_default_str()
        ->check(CLI::Range(10, 600000));
    app.add_option("--liveness", options.liveness, "missed heartbeats before the broker is presumed dead")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    app.add_option("--host-name", options.host,
                   "host name given to the broker (STATUS groups workers by it; default: this machine's name)");
    app.add_option("--id", options.id, "worker id shown in status and results (default HOST:pid)");
    add_max_message_bytes_option(app, options.max_message_bytes);
    add_log_level_option(app, f.log_level);
    app.add_option("--command", f.commands,
                   "run a program as task NAME: 'NAME=PROGRAM ARG…', {} all arguments, {0} {1}… one each, "
                   "none: appended (no shell; repeatable)")
        ->allow_extra_args(false);
    app.add_option("--commands", f.commands_file,
                   "a JSON file of commands: name -> {\"argv\", \"timeout_ms\", \"cwd\", \"env\", \"stdin\", "
                   "\"max_output_bytes\"}");
    app.add_flag("--list-tasks", f.list_tasks,
                 "print the task names this worker runs (commands with their templates) and exit");
    app.add_flag("--child", f.child, "run as a child of a processes pool (set by the supervisor)")->group("");
    app.add_option("--restarts", options.restarts, "times the supervisor restarted this child's slot")->group("");
    add_security_options(app, f.security, Role::worker);
}

// The command line of one child of a processes pool (`self`: argv[0]),
// without its --restarts.
std::vector<std::string> child_args(const char* self, const WorkerOptions& options, const Flags& f) {
    std::vector<std::string> args{self,
                                  "--child",
                                  "--broker",
                                  options.broker,
                                  "--heartbeat-ms",
                                  std::to_string(f.heartbeat_ms),
                                  "--liveness",
                                  std::to_string(options.liveness),
                                  "--max-message-bytes",
                                  std::to_string(options.max_message_bytes)};
    const auto security_args = f.security.to_args();
    args.insert(args.end(), security_args.begin(), security_args.end());
    if (!f.log_level.empty()) args.insert(args.end(), {"--log-level", f.log_level});
    if (!options.host.empty()) args.insert(args.end(), {"--host-name", options.host});
    if (!options.auto_prefetch) args.insert(args.end(), {"--prefetch", std::to_string(options.prefetch)});
    for (const auto& c : f.commands) args.insert(args.end(), {"--command", c});
    if (!f.commands_file.empty()) args.insert(args.end(), {"--commands", f.commands_file});
    return args;
}

// A processes-pool child's key for LOST reports, from its supervisor
// (k_lost_key_env, in hex), removed from the environment so that the
// commands it runs do not see it.
std::string take_lost_key() {
    const char* hex = std::getenv(k_lost_key_env);
    std::string key = hex ? from_hex_text(hex) : std::string();
    ::unsetenv(k_lost_key_env);
    return key;
}

// Runs the worker, or the supervisor of a processes pool, until stopped.
// Returns the exit status (or ends the process: 130 after a stop at once,
// k_exit_replaced for a child replaced after a timeout). Throws:
// SecurityError, and std::exception for a broken environment.
int run(WorkerOptions& options, const Flags& f, const char* self, const Registry& registry) {
    auto log = make_logger(f.child ? "worker-child" : "worker", f.log_level);
    StopSource stop;
    stop_on_signals(stop, /*once=*/f.child);  // a child stops at once on its supervisor's k_stop_now_signal
    ignore_hangup();
    options.security = make_security(f.security, Role::worker, log);
    if (options.pool == "processes" && !f.child)
        return run_supervisor(options, child_args(self, options, f), log, stop);
    if (f.child) {
        options.lost_key = take_lost_key();
        options.pool = "processes";  // as STATUS shows it; each child runs one task at a time
        options.concurrency = 1;
        options.replace_on_timeout = true;
    }
    if (!f.commands.empty() || !f.commands_file.empty()) adopt_command_orphans();  // its only children are commands
    zmq::context_t ctx;
    Worker worker(ctx, registry, options, log);
    switch (worker.run(stop)) {
        case Worker::Stopped::gracefully: return 0;
        case Worker::Stopped::at_once:
            signal_running_commands(SIGKILL);  // their process groups would outlive this one
            std::_Exit(130);
        case Worker::Stopped::replaced:
            // The timed-out command gets its SIGTERM and grace from the thread that runs it.
            if (!wait_running_commands(std::chrono::seconds(3))) signal_running_commands(SIGKILL);
            std::_Exit(k_exit_replaced);
    }
    return 0;
}

}  // namespace

int worker_main(int argc, char** argv, const Registry& registry) {
    tune_allocator();
    WorkerOptions options;
    Flags f;
    CLI::App app{
        "drover-worker: runs tasks from a drover broker.\n"
        "Pools: solo (one executor thread), threads (-c executor threads),\n"
        "processes (-c supervised child processes, restarted when they die)."};
    add_worker_options(app, options, f);
    add_version_flag(app, "drover-worker");
    try {
        app.parse(argc, argv);
        check_endpoint(options.broker, "--broker", /*inproc_ok=*/false);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    } catch (const std::invalid_argument& e) {
        std::cerr << "drover-worker: " << e.what() << "\n";
        return 2;
    }
    Registry tasks = registry;
    std::vector<CommandSpec> commands;
    try {
        for (const auto& c : f.commands) commands.push_back(parse_command_option(c));
        if (!f.commands_file.empty()) {
            auto more = load_commands_file(f.commands_file);
            commands.insert(commands.end(), more.begin(), more.end());
        }
        add_command_tasks(tasks, commands);
    } catch (const std::invalid_argument& e) {
        std::cerr << "drover-worker: " << e.what() << "\n";
        return 2;
    }
    if (f.list_tasks) {
        for (const auto& n : registry.names()) std::cout << n << "\n";
        for (const auto& c : commands) std::cout << describe_command(c) << "\n";
        return 0;
    }
    options.heartbeat = Millis(f.heartbeat_ms);
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    options.concurrency =
        f.concurrency > 0 ? static_cast<unsigned>(f.concurrency) : (options.pool == "solo" ? 1u : cores);
    try {
        return run(options, f, argv[0], tasks);
    } catch (const SecurityError& e) {
        std::cerr << "drover-worker: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "drover-worker: " << e.what() << "\n";
        return 1;
    }
}

}  // namespace drover
