// drover-bench: the benchmark of issue 4 (baselines and drover workloads in one run).
#include <csignal>
#include <iostream>
#include <set>
#include <sstream>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "process.hpp"
#include "src/baselines.hpp"
#include "src/bench.hpp"

#ifndef DROVER_BROKER_EXE
#define DROVER_BROKER_EXE "drover-broker"
#endif
#ifndef DROVER_WORKER_EXE
#define DROVER_WORKER_EXE "drover-worker"
#endif

namespace {

std::vector<std::string> split(const std::string& text, char sep) {
    std::vector<std::string> out;
    std::istringstream in(text);
    std::string item;
    while (sep == ' ' ? static_cast<bool>(in >> item) : static_cast<bool>(std::getline(in, item, sep)))
        if (!item.empty()) out.push_back(item);
    return out;
}

// `name` in `dir` (installed programs) or in `dir`/`sub` (a build tree).
// `name` in a build tree (DIR/bin/NAME) or in a bin directory (DIR/NAME).
std::string find_program(const std::string& dir, const std::string& name) {
    const auto in_tree = dir + "/bin/" + name;
    return ::access(in_tree.c_str(), X_OK) == 0 ? in_tree : dir + "/" + name;
}

// A baseline role in a child process (see baselines.hpp).
int run_role(const std::string& role, const std::string& in, const std::string& out, bool behind_proxy,
             const std::string& frontend, const std::string& backend, const std::string& endpoints_file) {
    zmq::context_t ctx;
    if (role == "pipeline-worker") drover::bench::run_pipeline_worker(ctx, in, out, behind_proxy);
    else if (role == "bare-broker") drover::bench::run_bare_broker(ctx, frontend, backend, endpoints_file);
    else throw std::invalid_argument("unknown --role " + role);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    drover::tune_allocator();  // as drover-producer does
    drover::bench::BenchOptions o;
    std::string transports = "tcp,ipc,inproc", only, bin_dir, worker_args;
    std::string role, role_in, role_out, role_frontend, role_backend, role_endpoints;
    bool behind_proxy = false;

    CLI::App app{
        "drover-bench: baselines (raw ZeroMQ) and drover workloads in one run; prints a table of\n"
        "medians with min and max, each drover figure as a ratio to its baseline from the same run."};
    app.add_option("--reps", o.reps, "repetitions of each figure")->capture_default_str()->check(CLI::Range(1, 1000));
    app.add_option("--tasks", o.tasks, "W1, W5: tasks per repetition")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--baseline-tasks", o.baseline_tasks, "B1, B2: messages per repetition")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--latency-rounds", o.latency_rounds, "W2, B3: round trips per repetition")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--seed-tasks", o.seed_tasks, "W3: sum_random tasks per repetition")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--seed-n", o.seed_n, "W3: integers each sum_random task sums")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--queue-tasks", o.queue_tasks, "W4: tasks queued with no worker attached")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--many-workers", o.many_workers, "W5: solo worker processes")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    app.add_option("--big-bytes", o.big_bytes, "W6, B1: bytes of each big argument, result and message")
        ->capture_default_str()
        ->check(CLI::Range(8, 8 * 1024 * 1024));
    app.add_option("--big-tasks", o.big_tasks, "W6, B1: big tasks (messages) per repetition")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--command-tasks", o.command_tasks, "W10: command tasks (and xargs, parallel lines) per repetition")
        ->capture_default_str();
    app.add_option("--window", o.window, "unfinished tasks the producer keeps in W1, W5")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--big-window", o.big_window, "unfinished tasks the producer keeps in W6 (default: 8 MiB worth)")
        ->check(CLI::PositiveNumber);
    app.add_option("--transports", transports, "transports for B1-B3, W1-W3, W6 (W4, W5 run over tcp)")
        ->capture_default_str();
    app.add_option("--only", only,
                   "run only these, comma-separated: B1,B2,B3,W1,...,W10 (with what they compare with)");
    app.add_option("--json", o.json_path, "also write the figures as JSON to this file");
    app.add_option("--log-dir", o.log_dir, "keep the logs of every process started here (default: removed)");
    app.add_option("--log-level", o.log_level, "log level of the drover-broker and drover-worker processes")
        ->capture_default_str();
    app.add_option("--bin-dir", bin_dir,
                   "where drover-broker and drover-worker are: a bin dir or a build tree (default: this build's)");
    app.add_option("--worker-args", worker_args, "extra drover-worker flags, e.g. \"--prefetch 50\"");
    app.add_flag("--smoke", o.smoke, "tiny sizes and 1 repetition: checks that every figure is produced (ctest)");
    app.add_option("--role", role, "internal: run a baseline role")->group("");
    app.add_option("--in", role_in)->group("");
    app.add_option("--out", role_out)->group("");
    app.add_flag("--behind-proxy", behind_proxy)->group("");
    app.add_option("--frontend", role_frontend)->group("");
    app.add_option("--backend", role_backend)->group("");
    app.add_option("--endpoints-file", role_endpoints)->group("");
    try {
        app.parse(argc, argv);
        if (!role.empty())
            return run_role(role, role_in, role_out, behind_proxy, role_frontend, role_backend, role_endpoints);
        if (o.smoke) {
            // Sizes given on the command line still win over the smoke sizes.
            auto given = o;
            drover::bench::apply_smoke_sizes(o);
            for (auto* opt : app.get_options()) {
                if (opt->count() == 0) continue;
                const auto& name = opt->get_name();
                if (name == "--reps") o.reps = given.reps;
                if (name == "--tasks") o.tasks = given.tasks;
                if (name == "--baseline-tasks") o.baseline_tasks = given.baseline_tasks;
                if (name == "--latency-rounds") o.latency_rounds = given.latency_rounds;
                if (name == "--seed-tasks") o.seed_tasks = given.seed_tasks;
                if (name == "--seed-n") o.seed_n = given.seed_n;
                if (name == "--queue-tasks") o.queue_tasks = given.queue_tasks;
                if (name == "--many-workers") o.many_workers = given.many_workers;
                if (name == "--big-tasks") o.big_tasks = given.big_tasks;
                if (name == "--command-tasks") o.command_tasks = given.command_tasks;
            }
        }
        o.transports = split(transports, ',');
        for (const auto& t : o.transports)
            if (t != "tcp" && t != "ipc" && t != "inproc")
                throw std::invalid_argument("--transports: unknown '" + t + "'");
        for (const auto& w : split(only, ',')) {
            static const std::set<std::string> known{"B1", "B2", "B3", "W1", "W2", "W3", "W4",
                                                     "W5", "W6", "W7", "W8", "W9", "W10"};
            if (!known.count(w)) throw std::invalid_argument("--only: unknown '" + w + "' (B1..B3, W1..W10)");
            o.only.insert(w);
        }
        o.worker_args = split(worker_args, ' ');
        o.broker_exe = bin_dir.empty() ? DROVER_BROKER_EXE : find_program(bin_dir, "drover-broker");
        o.worker_exe = bin_dir.empty() ? DROVER_WORKER_EXE : find_program(bin_dir, "drover-worker");
        o.producer_exe = bin_dir.empty() ? DROVER_PRODUCER_EXE : find_program(bin_dir, "drover-producer");
        for (const auto& exe : {o.broker_exe, o.worker_exe, o.producer_exe})
            if (::access(exe.c_str(), X_OK) != 0) throw std::invalid_argument("cannot run " + exe + " (see --bin-dir)");
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    } catch (const std::invalid_argument& e) {
        std::cerr << "drover-bench: " << e.what() << "\n";
        return 2;
    }
    // A reader that goes away (`| head`) must not kill the run before it has
    // stopped its processes and removed its temporary directory.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        return drover::bench::run_bench(std::move(o));
    } catch (const std::exception& e) {
        std::cerr << "drover-bench: " << e.what() << "\n";
        return 1;
    }
}
