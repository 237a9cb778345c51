// drover-bench: every workload of the benchmark in one run, baselines first.
#pragma once

#include <set>
#include <string>
#include <vector>

namespace drover::bench {

struct BenchOptions {
    unsigned reps = 3;
    std::size_t tasks = 200'000;             // W1, W5: tasks per repetition
    std::size_t baseline_tasks = 1'000'000;  // B1, B2: messages per repetition (they are 5-20x faster)
    std::size_t latency_rounds = 2'000;      // W2, B3
    std::size_t seed_tasks = 64;             // W3: sum_random tasks
    std::int64_t seed_n = 1'000'000;         // W3: integers summed per task
    std::size_t queue_tasks = 1'000'000;     // W4
    unsigned many_workers = 200;             // W5
    std::size_t big_bytes = 64 * 1024;       // W6 and B1's big messages
    std::size_t big_tasks = 5'000;           // W6 and B1's big messages
    std::size_t command_tasks = 2'000;       // W10: command tasks, and lines for xargs and parallel
    std::size_t window = 20'000;             // unfinished tasks the producer keeps (Client's default)
    std::size_t big_window = 0;              // the same for W6; 0: 8 MiB of big arguments (128 at 64 KiB)
    std::vector<std::string> transports{"tcp", "ipc", "inproc"};
    std::set<std::string> only;  // B1..B3, W1..W9; empty: all
    std::string json_path;
    std::string log_dir;  // keep logs and endpoint files here (default: a temp dir, removed)
    std::string broker_exe, worker_exe, producer_exe;
    std::vector<std::string> worker_args;
    std::string log_level = "warn";  // of the drover processes started
    bool smoke = false;
};

// The sizes of --smoke: a few seconds, every figure produced.
void apply_smoke_sizes(BenchOptions& o);

// Runs the selected workloads, prints progress on stderr and the table on
// stdout, and writes the JSON file if asked. Returns 0 if every figure was
// produced (whether or not its target was met), 1 otherwise.
int run_bench(BenchOptions options);

}  // namespace drover::bench
