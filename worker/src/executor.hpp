// An executor thread: claims queued tasks, runs them, and reports their outcomes in batches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "drover/common/clock.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/protocol.hpp"
#include "drover/worker/registry.hpp"
#include "drover/worker/worker.hpp"
#include "result_route.hpp"
#include "shared_state.hpp"
#include "task_times.hpp"

namespace drover {

// Runs `task` (moving its id and name into `out`, with its status, result
// or error and time); returns when it ended. Never throws for the task's
// sake. on_io: run by the I/O thread (logged as on=io). Any thread.
Clock::time_point run_task(const Registry& registry, const WorkerOptions& options, const Logger& log, proto::Task& task,
                           proto::Outcome& out, Clock::time_point start, bool on_io);

// One executor: takes tasks from the shared queue, runs them, and sends
// their outcomes straight to their sinks, in batches of up to
// k_result_batch, then counts them in `finished` and wakes the I/O thread
// when it has something to do. Every member is this executor's thread's.
class Executor {
public:
    // Opens its sockets; to be made on the thread that calls run().
    Executor(SharedState& shared, const WorkerOptions& options, const Registry& registry, Logger log,
             zmq::context_t& ctx, const std::string& io_endpoint, unsigned index);
    // Runs tasks until the worker closes (its queue drained) or aborts.
    void run();

private:
    // The next task, without waiting: nullptr when none is left unclaimed.
    proto::Task* take();
    // Whether a task is left unclaimed; takes the next batch when this one
    // is spent, so that take() then needs no lock of its own.
    bool more_queued();
    // Reports what it holds and waits for a batch. Returns false when the
    // worker closes (and the queue is drained) or aborts.
    bool wait_for_tasks();
    // Runs `task`, keeps its outcome for the next report, and reports when
    // due. `task` may be gone on return.
    void execute(proto::Task& task);
    // Notes a task with a timeout as running, for the I/O thread to watch its deadline. Returns its run number.
    std::uint64_t watch_deadline(const proto::Task& task, const std::string& sink);
    // Whether the outcome of a task with a timeout is dropped: the I/O
    // thread reported it timed out, or it ended past its deadline with
    // attempts left (a RETRY then). Past it on its last attempt, `out` becomes `timeout`.
    bool past_deadline(std::uint64_t run, const proto::Task& task, proto::Outcome& out, Clock::time_point end,
                       Clock::duration elapsed);
    // Keeps `out` for the next report to `sink`, or asks for a RETRY of a failed task.
    void keep(const proto::Task& task, const std::string& sink, proto::Outcome&& out);
    // Records the start of this slot's task (if not announced), waking the
    // I/O thread to time its early credit when there are early credits.
    void announce_start(Clock::time_point start);
    // Points times_at_ at the entry of `name` in times_, and tells the I/O thread the slot's task name.
    void note_name(const std::string& name);
    // Sends the outcomes kept, counts them, and wakes the I/O thread when it
    // has something to do. after_long: the last task ran long and the slot
    // goes idle after it.
    void report(bool after_long);
    // Outcomes their sink would not take: the broker runs their tasks again
    // later (or ends them as lost once their attempts are spent).
    void retry_later(const std::vector<proto::Outcome>& outcomes);
    void retry_later(std::string&& id);
    void wake_io() { to_io_.send(zmq::message_t(), zmq::send_flags::none); }

    SharedState& shared_;
    const WorkerOptions& options_;
    const Registry& registry_;
    Logger log_;
    Slot& slot_;
    const std::string worker_name_;  // in its outcomes
    const std::size_t batch_bytes_;  // a report's outcomes, at most
    zmq::socket_t to_io_;            // wake-ups, and results for the broker
    ResultRoute route_;

    // The batch tasks are claimed from. A task's timeout starts when it starts, not when claimed.
    std::shared_ptr<Dispatched> batch_;
    Clock::time_point carried_{};  // the end of the last task, if the next follows it at once (else zero)
    // Since the last report: the outcomes by sink, and the tasks run.
    std::unordered_map<std::string, std::vector<proto::Outcome>> pending_;
    std::size_t pending_count_ = 0;
    std::size_t pending_bytes_ = 0;
    std::uint64_t busy_ns_ = 0;     // their run time
    std::uint64_t longest_ns_ = 0;  // the longest of them
    NameTimes times_;               // their count and time by name
    bool retried_ = false;          // a RETRY is due from the I/O thread
    // The outcomes of the last sink used, most tasks of a run going to one.
    const std::string* last_sink_ = nullptr;
    std::vector<proto::Outcome>* last_outcomes_ = nullptr;
    std::size_t times_at_ = 0;  // times_'s entry of the last task's name
    std::string slot_name_;     // the last task's name
};

}  // namespace drover
