// A worker: takes tasks from a broker against credits and runs them.
#pragma once

// Worker runs one I/O thread (the caller of run()) that owns the broker
// connection, and N executor threads that run tasks. The I/O thread queues
// each DISPATCH for the executors; an executor runs a task, pushes its
// outcome straight to the task's reply_to sink (one PUSH socket per endpoint
// per executor), and then tells the I/O thread over inproc, which returns the
// credit to the broker. So a credit comes back only once its result has left,
// and a stalled sink slows its workers instead of filling their memory.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "drover/logging.hpp"
#include "drover/net.hpp"
#include "drover/protocol.hpp"
#include "drover/registry.hpp"
#include "drover/stop.hpp"

namespace drover {

struct WorkerOptions {
    std::string broker = "tcp://127.0.0.1:5556";  // the broker's backend
    std::string pool = "solo";                    // solo | threads | processes
    unsigned concurrency = 1;                     // executor threads (threads) or children (processes)
    unsigned prefetch = 1;                        // credits beyond the free slots
    Millis heartbeat{1000};
    int liveness = 3;
    std::string id;  // shown in STATUS and results; default host:pid
    std::int64_t max_message_bytes = k_default_max_message_bytes;
};

class Worker {
public:
    Worker(zmq::context_t& ctx, const Registry& registry, WorkerOptions options, Logger log);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    enum class Stopped { gracefully, at_once };

    // Serves until `stop` is requested. At the first request the worker
    // stops taking credits, finishes every task it holds, says BYE and
    // returns `gracefully`. At a second request it returns `at_once` while
    // tasks may still run: the caller should then end the process.
    Stopped run(const StopSource& stop);

    [[nodiscard]] const std::string& id() const { return options_.id; }

private:
    void executor_loop(unsigned index);
    void connect_to_broker();
    void grant(std::uint32_t credits);
    // Reports `timeout` for running tasks past their deadline; returns the next deadline.
    Clock::time_point report_timeouts(Clock::time_point now);

    zmq::context_t& ctx_;
    const Registry& registry_;
    WorkerOptions options_;
    Logger log_;
    SinkSockets timeout_sinks_;  // I/O thread only
    std::string done_endpoint_;
    std::unique_ptr<zmq::socket_t> broker_;

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<proto::Task> queue_;
    // Tasks with a timeout that an executor is running (guarded by mutex_).
    // At the deadline the I/O thread reports `timeout`; the executor then
    // drops the late result, and its slot stays busy until the task returns.
    struct Running {
        Clock::time_point deadline;
        proto::Task task;
        bool timed_out = false;
    };
    std::unordered_map<std::string, Running> running_;
    bool closing_ = false;
    std::atomic<bool> abort_{false};
    std::vector<std::thread> executors_;

    std::uint32_t capacity_ = 0;     // slots + prefetch
    std::uint32_t outstanding_ = 0;  // received and not yet done (I/O thread only)
    Clock::time_point last_from_broker_{};

};

// The whole drover-worker command line: parses argv, sets up logging and
// signals, and runs a Worker (solo, threads) or a supervisor of child
// processes (processes), each running the tasks in `registry`.
// Returns the process exit status. A C++ user calls it from their own main:
//
//   int main(int argc, char** argv) {
//       drover::Registry tasks;
//       drover::add_builtin_tasks(tasks);
//       tasks.add("square", [](double x) { return x * x; });
//       return drover::worker_main(argc, argv, tasks);
//   }
int worker_main(int argc, char** argv, const Registry& registry);

}  // namespace drover
