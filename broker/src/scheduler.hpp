// The broker's bookkeeping, without sockets: tasks, queues, workers, credits.
#pragma once

// Scheduler owns every accepted task until its outcome is settled. It is a
// plain single-threaded class: the broker's poll loop decodes a message and
// calls one method, passing `now`; the methods return what must be sent.
// Tests drive it with an injected clock. Its parts, each in its own file:
// the task table (task_table.hpp), the task names and their queues
// (name_table.hpp), the worker table (worker_table.hpp), the dispatch
// policy (dispatch_policy.hpp) and the retry policy
// (drover/common/retry.hpp); its methods are grouped by what they serve:
// submitting and settling (scheduler.cpp), workers (scheduler_workers.cpp),
// dispatching (scheduler_dispatch.cpp), retries and broker-made outcomes
// (scheduler_outcomes.cpp), STATUS (scheduler_status.cpp).

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dispatch_policy.hpp"
#include "drover/common/clock.hpp"
#include "drover/common/protocol.hpp"
#include "drover/common/retry.hpp"
#include "interned.hpp"
#include "journal.hpp"
#include "name_table.hpp"
#include "ring_queue.hpp"
#include "task_table.hpp"
#include "worker_table.hpp"

namespace drover {

// Task ids grouped by the producer that submitted them.
using IdsByProducer = std::unordered_map<std::string, std::vector<std::string>>;

struct SchedulerLimits {
    // Tasks queued, running (dispatched, not yet settled) or waiting out a
    // retry back-off, before SUBMIT is answered queue_full.
    std::size_t max_queued = 1'000'000;
    Millis heartbeat{1000};
    int liveness = 3;                          // missed heartbeats before a worker is declared dead
    Millis retry_base = k_retry_backoff_base;  // back-off before the first retry; doubles each attempt
    Millis retry_max = k_retry_backoff_max;    // back-off cap
    int report_tries = 8;                      // sends of a broker-made outcome before giving up on its sink
    int unsettled_windows = 4;                 // liveness windows a task may stay unsettled once its worker holds none
    // Every task kept, those whose outcome only waits for its SETTLE too,
    // before queue_full; 0: 2 x max_queued. The bound on the broker's tasks.
    std::size_t max_held = 0;
    // Task names that no task and no worker uses, still remembered as
    // announced by a worker (so that their tasks wait for one rather than
    // end as unknown); the oldest beyond it are forgotten.
    std::size_t remembered_names = 10'000;
};

class Scheduler {
public:
    struct Submitted {
        std::size_t accepted = 0;
        // The accepted tasks whose outcome goes to another sink than their
        // producer's (detached): ACCEPTED ends the producer's part of them.
        // The others are acknowledged by their outcome alone.
        std::vector<std::string> acknowledged;
        std::map<std::string, std::vector<std::string>> rejected;  // reason -> ids
        std::vector<FinalOutcome> finals;                          // accepted, but ended at once (unknown task)
    };
    struct Batch {
        std::string worker;                 // routing identity
        std::vector<proto::TaskRef> tasks;  // valid until the next call that changes the Scheduler
        std::uint64_t accepts = 0;          // the largest message the worker accepts, from its HELLO (0: not said)
    };

    explicit Scheduler(SchedulerLimits limits = {}) : limits_(limits) {
        if (limits_.max_held == 0)
            limits_.max_held = limits_.max_queued > SIZE_MAX / 2 ? SIZE_MAX : 2 * limits_.max_queued;
    }
    Scheduler(const Scheduler&) = delete;  // its task table's index points into its own slots
    Scheduler& operator=(const Scheduler&) = delete;

    // Accepts or rejects each task. A malformed task (its `problem` set by
    // decode_submit) is rejected alone, "invalid: " and the problem. A task
    // id already held with the same secret is accepted again without being
    // queued twice (a producer resends after a broker restart); with another
    // secret it is rejected as "duplicate_id" (another producer's id).
    // A task whose name no worker has announced (one that is live, or one
    // of the remembered_names last announced), while workers are live, ends
    // at once with an `error` outcome ("unknown task"); with no live worker
    // at all it waits, since the worker that runs it may be on its way.
    // A task past the bounds (full(), max_held) is rejected "queue_full".
    // An id submitted again whose task has a broker-made outcome gets that
    // outcome again (in `finals`), at most once a liveness window.
    // A task with no reply_to of its own takes `batch_reply_to` (its SUBMIT's).
    Submitted submit(const std::string& producer, std::vector<proto::Task>&& tasks, Clock::time_point now,
                     std::string_view batch_reply_to = {});

    // Journals every change recovery needs (journal.hpp) from now on:
    // accepted tasks (a task the journal cannot take is rejected
    // "journal_unavailable"), deaths and retries, broker-made outcomes and
    // every task freed. nullptr (the default): tasks live in memory only.
    // The journal must outlive the Scheduler or be unset first.
    // Keys restore() dropped (an id restored twice: the later task wins) are
    // settled in it here.
    void set_journal(Journal* journal);
    // Recovery: takes back a task the journal held unsettled (Journal::open's
    // visitor), without journaling it again. Queued again, its attempts and
    // deaths kept; one with a broker-made outcome is ended with it, to be
    // sent until settled: that outcome is returned, to send now.
    std::optional<FinalOutcome> restore(std::uint64_t key, const JournalState& state);
    // Compaction: rewrites every task whose journal key is below `below`
    // into the journal (Journal::relocate) and keeps its new key.
    void relocate_journal(std::uint64_t below);

    // Registers (or re-registers) a worker. Tasks held under an earlier
    // registration of the same identity, or of the same HELLO id over
    // another connection, go back to the queue unblamed. With
    // `same_process_keeps_tasks` (the worker reconnected because the broker
    // itself was stopped), those of an earlier registration of the same
    // process (HELLO id, host, pid and restarts) stay its tasks instead: it
    // kept running them, so they need not run again.
    std::vector<FinalOutcome> hello(const std::string& identity, proto::Hello hello, Clock::time_point now,
                                    bool same_process_keeps_tasks = false);

    // Returns false for an identity that never said HELLO (send it RESET).
    // The READY's start credits are the worker's free slots (or slots about
    // to free); its run_ns update the run time expected of each named task
    // that this worker runs (others are ignored).
    [[nodiscard]] bool ready(const std::string& identity, const proto::Ready& r, Clock::time_point now);
    [[nodiscard]] bool ready(const std::string& identity, std::uint32_t credits, Clock::time_point now) {
        return ready(identity, proto::Ready{credits, 0, {}}, now);
    }
    [[nodiscard]] bool seen(const std::string& identity, Clock::time_point now);
    [[nodiscard]] bool knows(const std::string& identity) const { return workers_.contains(identity); }

    // The worker is gone (BYE, death, unreachable): its unsettled tasks go
    // back to the front of their queues. If it `died`, the tasks it may have
    // been running (the first `slots` it holds, since a worker starts tasks
    // in dispatch order) count a death; prefetched ones do not. A task that
    // has died max_attempts times is lost (next_attempt, drover/common/retry.hpp).
    // `finished` (a BYE's ids) timed
    // out on their last attempt and the worker sent their `timeout`: they
    // end `timeout` here too, sent until settled, as that one may be lost.
    std::vector<FinalOutcome> remove_worker(const std::string& identity, bool died = true,
                                            const std::vector<std::string>& finished = {});
    // Same, for a worker named by its HELLO id (a supervisor's LOST report)
    // whose HELLO gave this `key` as its lost_key. Returns nullopt, removing
    // nothing, for a worker without a lost_key or with another one; an
    // empty list for an id no worker has (gone already).
    std::optional<std::vector<FinalOutcome>> remove_lost_worker(const std::string& worker_id, std::string_view key);

    // Workers silent for liveness x heartbeat are removed; returns their identities.
    std::vector<std::string> expired(Clock::time_point now) const;

    // The broker itself was stopped for `stall` (internal/stall.hpp) and read
    // nothing meanwhile: each worker's last-seen time and the schedules
    // measured against its peers' answers (unsettled tasks of an idle
    // worker, resends of broker-made outcomes) move forward by it, a
    // last-seen time never past `now`.
    void stalled(Clock::duration stall, Clock::time_point now);

    // Matches queued tasks with worker credits: each task goes to the least
    // recently served worker that can run it. One batch per worker. A task
    // whose name runs k_long_task_ns or more, or was never timed, takes only
    // a start credit (a free slot), or a credit of a worker that holds fewer
    // tasks than it has slots: never a prefetch credit, so that it never
    // waits behind others at one worker while another has a slot free. A
    // shorter one takes any credit while the expected work queued on a
    // worker's prefetch stays under k_prefetched_work_ns a slot
    // (dispatch_policy.hpp).
    std::vector<Batch> dispatch();

    // A DISPATCH could not be sent: its tasks go back to the front of the queue.
    void undo_dispatch(const Batch& batch);
    // A task dispatched to a worker that cannot take it (larger than the
    // message its HELLO said it accepts): it ends with an `error` outcome
    // saying why, and the worker keeps the credit. Nullopt for a task not
    // held by that worker.
    std::optional<FinalOutcome> refuse_dispatched(const std::string& identity, std::string_view id, std::string error);

    // The worker failed these tasks (RETRY): each is queued again after a
    // back-off of retry_base x 2^(attempt-1), at most retry_max; one with no
    // attempt left ends as lost (next_attempt, drover/common/retry.hpp). Returns nullopt for an unknown identity
    // (send it RESET), else the outcomes of the tasks that ended.
    [[nodiscard]] std::optional<std::vector<FinalOutcome>> retry(const std::string& identity,
                                                                 const std::vector<std::string>& ids,
                                                                 Clock::time_point now);
    // A worker's HEARTBEAT said it holds `held` tasks (received, outcome not
    // yet sent). When it says none, the tasks dispatched to it before its
    // previous report (so surely received) are finished: those still
    // unsettled unsettled_windows liveness windows later had their outcome
    // lost on the way to their sink (a connection reset drops what it
    // carried). Those with an attempt left run again, as after RETRY; the
    // others wait on (their outcome may be slow, not lost). Returns nullopt
    // for an unknown identity, else the outcomes of tasks that ended (none).
    [[nodiscard]] std::optional<std::vector<FinalOutcome>> worker_holds(const std::string& identity, std::uint32_t held,
                                                                        Clock::time_point now);
    // The worker gives back tasks it held and never started (RETURN): each
    // still held by it goes back to the front of its queue, its attempt not
    // counted. Returns false for an unknown identity (send it RESET).
    [[nodiscard]] bool give_back(const std::string& identity, const std::vector<std::string>& ids,
                                 Clock::time_point now);
    // Queues the retries whose back-off is over; returns when the next one is due.
    Clock::time_point release_retries(Clock::time_point now);

    // Outcomes the broker made (lost, cancelled, unknown task) whose sink has
    // not settled them yet, due to be sent again: every liveness window,
    // doubling, at most report_tries sends in all.
    std::vector<FinalOutcome> reports_due(Clock::time_point now);

    // The sink holds these outcomes: forget the tasks. Without `proofs`
    // only the tasks `producer` submitted are forgotten; with them (one per
    // id, a standalone sink's), those whose settle_proof matches. Returns
    // how many held ids it refused (they stay), and the first of them in
    // `first_refused` (if given). The ids of detached tasks it forgot are
    // added to `detached` (if given) under their producer.
    std::size_t settle(std::string_view producer, const std::vector<std::string>& ids,
                       const std::vector<std::uint64_t>& proofs = {}, std::string* first_refused = nullptr,
                       IdsByProducer* detached = nullptr);

    // A producer went silent: its tasks are cancelled (their sink is gone
    // with it), except detached ones, whose sink is standalone. Running
    // ones finish on their workers; the broker forgets them.
    std::vector<FinalOutcome> producer_gone(const std::string& producer);

    // Cancels queued tasks of `producer` (running ones finish; another
    // producer's are left, counted in `refused`). Returns their outcomes.
    std::vector<FinalOutcome> cancel(std::string_view producer, const std::vector<std::string>& ids,
                                     std::size_t* refused = nullptr);

    // Whether a RESULT from the worker at `identity` may end its task: the
    // worker is registered, the task is held here, and the token is the one
    // dispatched with that attempt (internal/proof.hpp).
    [[nodiscard]] bool genuine_result(const std::string& identity, const proto::Outcome& o);

    // Where a live task's outcome goes: its producer (a frontend identity)
    // and its sink. Views valid until the task is freed.
    struct Route {
        std::string_view producer, reply_to;
        bool detached;
    };
    [[nodiscard]] std::optional<Route> route_of(std::string_view id);

    // With no task held, gives the memory of past tasks back (their slots,
    // index and queues keep the capacity of the largest backlog otherwise,
    // and the tables of names room for as many names as were ever used at once).
    // Returns whether there was anything to give back.
    bool compact();

    [[nodiscard]] std::vector<std::string> worker_identities() const;
    [[nodiscard]] std::size_t worker_count() const { return workers_.size(); }
    [[nodiscard]] std::size_t task_count() const { return tasks_.size(); }
    // Detached tasks held: a scan of every task (for a stop, not a hot path).
    [[nodiscard]] std::size_t detached_count() const;
    [[nodiscard]] std::size_t queued_count() const { return queued_; }
    // Tasks the max_queued bound counts: queued, running, waiting to retry.
    [[nodiscard]] std::size_t active_count() const { return queued_ + held_total_ + retrying_; }
    [[nodiscard]] bool full() const { return active_count() >= limits_.max_queued; }
    // Task names kept (used by a task or a worker, or remembered).
    [[nodiscard]] std::size_t name_count() const { return names_.size(); }
    // Entries in a name's queue, stale ones (tasks that left it) included.
    [[nodiscard]] std::size_t queue_refs(const std::string& name) const {
        const auto id = names_.find(name);
        return id == scheduling::k_none ? 0 : names_.queue(id).size();
    }
    [[nodiscard]] std::uint32_t credits_of(const std::string& identity) const;
    [[nodiscard]] std::size_t held_by(const std::string& identity) const;
    // The worker's HELLO id and host ("" if unknown), for logs.
    [[nodiscard]] std::string describe_worker(const std::string& identity) const;

    // Queues, workers and totals, as STATUS reports them.
    [[nodiscard]] nlohmann::json status(Clock::time_point now) const;

    struct Totals {
        std::uint64_t accepted = 0, rejected = 0, dispatched = 0, settled = 0, redispatched = 0, retried = 0, lost = 0,
                      cancelled = 0, timed_out = 0, workers_expired = 0, reports_resent = 0, reports_abandoned = 0,
                      results_forwarded = 0,
                      dispatch_batches = 0,  // DISPATCH messages: dispatched / this is the mean batch
            recovered = 0,                   // unsettled tasks run again because their worker held none (worker_holds)
            too_large = 0,                   // tasks ended because the worker given them accepts no message that big
            returned = 0;                    // tasks workers gave back unstarted (RETURN)
    };
    [[nodiscard]] const Totals& totals() const { return totals_; }
    Totals& totals() { return totals_; }

private:
    using TaskEntry = scheduling::TaskEntry;
    using TaskState = scheduling::TaskState;
    using SlotRef = scheduling::SlotRef;
    using HeldRef = scheduling::HeldRef;
    using WorkerState = scheduling::WorkerState;
    using Due = std::pair<Clock::time_point, std::uint64_t>;  // (when, slot << 32 | gen)
    using DueQueue = std::priority_queue<Due, std::vector<Due>, std::greater<>>;

    // Submitting (scheduler.cpp). The strings a batch of SUBMIT tasks
    // shares, looked up once per change.
    struct SubmitContext {
        std::uint32_t producer = 0;
        const std::string* reply_to = nullptr;
        std::uint32_t reply_to_id = 0;
        const std::string* name = nullptr;
        std::uint32_t name_id = 0;
        std::string checked_name;  // the name name_known was looked up for
        bool name_known = false;   // some worker has announced checked_name
    };
    // A task whose id is new: queued, ended at once (unknown name), or rejected.
    void submit_new(proto::Task&& t, std::string_view reply_to, SubmitContext& ctx, std::uint32_t id_hash,
                    Submitted& out);
    // A task whose id is held already: the same task again, or another's.
    void submit_again(TaskEntry& known, proto::Task& t, const std::string& producer, Clock::time_point now,
                      Submitted& out);
    void reject(Submitted& out, std::string reason, std::string& id);
    // Journals `t`'s acceptance; its key, or 0 (and `t` rejected) when the
    // journal cannot take it. Only called with a journal set.
    std::uint64_t journal_accepted(proto::Task& t, std::string_view reply_to, const SubmitContext& ctx, Submitted& out);
    // A task's state as the journal keeps it (views into `e` and the tables).
    [[nodiscard]] JournalState journal_state(const TaskEntry& e) const;
    TaskEntry& new_entry(proto::Task&& t, std::string_view reply_to, SubmitContext& ctx, std::uint32_t id_hash);
    void free_entry(TaskEntry& e) { free_entry(e, tasks_.hash(e.id)); }
    void free_entry(TaskEntry& e, std::uint32_t id_hash);
    [[nodiscard]] bool owned_by(const TaskEntry& e, std::string_view producer) const {
        return strings_[e.producer] == producer;
    }

    // A task's state changes (scheduler.cpp). These keep state, queued_,
    // held_total_, retrying_ and the names' queued counts in step.
    void mark_queued(TaskEntry& e) {
        e.state = TaskState::queued;
        ++queued_;
        names_.count_queued(e.name);
    }
    void unmark_queued(TaskEntry& e) {
        e.state = TaskState::ended;
        --queued_;
        names_.uncount_queued(e.name);
    }
    void leave_retry(TaskEntry& e) {
        if (e.state != TaskState::waiting_retry) return;
        --retrying_;
        e.state = TaskState::ended;
    }
    // The task leaves its worker's hands (done, retried, ended, requeued).
    void release_held(TaskEntry& e);
    // Puts a task's ref in its name's queue; drops the stale refs first once
    // they are most of it (tasks settled or cancelled while queued).
    void push_queued(const TaskEntry& e, bool front);
    void enqueue_front(TaskEntry& e);
    // A HeldRef still names the task its worker holds.
    [[nodiscard]] bool holds(std::uint32_t wslot, const HeldRef& h) const {
        const TaskEntry& e = tasks_[h.slot];
        return e.gen == h.gen && e.state == TaskState::held && e.worker == wslot && e.dispatch_seq == h.seq;
    }
    // With no task held: renumbers the names so that their tables keep no
    // room for freed ones. Returns whether any name was freed.
    bool compact_names();

    // Workers (scheduler_workers.cpp).
    // Moves up to `keep` tasks `from` holds, in dispatch order, to `to`.
    void hand_over_held(std::uint32_t from, std::uint32_t to, std::size_t keep);
    std::vector<FinalOutcome> remove_worker_slot(std::uint32_t wslot, bool died,
                                                 const std::vector<std::string>& finished);

    // Dispatching (scheduler_dispatch.cpp).
    // Workers with credits, least recently served first.
    [[nodiscard]] std::vector<std::uint32_t> ready_workers() const;
    // Gives worker `wslot` the next queued task it can run, in `out`;
    // false if there is none. `spread`: the first round.
    bool take_one(std::uint32_t wslot, bool spread, std::vector<proto::TaskRef>& out);
    // The first task of `q` still queued, popped; nullptr if none.
    TaskEntry* pop_queued(RingQueue<SlotRef>& q);
    [[nodiscard]] proto::TaskRef dispatched_ref(const TaskEntry& e) const;

    // Outcomes and retries (scheduler_outcomes.cpp).
    FinalOutcome final_outcome(const TaskEntry& e, proto::Status status, std::string error) const;
    // Ends a task with a broker-made outcome: returns it for sending and keeps
    // it for sending again until the sink settles it.
    FinalOutcome end_task(TaskEntry& e, proto::Status status, std::string error);
    [[nodiscard]] Millis report_interval(std::uint32_t sends) const;
    [[nodiscard]] RetryBackoff backoff_policy() const { return RetryBackoff{limits_.retry_base, limits_.retry_max}; }

    SchedulerLimits limits_;
    scheduling::TaskTable tasks_;
    scheduling::Interned strings_;  // tasks' reply_to and producer endpoints
    scheduling::NameTable names_{limits_.remembered_names};
    scheduling::WorkerTable workers_;
    std::size_t queued_ = 0;
    std::size_t held_total_ = 0;  // tasks in workers' hands (state held)
    std::size_t retrying_ = 0;    // tasks waiting out a retry back-off
    DueQueue retries_;            // retries waiting out their back-off, earliest first
    // Broker-made outcomes: just sent (not yet scheduled), then by next send.
    std::vector<SlotRef> reported_now_;
    DueQueue reports_;
    std::uint64_t serve_seq_ = 0;
    std::uint64_t dispatch_seq_ = 0;
    Totals totals_;
    Journal* journal_ = nullptr;
    std::vector<std::uint64_t> dropped_keys_;  // restore(): journal keys to settle once set_journal() is called
};

}  // namespace drover
