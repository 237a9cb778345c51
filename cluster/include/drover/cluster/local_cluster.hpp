// A broker and workers started by the producer itself: the zero-setup form.
#pragma once

// LocalCluster runs a Broker on a thread of this process and either a Worker
// with N executor threads on another thread (pool "threads", everything over
// inproc:// in the caller's context), or one `drover-worker --pool processes
// -c N` supervisor as a child process (pool "processes", backend over ipc://).
// The destructor stops all of it.

#include <memory>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "drover/broker/broker.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/stop.hpp"
#include "drover/worker/registry.hpp"
#include "drover/worker/worker.hpp"

namespace drover {

struct LocalClusterOptions {
    unsigned workers = 2;
    std::string pool = "threads";  // threads | processes
    std::string worker_exe;        // for processes; default: drover-worker next to this program
    unsigned prefetch = 1;
};

class LocalCluster {
public:
    // Starts the broker and workers and waits until the workers have registered.
    // Throws: std::runtime_error if the workers do not register within 10 s.
    LocalCluster(zmq::context_t& ctx, const Registry& registry, LocalClusterOptions options, Logger log);
    ~LocalCluster();
    LocalCluster(const LocalCluster&) = delete;
    LocalCluster& operator=(const LocalCluster&) = delete;

    // The broker's frontend, for a Client in the same context.
    [[nodiscard]] const std::string& frontend() const { return broker_->frontend_endpoint(); }
    // Where a Client should bind its sink so that these workers reach it.
    [[nodiscard]] std::string sink_endpoint() const;

private:
    // pool "threads": one Worker with options_.workers executor threads, on a thread.
    void start_worker_thread(zmq::context_t& ctx, const Registry& registry);
    // pool "processes": a drover-worker supervisor as a child process.
    void start_worker_process();
    // Throws: std::runtime_error if the workers have not registered within
    // 10 s, or the worker process exited.
    void wait_for_workers();
    void stop_all();

    LocalClusterOptions options_;
    Logger log_;
    std::string ipc_dir_;
    StopSource broker_stop_, worker_stop_;
    std::unique_ptr<Broker> broker_;
    std::unique_ptr<Worker> worker_;
    std::thread broker_thread_, worker_thread_;
    pid_t child_ = -1;
};

// The drover-worker executable that sits next to the running program, or
// "drover-worker" to be found on PATH.
std::string sibling_executable(const std::string& name);

}  // namespace drover
