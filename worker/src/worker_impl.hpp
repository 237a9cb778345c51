// The worker's insides: its I/O thread, executors and credit policy (Worker's pimpl).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "drover/common/logging.hpp"
#include "drover/common/protocol.hpp"
#include "drover/common/security.hpp"
#include "drover/common/stop.hpp"
#include "drover/worker/registry.hpp"
#include "drover/worker/worker.hpp"
#include "internal/net.hpp"
#include "internal/sink_sockets.hpp"

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
    void executor_loop(unsigned index);
    // Runs `task` (moving its id and name into `out`); returns when it ended.
    // on_io: run by the I/O thread (logged as on=io).
    Clock::time_point run_one(proto::Task& task, proto::Outcome& out, Clock::time_point start, bool on_io);
    // The I/O thread runs a lone task itself when every executor is idle and
    // the last sample's tasks were all quick, and sends the result: handing
    // it over was a thread wake-up on the path of every task sent one at a
    // time (W2, performance.md). Returns false, having done nothing, when the
    // task is for an executor.
    bool run_inline(proto::Task& task, std::string_view batch_reply_to);
    // Adds `n` tasks run, their time and the longest of them (any thread).
    void count_runs(std::uint32_t n, std::uint64_t busy_ns, std::uint64_t longest_ns);
    void connect_to_broker();
    // Credits that keep the worker busy: slots + prefetch.
    std::uint32_t target_credits();
    // Grants the broker what is missing to target_credits(), in batches of
    // half the prefetch (at least 1): credits a task were a READY a task.
    // Returns how many more tasks must finish before the next batch is due.
    std::uint32_t top_up_credits();
    // When every slot has run its task for k_give_back_after (worker.cpp),
    // gives the broker back the tasks queued here on plain credits that none
    // has started (RETURN), after a READY naming the running tasks with
    // their time so far: a name the broker took for short, whose tasks it
    // queued here, runs long with these arguments. Tasks sent on start
    // credits stay. Returns when to look again.
    Clock::time_point give_back_queued(Clock::time_point now, bool stopping);
    // Grants the early credits due (auto_prefetch, long tasks). Returns when
    // the next one is due.
    Clock::time_point grant_early_credits(Clock::time_point now, bool stopping);
    // Handles running tasks past their deadline: RETRY while attempts remain,
    // else a `timeout` outcome to the sink; then sends every RETRY waiting
    // (the executors' too). Returns the next deadline.
    Clock::time_point report_timeouts(Clock::time_point now);
    // Passes results whose sink an executor cannot reach to the broker.
    void forward_results(std::string_view body);
    void send_retries();
    // Takes finished_ into outstanding_ and promised_.
    void count_finished();
    // Sends READY with `credits`, `starts` of them start credits, and the
    // task times due to the broker (none sent when there is nothing to say).
    void send_ready(std::uint32_t credits, std::uint32_t starts);
    // Adds the run times of a flush's tasks by name (n tasks, ns in all);
    // returns whether a name's time is new or 4x off what the broker was told.
    using NameTimes = std::vector<std::pair<std::string, std::pair<std::uint64_t, std::uint64_t>>>;
    bool add_name_times(const NameTimes& times);
    Stopped leave_to_be_replaced();

    zmq::context_t& ctx_;
    const Registry& registry_;
    WorkerOptions options_;
    Logger log_;
    // The broker socket and timeout reports live in their own context when
    // the process may end with a task still running (replace_on_timeout):
    // closing that context is what makes sure the last messages left.
    std::unique_ptr<zmq::context_t> own_ctx_;
    zmq::context_t& io_ctx_;
    SinkSockets timeout_sinks_;  // I/O thread only
    // What the executors know of each sink. One never reached within the
    // liveness window gets its results through the broker (a sink behind
    // NAT, or on an address this host cannot route to), and is tried
    // directly again at every later batch.
    struct SinkReach {
        Clock::time_point first_try{};
        bool reached = false;
        bool via_broker = false;
    };
    std::mutex reach_mutex_;
    std::unordered_map<std::string, SinkReach> reach_;
    std::string done_endpoint_;
    std::unique_ptr<zmq::socket_t> broker_;

    std::mutex mutex_;
    std::condition_variable wake_;
    // A DISPATCH's tasks, decoded by the I/O thread. A task without a
    // reply_to of its own goes to the batch's, kept once: copying it into
    // every task cost an allocation there and a free on the executor.
    // Executors claim its tasks one by one with one atomic step each, not
    // under mutex_: the lock is taken once a batch, not twice a task (two
    // executors of quick tasks spent a fifth of their time on it; a batch of
    // one task still costs one), and no executor holds tasks that another
    // one could start.
    struct Dispatched {
        std::string reply_to;
        std::vector<proto::Task> tasks;
        std::atomic<std::size_t> next{0};  // tasks[next..] are unclaimed (claims may count past the end)
        [[nodiscard]] bool spent() const { return next.load(std::memory_order_relaxed) >= tasks.size(); }
    };
    // Oldest first. Spent batches are popped by the executors that find them
    // at the front, under mutex_; an executor keeps its batch alive meanwhile.
    std::deque<std::shared_ptr<Dispatched>> queue_;
    unsigned idle_executors_ = 0;  // waiting for a task (guarded by mutex_)
    // Tasks with a timeout that an executor is running (guarded by mutex_).
    // At the deadline the I/O thread reports `timeout`; the executor then
    // drops the late result, and its slot stays busy until the task returns.
    struct Running {
        Clock::time_point deadline;
        proto::Task task;
        bool timed_out = false;
    };
    // By run, numbered here: a task retried after its timeout may land on
    // this worker while its first run goes on (even under the same attempt
    // number, sent again by a restarted broker), and each run has its own
    // deadline.
    std::map<std::uint64_t, Running> running_;
    std::uint64_t runs_ = 0;              // the last run number given
    std::vector<std::string> retries_;    // failed with attempts left: for the I/O thread to send RETRY
    std::vector<std::string> timed_out_;  // with replace_on_timeout: reported `timeout` (final)
    bool replace_ = false;                // with replace_on_timeout: a task timed out
    bool closing_ = false;
    std::atomic<bool> abort_{false};
    std::vector<std::thread> executors_;

    // Tasks the executors finished (results handed on) that the I/O thread
    // has not counted yet. An executor wakes the I/O thread only once they
    // reach wake_after_, which the I/O thread sets to what it needs to act:
    // enough for a batch of credits, or 1 while stopping. A wake-up a task
    // was a thread hand-off and a READY a task, on two cores shared by the
    // whole pipeline (W2 latency, performance.md).
    std::atomic<std::uint32_t> finished_{0};
    std::atomic<std::uint32_t> wake_after_{1};

    // Run times by task name for the broker, which dispatches a long or
    // untimed name only on start credits (free slots): the last told and,
    // when it changed 4x or more, the one to tell (0: none).
    struct NameTime {
        std::uint64_t told_ns = 0, due_ns = 0;
    };
    std::mutex times_mutex_;
    std::unordered_map<std::string, NameTime> times_;  // guarded by times_mutex_
    std::atomic<bool> times_due_{false};
    // The broker holds fewer start credits than there are slots: an
    // executor that goes idle wakes the I/O thread, to grant one.
    std::atomic<bool> starts_low_{true};

    // I/O thread only:
    std::uint32_t starts_out_ = 0;   // start credits granted and not yet used by a DISPATCH seen
    std::uint32_t outstanding_ = 0;  // received and not yet done
    std::uint32_t promised_ = 0;     // credits granted and not yet done (held at the broker or here)
    std::uint64_t sampled_ran_ = 0, sampled_busy_ns_ = 0, mean_task_ns_ = 0;
    // Executors add their tasks' run times at each report (busy_ns_ first),
    // not at each task: two executors adding to one cache line a task spent
    // a third of their own time there (perf, W1 over inproc).
    std::atomic<std::uint64_t> ran_{0}, busy_ns_{0};
    std::atomic<std::uint64_t> longest_ns_{0};      // the longest task since the last sample
    std::uint64_t window_longest_ns_ = UINT64_MAX;  // I/O thread: the longest of the last sample's
    std::unique_ptr<SinkSockets> inline_sinks_;     // I/O thread: for the tasks it runs itself
    // Early credits: how long after a task's start its slot's next credit is
    // due, in ns (0: none, the tasks are short or unmeasured). Set by the
    // I/O thread. Each executor records when its task started (0: idle), in
    // a cache line of its own.
    std::atomic<std::int64_t> early_after_ns_{0};
    struct alignas(64) SlotStart {
        std::atomic<std::int64_t> ns{0};
    };
    std::unique_ptr<SlotStart[]> started_ns_;
    // By executor, the name of its task (set when it changes), for RETURN.
    struct SlotName {
        std::mutex mutex;
        std::string name;
    };
    std::unique_ptr<SlotName[]> slot_names_;
    std::vector<std::int64_t> early_granted_;  // I/O thread: by executor, the start its early credit was for
    std::uint64_t ran_at_trim_ = 0;            // I/O thread: ran_ when the heap was last trimmed
    std::uint64_t ran_at_tick_ = 0;            // I/O thread: ran_ at the last heartbeat tick
    Clock::time_point last_from_broker_{};
};

}  // namespace drover
