// The baselines: what plain ZeroMQ (cppzmq) does with drover's shape and no tracking.
#pragma once

// B1 raw pipeline: ventilator PUSH -> 2 workers PULL/PUSH -> sink PULL.
// B2 bare broker: ventilator DEALER -> zmq::proxy ROUTER/DEALER -> 2 workers
//    DEALER/PUSH -> sink PULL (results skip the broker, as drover's do).
// B3 round trip: one message at a time through B2's broker and back to the sink.
// The ventilator and the sink live in the benchmark's process, like drover's
// producer and sink; workers and the broker are child processes (this same
// executable run with --role) over tcp and ipc, and threads over inproc.
// One task per message, no credits, no acknowledgements.

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "child.hpp"

namespace drover::bench {

// Names the endpoints a benchmark binds on one transport.
class Transport {
public:
    // `name` is tcp, ipc or inproc; ipc endpoints go into `dir`.
    Transport(std::string name, std::string dir);
    [[nodiscard]] const std::string& name() const { return name_; }
    [[nodiscard]] bool in_process() const { return name_ == "inproc"; }
    // An endpoint to bind for `role`: tcp://127.0.0.1:* (read the port back
    // with last_endpoint), ipc://DIR/role-N or inproc://bench-role-N.
    [[nodiscard]] std::string bind_endpoint(const std::string& role);

private:
    std::string name_, dir_;
    unsigned next_ = 0;
};

// Role bodies, run in a child process (drover-bench --role ...) or on a
// thread. They return when their context is shut down.
//   pipeline worker: receives on `in` (PULL, or DEALER behind a proxy),
//   forwards each payload to `out` (PUSH). It first sends one empty message
//   to `out` to say it is connected.
void run_pipeline_worker(zmq::context_t& ctx, const std::string& in, const std::string& out, bool behind_proxy);
//   bare broker: ROUTER `frontend`, DEALER `backend`, zmq::proxy between;
//   writes {"frontend":..,"backend":..} to `endpoints_file` once bound.
void run_bare_broker(zmq::context_t& ctx, const std::string& frontend, const std::string& backend,
                     const std::string& endpoints_file);

// What the baselines need from the run.
struct BaselineEnv {
    std::string self_exe;  // this program, for --role
    std::string dir;       // temp dir for logs and endpoint files
};

// The ventilator, sink and 2 workers of B1, or those and the broker of B2/B3,
// started once and used for several runs. The destructor stops everything.
class Baseline {
public:
    enum class Shape { pipeline, bare_broker };
    // Starts the workers (and the broker) and waits until both workers are
    // connected. Throws: std::runtime_error if they do not start.
    Baseline(Shape shape, const BaselineEnv& env, Transport& transport, unsigned workers = 2);
    ~Baseline();
    Baseline(const Baseline&) = delete;
    Baseline& operator=(const Baseline&) = delete;

    // Sends `n` messages of `bytes` bytes (at least 8) as fast as the
    // sockets take them. Returns seconds from the first send until the sink
    // holds all n. Throws: std::runtime_error if the sink stalls for 20 s.
    double stream(std::size_t n, std::size_t bytes);
    // `rounds` single messages (8 bytes), each sent once the previous one
    // reached the sink. Returns each round trip in microseconds.
    std::vector<double> round_trips(std::size_t rounds);

private:
    std::string log_path() const;

    Shape shape_;
    BaselineEnv env_;
    bool in_process_;
    zmq::context_t ctx_;
    zmq::socket_t source_;  // PUSH (pipeline) or DEALER (bare broker)
    zmq::socket_t sink_;
    std::vector<std::unique_ptr<Child>> children_;
    std::vector<std::thread> threads_;  // roles over inproc
};

}  // namespace drover::bench
