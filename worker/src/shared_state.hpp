// What the worker's I/O thread and its executors share, grouped by how each part is guarded.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "credits.hpp"
#include "drover/common/clock.hpp"
#include "drover/common/protocol.hpp"
#include "result_route.hpp"
#include "task_times.hpp"

namespace drover {

// A DISPATCH's tasks, decoded by the I/O thread. A task without a reply_to
// of its own goes to the batch's, kept once rather than copied into each.
// Executors claim its tasks one by one with one atomic step each, so that
// the queue's lock is taken once a batch rather than twice a task, and no
// executor holds tasks that another could start.
struct Dispatched {
    std::string reply_to;
    std::vector<proto::Task> tasks;
    std::atomic<std::size_t> next{0};  // tasks[next..] are unclaimed (claims may count past the end)
    [[nodiscard]] bool spent() const { return next.load(std::memory_order_relaxed) >= tasks.size(); }
};

// A task with a timeout that an executor is running. At the deadline the
// I/O thread reports `timeout` (or a RETRY); the executor then drops the
// late result, and its slot stays busy until the task returns.
struct Running {
    Clock::time_point deadline;
    proto::Task task;  // reply_to set
    bool timed_out = false;
};

// The tasks this worker holds, guarded by `mutex`.
struct HeldTasks {
    std::mutex mutex;
    std::condition_variable wake;  // executors wait here for a batch, or for closing
    // Oldest first. Spent batches are popped by the executors that find
    // them at the front; an executor keeps its batch alive meanwhile.
    std::deque<std::shared_ptr<Dispatched>> queue;
    unsigned idle_executors = 0;  // waiting for a task
    // By run, numbered here: a task retried after its timeout may land on
    // this worker again while its first run goes on, and each run has its
    // own deadline.
    std::map<std::uint64_t, Running> running;
    std::uint64_t runs = 0;            // the last run number given
    std::vector<std::string> retries;  // failed with attempts left: for the I/O thread to send RETRY
    bool closing = false;              // executors end once the queue is drained

    // Pops the spent batches at the front (with `mutex` held).
    void pop_spent() {
        while (!queue.empty() && queue.front()->spent()) queue.pop_front();
    }
};

// The lock-free signals between the executors and the I/O thread.
struct Signals {
    // Written by the executors at each report, read by the I/O thread.
    // finished: tasks reported (results handed on) that the I/O thread has
    // not counted yet.
    std::atomic<std::uint32_t> finished{0};
    RunMeter meter;
    // Written by the I/O thread, read by the executors at every task: a cache line of their own.
    // wake_after: an executor's report wakes the I/O thread only once
    // `finished` reaches it (enough for a batch of credits, or 1 while
    // stopping), not once a task.
    alignas(64) std::atomic<std::uint32_t> wake_after{1};
    std::atomic<std::int64_t> early_after_ns{0};  // CreditPolicy::early_after_ns(), published
    // The broker holds fewer start credits than there are slots: an executor
    // going idle after a long task wakes the I/O thread, to grant one.
    std::atomic<bool> starts_low{true};
    std::atomic<bool> abort{false};  // stop at once: executors leave their tasks and results
};

// What one executor runs, for the I/O thread (early credits, RETURN).
// Written by its executor only; a cache line of its own.
struct alignas(64) Slot {
    std::atomic<std::int64_t> started_ns{0};  // its task's start, ns since the clock's epoch; 0: idle
    std::mutex name_mutex;
    std::string name;  // guarded by name_mutex: its task's name, set when it changes
};

// Everything the I/O thread and the executors share.
struct SharedState {
    SharedState(unsigned slot_count, Clock::duration window)
        : slots(std::make_unique<Slot[]>(slot_count)), reach(window) {}

    HeldTasks held;                 // under held.mutex
    Signals signals;                // atomics
    std::unique_ptr<Slot[]> slots;  // by executor
    TaskTimes times;                // thread-safe
    SinkReachability reach;         // thread-safe
};

}  // namespace drover
