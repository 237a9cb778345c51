// A worker: takes tasks from a broker against credits and runs them.
#pragma once

// Worker runs one I/O thread (the caller of run()) that owns the broker
// connection, and N executor threads that run tasks. The I/O thread queues
// each DISPATCH for the executors; an executor runs a task, pushes its
// outcome straight to the task's reply_to sink (one PUSH socket per endpoint
// per executor), and then tells the I/O thread over inproc, which returns the
// credit to the broker. So a credit comes back only once its result has left,
// and a stalled sink slows its workers instead of filling their memory.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "drover/common/clock.hpp"
#include "drover/common/limits.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/security.hpp"
#include "drover/common/stop.hpp"
#include "drover/worker/registry.hpp"

namespace drover {

struct WorkerOptions {
    std::string broker = "tcp://127.0.0.1:5556";  // the broker's backend
    std::string pool = "solo";                    // solo | threads | processes
    unsigned concurrency = 1;                     // executor threads (threads) or children (processes)
    unsigned prefetch = 1;                        // credits beyond the free slots (the least, when automatic)
    // Grow the prefetch to keep ~2 ms of work queued per slot, from measured
    // task times: short tasks then cost no round trip to the broker each.
    // Tasks so long that not even one fits in 2 ms a slot get no prefetch:
    // a slot's next credit goes out just before its running task is expected
    // to end (its mean time less the lead below), so a task never waits
    // behind a long one here while another worker could start it.
    bool auto_prefetch = true;
    std::chrono::microseconds early_credit_lead{2000};  // at most half the mean task time
    Millis heartbeat{1000};
    int liveness = 3;
    std::string host;  // the host name given at HELLO (STATUS groups by it); default gethostname()
    std::string id;    // shown in STATUS and results; default host:pid
    std::int64_t max_message_bytes = k_default_max_message_bytes;
    // A processes-pool child: after a timeout, report it and end the process
    // (run() returns `replaced`) so that the supervisor starts a fresh one.
    bool replace_on_timeout = false;
    std::uint32_t restarts = 0;          // reported at HELLO
    std::string lost_key;                // a processes-pool child: its supervisor's key for LOST, given at HELLO
    std::shared_ptr<Security> security;  // CurveZMQ to broker and sinks; nullptr: plain
};

// The exit status of a child that ended itself to be replaced after a timeout.
inline constexpr int k_exit_replaced = 75;

class WorkerImpl;

class Worker {
public:
    Worker(zmq::context_t& ctx, const Registry& registry, WorkerOptions options, Logger log);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    enum class Stopped { gracefully, at_once, replaced };

    // Serves until `stop` is requested. At the first request the worker
    // stops taking credits, finishes every task it holds, says BYE and
    // returns `gracefully`. At a second request it returns `at_once` while
    // tasks may still run: the caller should then end the process. With
    // replace_on_timeout, a task past its deadline makes it report, say BYE
    // and return `replaced`, the task still running: end the process then.
    Stopped run(const StopSource& stop);

    // The id it registers with (WorkerOptions::id, or host:pid).
    [[nodiscard]] const std::string& id() const;

private:
    std::unique_ptr<WorkerImpl> impl_;
};

}  // namespace drover
