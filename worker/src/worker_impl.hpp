// The worker's supervisor: its I/O thread, which owns the broker connection and the executors (Worker's pimpl).
#pragma once

// Threads: run()'s caller is the I/O thread. It talks to the broker, queues
// each DISPATCH in shared_.held for the executors (executor.hpp), grants
// credits as the CreditPolicy (credits.hpp) decides, and watches deadlines.
// The executors send results straight to their sinks (result_route.hpp) and
// report to it over an inproc PUSH socket.
// Files: worker.cpp (the loop, the broker's messages, heartbeats, deadlines,
// stopping), worker_credits.cpp (READY, early credits, RETURN).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "credits.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/protocol.hpp"
#include "drover/common/stop.hpp"
#include "drover/worker/registry.hpp"
#include "drover/worker/worker.hpp"
#include "internal/net.hpp"
#include "internal/sink_sockets.hpp"
#include "internal/stall.hpp"
#include "shared_state.hpp"
#include "task_times.hpp"

namespace drover {

class WorkerImpl {
public:
    using Stopped = Worker::Stopped;

    WorkerImpl(zmq::context_t& ctx, const Registry& registry, WorkerOptions options, Logger log);
    ~WorkerImpl();
    WorkerImpl(const WorkerImpl&) = delete;
    WorkerImpl& operator=(const WorkerImpl&) = delete;

    // Serves until `stop` is requested. At the first request the worker
    // stops taking credits, finishes every task it holds, says BYE and
    // returns `gracefully`. At a second request it returns `at_once` while
    // tasks may still run: the caller should then end the process. With
    // replace_on_timeout, a task past its deadline makes it report, say BYE
    // and return `replaced`, the task still running: end the process then.
    Stopped run(const StopSource& stop);

    [[nodiscard]] const std::string& id() const { return options_.id; }

private:
    // Every function below runs on the I/O thread.

    // The loop and the broker (worker.cpp).
    // Registers (HELLO) on a fresh socket, and grants the credits due.
    void connect_to_broker();
    // Waits for the next event: a message, an executor's report, or the
    // next timer (heartbeat, deadline, early credit, RETURN). counted_late:
    // a report came in before the wait was planned.
    void wait_for_events(Poller& poller, zmq::socket_t& from_executors, const StopSource& stop,
                         Clock::time_point next_deadline, bool counted_late, StallMeter& stall_meter);
    // Forwards the results executors could not deliver; the rest are wake-ups.
    void drain_executors(zmq::socket_t& from_executors, Poller& poller);
    // Handles the broker's messages waiting, at most 1024 (DrainBudget).
    void drain_broker();
    void on_broker_message(proto::Command cmd, std::string_view body);
    // Queues a DISPATCH's tasks for the executors (or runs a lone quick one).
    void on_dispatch(std::string_view body);
    // Sends HEARTBEAT, trims the heap when idle, reconnects to a silent broker.
    void on_heartbeat(Clock::time_point now);
    // Says BYE, lets the executors finish and joins them.
    Stopped stop_gracefully();
    // Reports the tasks timed out, says BYE and closes the I/O context (its messages sent); executors abort.
    Stopped leave_to_be_replaced();

    // The I/O thread runs a lone task itself when every executor is idle and
    // the last sample's tasks were all quick, and sends the result: handing
    // it over would put a thread wake-up on the path of every task sent one
    // at a time (drover-bench W2). Returns false, having done nothing, when
    // the task is for an executor.
    bool run_inline(proto::Task& task, std::string_view batch_reply_to);
    // Sends a result the I/O thread produced, through the broker if its sink will not take it.
    void send_inline_result(const std::string& sink, const proto::Outcome& out);
    // Passes results whose sink an executor cannot reach to the broker; tasks it will not take are retried.
    void forward_results(std::string_view body);

    // Credits on the wire (worker_credits.cpp).
    // Counts the executors' finished tasks into the credit policy.
    void count_finished();
    // Grants what CreditPolicy::top_up() says. Returns how many more tasks
    // must finish before the next batch is due.
    std::uint32_t top_up_credits();
    // Sends READY with `credits`, `starts` of them start credits, and the
    // task times due (none sent when there is nothing to say).
    void send_ready(std::uint32_t credits, std::uint32_t starts);
    // Grants the early credits due. Returns when the next one is due.
    Clock::time_point grant_early_credits(Clock::time_point now);
    // When every slot has run its task for k_give_back_after, gives the
    // broker back the tasks queued here on plain credits that none has
    // started (RETURN), after a READY naming the running tasks with their
    // time so far: a name the broker took for short runs long with these
    // arguments. Tasks sent on start credits stay. Returns when to look again.
    Clock::time_point give_back_queued(Clock::time_point now);
    // Takes the queued tasks no executor has started; those sent on start credits are queued again.
    std::vector<proto::Task> claim_queued_on_plain_credits();
    // The names running on the slots, with their time so far.
    RunNs running_names(Clock::time_point now);
    // Queues tasks at the front again (RETURN failed: they run here).
    void requeue(std::vector<proto::Task>&& tasks);
    [[nodiscard]] std::int64_t slot_started_ns(std::size_t slot) const {
        return shared_.slots[slot].started_ns.load(std::memory_order_acquire);
    }

    // Deadlines (worker.cpp).
    // Handles running tasks past their deadline: RETRY while attempts
    // remain, else a `timeout` outcome to the sink; then sends every RETRY
    // waiting (the executors' too). Returns the next deadline.
    Clock::time_point report_timeouts(Clock::time_point now);
    [[nodiscard]] proto::Outcome timeout_outcome(const proto::Task& task) const;
    // Sends `timeout` outcomes to their sinks, blocking up to a second each; logs and drops what will not go.
    void send_timeouts(std::unordered_map<std::string, std::vector<proto::Outcome>>& by_sink);
    // Sends RETRY for the tasks in shared_.held.retries.
    void send_retries();

    // Set before any thread starts; read by every thread.
    zmq::context_t& ctx_;
    const Registry& registry_;
    const WorkerOptions options_;  // id, host and concurrency settled
    const Logger log_;
    const Millis window_;            // heartbeat x liveness: the silence after which the broker is taken for gone
    const std::string io_endpoint_;  // inproc: the executors' reports to the I/O thread
    // The broker socket and timeout reports live in their own context when
    // the process may end with a task still running (replace_on_timeout):
    // closing that context is what makes sure the last messages left.
    const std::unique_ptr<zmq::context_t> own_ctx_;
    zmq::context_t& io_ctx_;

    // Shared with the executors, each part guarded as shared_state.hpp says.
    SharedState shared_;

    // The I/O thread's only (run()'s caller; the constructor and destructor too).
    struct IoState {
        IoState(zmq::context_t& io_ctx, const WorkerOptions& options);
        std::unique_ptr<zmq::socket_t> broker;
        std::vector<zmq::message_t> frames;         // a broker message
        SinkSockets timeout_sinks;                  // for `timeout` outcomes
        std::unique_ptr<SinkSockets> inline_sinks;  // for the results of tasks run on the I/O thread
        CreditPolicy credits;
        BrokerErrors broker_errors;          // the broker's ERRORs, logged once per reason
        std::vector<std::string> timed_out;  // with replace_on_timeout: reported `timeout` (final)
        bool replace = false;                // with replace_on_timeout: a task timed out
        bool stopping = false;               // finishing the tasks held, taking no credits
        Clock::time_point last_from_broker{};
        Clock::time_point next_heartbeat{};
        Millis backoff{};               // before the next reconnection
        std::uint64_t ran_at_trim = 0;  // tasks run when the heap was last trimmed
        std::uint64_t ran_at_tick = 0;  // tasks run at the last heartbeat
        std::vector<std::thread> executors;
    };
    IoState io_;
};

}  // namespace drover
