// The broker's bookkeeping, without sockets: tasks, queues, workers, credits.
#pragma once

// Scheduler owns every accepted task until its outcome is settled. It is a
// plain single-threaded class: the broker's poll loop decodes a message and
// calls one method, passing `now`; the methods return what must be sent.
// Tests drive it with an injected clock.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "drover/net.hpp"
#include "drover/protocol.hpp"

namespace drover {

struct SchedulerLimits {
    std::size_t max_queued = 1'000'000;  // tasks held (queued or running) before queue_full
    Millis heartbeat{1000};
    int liveness = 3;  // missed heartbeats before a worker is declared dead
    Millis retry_base{100};     // back-off before the first retry; doubles each attempt
    Millis retry_max{10000};    // back-off cap
    int report_tries = 8;       // sends of a broker-made outcome before giving up on its sink
};

// An outcome the broker itself must report to a sink (lost, cancelled).
struct FinalOutcome {
    std::string reply_to;
    proto::Outcome outcome;
};

class Scheduler {
public:
    struct Submitted {
        std::vector<std::string> accepted;
        std::map<std::string, std::vector<std::string>> rejected;  // reason -> ids
        std::vector<FinalOutcome> finals;  // accepted, but ended at once (unknown task)
    };
    struct Batch {
        std::string worker;  // routing identity
        std::vector<proto::Task> tasks;
    };

    explicit Scheduler(SchedulerLimits limits = {}) : limits_(limits) {}

    // Accepts or rejects each task. A task id already held is accepted again
    // without being queued twice (a producer resends after a broker restart).
    // A task whose name no worker has ever announced, while workers are
    // live, ends at once with an `error` outcome ("unknown task"); with no
    // live worker at all it waits, since the worker that runs it may be
    // on its way.
    Submitted submit(const std::string& producer, std::vector<proto::Task>&& tasks, Clock::time_point now);

    // Registers (or re-registers) a worker. Tasks held under an earlier
    // registration of the same identity go back to the queue.
    std::vector<FinalOutcome> hello(const std::string& identity, proto::Hello hello, Clock::time_point now);

    // Returns false for an identity that never said HELLO (send it RESET).
    [[nodiscard]] bool ready(const std::string& identity, std::uint32_t credits, Clock::time_point now);
    [[nodiscard]] bool seen(const std::string& identity, Clock::time_point now);
    [[nodiscard]] bool knows(const std::string& identity) const { return workers_.count(identity) != 0; }

    // The worker is gone (BYE, death, unreachable): its unsettled tasks go
    // back to the front of their queues. If it `died`, the tasks it may have
    // been running (the first `slots` it holds, since a worker starts tasks
    // in dispatch order) count a death; prefetched ones do not. A task that
    // has died max_attempts times is lost. `finished` (a BYE's ids) already
    // have their final outcome at their sinks: they only wait for SETTLE.
    std::vector<FinalOutcome> remove_worker(const std::string& identity, bool died = true,
                                            const std::vector<std::string>& finished = {});
    // Same, for a worker named by its HELLO id (a supervisor's LOST report).
    std::vector<FinalOutcome> remove_worker_by_id(const std::string& worker_id);

    // Workers silent for liveness x heartbeat are removed; returns their identities.
    std::vector<std::string> expired(Clock::time_point now) const;

    // Matches queued tasks with worker credits: each task goes to the least
    // recently served worker that can run it. One batch per worker.
    std::vector<Batch> dispatch();

    // A DISPATCH could not be sent: its tasks go back to the front of the queue.
    void undo_dispatch(const Batch& batch);

    // The worker failed these tasks (RETRY): each is queued again after a
    // back-off of retry_base x 2^(attempt-1), at most retry_max; one with no
    // attempt left ends as lost. Returns nullopt for an unknown identity
    // (send it RESET), else the outcomes of the tasks that ended.
    [[nodiscard]] std::optional<std::vector<FinalOutcome>> retry(const std::string& identity,
                                                                 const std::vector<std::string>& ids,
                                                                 Clock::time_point now);
    // Queues the retries whose back-off is over; returns when the next one is due.
    Clock::time_point release_retries(Clock::time_point now);

    // Outcomes the broker made (lost, cancelled, unknown task) whose sink has
    // not settled them yet, due to be sent again: every liveness window,
    // doubling, at most report_tries sends in all.
    std::vector<FinalOutcome> reports_due(Clock::time_point now);

    // The sink holds these outcomes: forget the tasks.
    void settle(const std::vector<std::string>& ids);

    // A producer went silent: its tasks are cancelled (their sink is gone
    // with it), except detached ones, whose sink is standalone. Running
    // ones finish on their workers; the broker forgets them.
    std::vector<FinalOutcome> producer_gone(const std::string& producer);

    // Cancels queued tasks (running ones finish). Returns their outcomes.
    std::vector<FinalOutcome> cancel(const std::vector<std::string>& ids);

    [[nodiscard]] std::vector<std::string> worker_identities() const;
    [[nodiscard]] std::size_t worker_count() const { return workers_.size(); }
    [[nodiscard]] std::size_t task_count() const { return tasks_.size(); }
    [[nodiscard]] std::size_t queued_count() const { return queued_; }
    [[nodiscard]] std::uint32_t credits_of(const std::string& identity) const;
    [[nodiscard]] std::size_t held_by(const std::string& identity) const;

    // Queues, workers and totals, as STATUS reports them.
    [[nodiscard]] nlohmann::json status(Clock::time_point now) const;

    struct Totals {
        std::uint64_t accepted = 0, rejected = 0, dispatched = 0, settled = 0, redispatched = 0, retried = 0,
                      lost = 0, cancelled = 0, timed_out = 0, workers_expired = 0, reports_resent = 0,
                      reports_abandoned = 0;
    };
    [[nodiscard]] const Totals& totals() const { return totals_; }
    Totals& totals() { return totals_; }

private:
    // A task is in one state: queued; held by `worker`; waiting out a retry
    // back-off (`retry_at`); or ended and waiting for SETTLE (`reported`
    // when the broker made the outcome and may need to send it again;
    // neither when the worker sent it).
    struct Entry {
        proto::Task task;  // attempt = times dispatched
        std::string producer;
        std::string worker;  // identity holding it; empty otherwise
        std::uint32_t deaths = 0;
        bool queued = false;
        bool waiting_retry = false;
        bool ended = false;  // has its final outcome; waits for SETTLE
        std::unique_ptr<FinalOutcome> reported;
        std::uint32_t report_sends = 0;
    };
    struct WorkerState {
        proto::Hello hello;
        std::uint32_t credits = 0;
        // id -> dispatch sequence; a worker starts tasks in dispatch order.
        std::unordered_map<std::string, std::uint64_t> held;
        std::uint64_t done = 0;
        std::uint64_t served_seq = 0;
        Clock::time_point last_seen{};
    };

    // The one place that keeps e.queued, queued_ and queued_by_name_ in step.
    void mark_queued(Entry& e);
    void unmark_queued(Entry& e);
    void enqueue_front(Entry& e);
    FinalOutcome final_outcome(const Entry& e, proto::Status status, std::string error) const;
    // Ends a task with a broker-made outcome: returns it for sending and keeps
    // it for sending again until the sink settles it.
    FinalOutcome end_task(Entry& e, proto::Status status, std::string error);
    [[nodiscard]] Millis report_interval(std::uint32_t sends) const;

    SchedulerLimits limits_;
    std::unordered_map<std::string, Entry> tasks_;
    std::unordered_map<std::string, std::deque<std::string>> queues_;  // task name -> ids
    std::unordered_map<std::string, WorkerState> workers_;
    std::unordered_set<std::string> known_names_;  // announced by any worker since start
    std::size_t queued_ = 0;
    std::unordered_map<std::string, std::size_t> queued_by_name_;
    // (due, id) of retries waiting out their back-off, earliest first.
    using Due = std::pair<Clock::time_point, std::string>;
    using DueQueue = std::priority_queue<Due, std::vector<Due>, std::greater<>>;
    DueQueue retries_;
    // Broker-made outcomes: just sent (not yet scheduled), then by next send.
    std::vector<std::string> reported_now_;
    DueQueue reports_;
    std::uint64_t serve_seq_ = 0;
    std::uint64_t dispatch_seq_ = 0;
    Totals totals_;
};

}  // namespace drover
