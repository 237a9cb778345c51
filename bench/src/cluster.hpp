// drover as the benchmark runs it: a broker and workers, and a producer driving them.
#pragma once

// DroverCluster starts the real drover-broker and drover-worker executables
// as child processes (tcp loopback or ipc), or a LocalCluster (broker and
// worker threads over inproc, what `drover-producer --local N` runs). The
// producer side is a drover::Client in the benchmark's process, so a figure
// runs from the first submit to the last outcome at the sink. run_tasks and
// round_trips submit through it and throw if anything is lost or stalls.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "baselines.hpp"
#include "child.hpp"
#include "drover/client/client.hpp"
#include "drover/cluster/local_cluster.hpp"
#include "drover/worker/registry.hpp"

namespace drover::bench {

struct DroverEnv {
    std::string broker_exe, worker_exe;
    std::string dir;                       // temp dir: logs, endpoint files, ipc sockets
    std::vector<std::string> worker_args;  // extra drover-worker flags (e.g. --prefetch 50)
    std::string log_level = "warn";        // of the broker and workers
};

struct ClusterSpec {
    // solo: `workers` drover-worker processes; threads or processes: one
    // drover-worker with -c `workers`. Over inproc: LocalCluster threads.
    std::string pool = "solo";
    unsigned workers = 2;
    std::vector<std::string> broker_args;
    bool attach_workers = true;  // false: the broker alone; attach_workers() later
};

class DroverCluster {
public:
    // Starts the broker and (unless told not to) the workers, and waits until
    // the broker lists them. Throws: std::runtime_error if they do not start.
    DroverCluster(const DroverEnv& env, zmq::context_t& ctx, Transport& transport, ClusterSpec spec);
    ~DroverCluster();
    DroverCluster(const DroverCluster&) = delete;
    DroverCluster& operator=(const DroverCluster&) = delete;

    // Starts the workers and waits until the broker lists all of them.
    void attach_workers();

    // Options for a Client of this cluster whose window never blocks a
    // caller that keeps at most `window` tasks unfinished.
    [[nodiscard]] ClientOptions client_options(std::size_t window);
    [[nodiscard]] pid_t broker_pid() const;
    [[nodiscard]] std::string describe() const;

    // The broker's STATUS. Throws: std::runtime_error without an answer in 5 s.
    nlohmann::json status();
    // Waits until the broker holds no task (every one settled).
    // Throws: std::runtime_error if some are still held after `timeout`.
    // Returns the broker's STATUS once nothing is held.
    nlohmann::json wait_settled(Millis timeout);

private:
    std::size_t expected_registrations() const;
    std::string log_path() const;

    DroverEnv env_;
    zmq::context_t& ctx_;
    Transport& transport_;
    ClusterSpec spec_;
    std::string frontend_, backend_;
    std::unique_ptr<Child> broker_;
    std::vector<std::unique_ptr<Child>> workers_;
    std::unique_ptr<Registry> registry_;  // inproc
    std::unique_ptr<LocalCluster> local_;
};

// Tasks submitted through one Client, with their outcomes counted on the
// client's I/O thread. The submitting thread keeps at most `window`
// unfinished (so Client::submit never blocks where a stall could not be
// seen) and waits with stall detection.
class Batch {
public:
    Batch(Client& client, std::size_t window);
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;
    // Submits one task, first waiting while `window` are unfinished.
    // Throws: std::runtime_error on a stall (no outcome for 30 s).
    void submit(const std::string& task, std::string args);
    // Waits for every outcome. Throws: std::runtime_error on a stall, or if
    // an outcome is not ok.
    void wait_all();
    [[nodiscard]] std::size_t submitted() const { return submitted_; }

private:
    struct State;
    void wait_until(std::size_t done_at_least);

    Client& client_;
    std::size_t window_;
    std::size_t submitted_ = 0;
    std::shared_ptr<State> state_;  // outlives this Batch if callbacks may still run
};

// Submits `n` tasks named `task` with arguments `args(i)`, keeping at most
// `window` unfinished, and waits for every outcome. Returns seconds from the
// first submit to the last outcome. Throws: std::runtime_error if an outcome
// is not ok, or no outcome arrives for 30 s.
double run_tasks(Client& client, const std::string& task, const std::function<std::string(std::size_t)>& args,
                 std::size_t n, std::size_t window);

// `rounds` echo tasks, one at a time. Returns each round trip in microseconds.
std::vector<double> round_trips(Client& client, std::size_t rounds);

}  // namespace drover::bench
