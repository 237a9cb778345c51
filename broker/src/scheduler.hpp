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

#include "drover/common/clock.hpp"
#include "drover/common/protocol.hpp"
#include "ring_queue.hpp"
#include "slot_index.hpp"

namespace drover {

struct SchedulerLimits {
    // Tasks queued, running (dispatched, not yet settled) or waiting out a
    // retry back-off, before SUBMIT is answered queue_full.
    std::size_t max_queued = 1'000'000;
    Millis heartbeat{1000};
    int liveness = 3;           // missed heartbeats before a worker is declared dead
    Millis retry_base{100};     // back-off before the first retry; doubles each attempt
    Millis retry_max{10000};    // back-off cap
    int report_tries = 8;       // sends of a broker-made outcome before giving up on its sink
    int unsettled_windows = 4;  // liveness windows a task may stay unsettled once its worker holds none
    // Every task kept, those whose outcome only waits for its SETTLE too,
    // before queue_full; 0: 2 x max_queued. The bound on the broker's tasks.
    std::size_t max_held = 0;
    // Task names that no task and no worker uses, still remembered as
    // announced by a worker (so that their tasks wait for one rather than
    // end as unknown); the oldest beyond it are forgotten.
    std::size_t remembered_names = 10'000;
};

// An outcome the broker itself must report to a sink (lost, cancelled).
struct FinalOutcome {
    std::string reply_to;
    proto::Outcome outcome;
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
    Scheduler(const Scheduler&) = delete;  // its index points into its own slots
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
    [[nodiscard]] bool knows(const std::string& identity) const { return workers_.count(identity) != 0; }

    // The worker is gone (BYE, death, unreachable): its unsettled tasks go
    // back to the front of their queues. If it `died`, the tasks it may have
    // been running (the first `slots` it holds, since a worker starts tasks
    // in dispatch order) count a death; prefetched ones do not. A task that
    // has died max_attempts times is lost. `finished` (a BYE's ids) timed
    // out on their last attempt and the worker sent their `timeout`: they
    // end `timeout` here too, sent until settled, as that one may be lost.
    std::vector<FinalOutcome> remove_worker(const std::string& identity, bool died = true,
                                            const std::vector<std::string>& finished = {});
    // Same, for a worker named by its HELLO id (a supervisor's LOST report).
    std::vector<FinalOutcome> remove_worker_by_id(const std::string& worker_id);

    // Workers silent for liveness x heartbeat are removed; returns their identities.
    std::vector<std::string> expired(Clock::time_point now) const;

    // The broker itself was stopped for `stall` (drover/stall.hpp) and read
    // nothing meanwhile: each worker's last-seen time and the schedules
    // measured against its peers' answers (unsettled tasks of an idle
    // worker, resends of broker-made outcomes) move forward by it, a
    // last-seen time never past `now`.
    void stalled(Clock::duration stall, Clock::time_point now);

    // Matches queued tasks with worker credits: each task goes to the least
    // recently served worker that can run it. One batch per worker. A task
    // whose name runs 1 ms or more, or was never timed, takes only a start
    // credit (a free slot), or a credit of a worker that holds fewer tasks
    // than it has slots: never a prefetch credit, so that it never waits
    // behind others at one worker while another has a slot free. A shorter
    // one takes any credit while the expected work queued on a worker's
    // prefetch stays under 16 ms a slot.
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
    // attempt left ends as lost. Returns nullopt for an unknown identity
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
    // `first_refused` (if given).
    std::size_t settle(std::string_view producer, const std::vector<std::string>& ids,
                       const std::vector<std::uint64_t>& proofs = {}, std::string* first_refused = nullptr);

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
    // dispatched with that attempt (drover/proof.hpp).
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
    [[nodiscard]] std::size_t task_count() const { return live_; }
    [[nodiscard]] std::size_t queued_count() const { return queued_; }
    // Tasks the max_queued bound counts: queued, running, waiting to retry.
    [[nodiscard]] std::size_t active_count() const { return queued_ + held_total_ + retrying_; }
    [[nodiscard]] bool full() const { return active_count() >= limits_.max_queued; }
    // Task names kept (used by a task or a worker, or remembered).
    [[nodiscard]] std::size_t name_count() const { return name_ids_.size(); }
    // Entries in a name's queue, stale ones (tasks that left it) included.
    [[nodiscard]] std::size_t queue_refs(const std::string& name) const {
        const auto it = name_ids_.find(name);
        return it == name_ids_.end() ? 0 : queues_[it->second].size();
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
    static constexpr std::uint32_t k_none = 0xffffffff;
    enum class State : std::uint8_t { free, queued, held, waiting_retry, ended };

    // One accepted task, in a slot of slots_ (stable: a deque) until settled.
    // Strings shared by many tasks (name, reply_to, producer) are interned.
    // A slot is reused for a later task with gen + 1, so a Ref kept in a
    // queue, a worker's held list or a timer can tell it is stale.
    // A broker-made outcome, kept to send again, and when a SUBMIT of its
    // id again last had it sent.
    struct Report {
        FinalOutcome final;
        Clock::time_point repeated_at{};
    };
    struct Entry {  // 136 bytes: the broker's cost per task with the index's 8 to 32
        std::string id;
        std::string args;
        std::unique_ptr<Report> reported;
        std::uint64_t dispatch_seq = 0;
        std::uint32_t name = 0;         // names_
        std::uint32_t reply_to = 0;     // strings_
        std::uint32_t producer = 0;     // strings_
        std::uint32_t worker = k_none;  // worker_slots_ while held
        std::uint32_t timeout_ms = 0;
        std::uint32_t slot = 0;  // its own index in slots_
        std::uint32_t gen = 0;
        std::uint16_t attempt = 0;  // times dispatched
        std::uint16_t max_attempts = 1;
        std::uint16_t deaths = 0;
        std::uint16_t report_sends = 0;
        char secret[proto::k_task_secret_bytes] = {};  // from SUBMIT: tokens derive from it
        State state = State::free;
        bool detached = false;
        bool retry_on_error = false;
        bool on_start = false;  // held on one of its worker's start credits
    };
    static std::string_view secret_of(const Entry& e) { return {e.secret, sizeof e.secret}; }
    bool owned_by(const Entry& e, std::string_view producer) const;
    struct Ref {
        std::uint32_t slot, gen;
    };
    struct HeldRef {
        std::uint32_t slot, gen;
        std::uint64_t seq;
    };
    struct WorkerState {
        std::string identity;
        proto::Hello hello;
        std::vector<std::uint32_t> names;  // hello.tasks, interned (each holds a reference)
        std::uint32_t credits = 0;
        std::uint32_t starts = 0;  // of the credits, start credits (at most credits)
        // Tasks dispatched on plain credits (prefetch) whose credit has not
        // come back yet, and their expected run time: the work queued there.
        std::uint32_t prefetched = 0;
        std::uint64_t prefetched_ns = 0;
        // In dispatch order (a worker starts tasks in that order); entries
        // whose task moved on are skipped and trimmed lazily.
        std::deque<HeldRef> held;
        std::size_t held_count = 0;
        std::uint64_t done = 0;
        std::uint64_t served_seq = 0;
        Clock::time_point last_seen{};
        // Since when the tasks dispatched to it up to idle_upto (a
        // dispatch_seq) are finished by its word, though not all settled;
        // idle_upto 0: none suspect. report_seq: dispatch_seq_ when its last
        // HEARTBEAT with a held count arrived.
        Clock::time_point idle_since{};
        std::uint64_t idle_upto = 0;
        std::uint64_t report_seq = 0;
    };
    // Strings with reference counts (reply_to and producer endpoints).
    class Interned {
    public:
        std::uint32_t acquire(std::string_view s);
        void acquire_again(std::uint32_t index) { ++items_[index].second; }
        // The index of `s` if it is held, else k_none (never an index).
        [[nodiscard]] std::uint32_t find(std::string_view s) const {
            const auto it = index_.find(s);
            return it == index_.end() ? k_none : it->second;
        }
        void release(std::uint32_t index);
        [[nodiscard]] const std::string& operator[](std::uint32_t index) const { return items_[index].first; }

    private:
        std::deque<std::pair<std::string, std::size_t>> items_;  // a deque: index_ views its strings
        std::unordered_map<std::string_view, std::uint32_t> index_;
        std::vector<std::uint32_t> free_;
    };

    Entry* find(std::string_view id);
    Entry* find(std::string_view id, std::uint32_t id_hash);  // id_hash: index_.hash(id)
    // The index hashes of a batch's ids, each computed once, for the look-ups
    // and the prefetches k_prefetch_ahead ids ahead (scheduler.cpp).
    template <class Ids, class IdOfItem>
    const std::vector<std::uint32_t>& hash_batch(const Ids& items, IdOfItem id_of);
    Entry* live(Ref r) {
        Entry& e = slots_[r.slot];
        return e.gen == r.gen && e.state != State::free ? &e : nullptr;
    }
    // The strings a batch of SUBMIT tasks shares, looked up once per change.
    struct SubmitContext {
        std::uint32_t producer = 0;
        const std::string* reply_to = nullptr;
        std::uint32_t reply_to_id = 0;
        const std::string* name = nullptr;
        std::uint32_t name_id = 0;
        std::string checked_name;  // the name name_known was looked up for
        bool name_known = false;   // some worker has announced checked_name
    };
    Entry& new_entry(proto::Task&& t, std::string_view reply_to, SubmitContext& ctx, std::uint32_t id_hash);
    void free_entry(Entry& e);
    void free_entry(Entry& e, std::uint32_t id_hash);
    WorkerState* worker(const std::string& identity);
    // A HeldRef still names the task its worker holds.
    bool holds(std::uint32_t wslot, const HeldRef& h) const;
    // The task leaves its worker's hands (done, retried, ended, requeued).
    void release_held(Entry& e);
    // A task name's id, with one more reference (a task or a worker uses it).
    std::uint32_t acquire_name(const std::string& name);
    // One reference less: a name nobody uses is freed, or remembered if a
    // worker announced it (the oldest of more than remembered_names freed).
    void release_name(std::uint32_t name);
    void free_name(std::uint32_t name);
    void unlink_idle(std::uint32_t name);
    // With no task held: renumbers the names so that the tables of names
    // keep no room for freed ones.
    void compact_names();
    // Puts a task's Ref in its name's queue; drops the stale Refs first once
    // they are most of it (tasks settled or cancelled while queued).
    void push_queued(const Entry& e, bool front);
    void leave_retry(Entry& e);
    std::vector<FinalOutcome> remove_worker_slot(std::uint32_t wslot, bool died,
                                                 const std::vector<std::string>& finished);

    // The one place that keeps state, queued_ and queued_by_name_ in step.
    void mark_queued(Entry& e);
    void unmark_queued(Entry& e);
    void enqueue_front(Entry& e);
    FinalOutcome final_outcome(const Entry& e, proto::Status status, std::string error) const;
    // Ends a task with a broker-made outcome: returns it for sending and keeps
    // it for sending again until the sink settles it.
    FinalOutcome end_task(Entry& e, proto::Status status, std::string error);
    [[nodiscard]] Millis report_interval(std::uint32_t sends) const;

    SchedulerLimits limits_;
    std::deque<Entry> slots_;
    std::vector<std::uint32_t> free_slots_;
    struct IdOf {
        const std::deque<Entry>* slots;
        std::string_view operator()(std::uint32_t slot) const { return (*slots)[slot].id; }
    };
    SlotIndex<IdOf> index_{IdOf{&slots_}};     // id -> slot
    std::vector<std::uint32_t> batch_hashes_;  // hash_batch's
    std::size_t live_ = 0;
    Interned strings_;
    // Task names by id, reference-counted (tasks and workers that use one):
    // a name nobody uses is freed, or kept in the idle list (least recently
    // used first) if a worker announced it. Freed ids are reused.
    std::deque<std::string> names_;  // a deque: pointers to them stay valid
    std::unordered_map<std::string, std::uint32_t> name_ids_;
    std::vector<std::uint32_t> name_refs_;     // by name id
    std::vector<char> known_names_;            // by name id: announced by a worker
    std::vector<RingQueue<Ref>> queues_;       // by name id; stale refs skipped lazily
    std::vector<std::size_t> queued_by_name_;  // by name id
    std::vector<std::uint64_t> run_ns_;        // by name id: its expected run time, from workers (0: not timed)
    std::vector<std::uint32_t> free_names_;
    struct IdleLink {
        std::uint32_t prev = k_none, next = k_none;
        bool idle = false;
    };
    std::vector<IdleLink> idle_links_;  // by name id
    std::uint32_t idle_head_ = k_none, idle_tail_ = k_none;
    std::size_t idle_names_ = 0;
    std::size_t queued_ = 0;
    std::size_t held_total_ = 0;  // tasks in workers' hands (state held)
    std::size_t retrying_ = 0;    // tasks waiting out a retry back-off
    std::vector<WorkerState> worker_slots_;
    std::unordered_map<std::string, std::uint32_t> workers_;  // identity -> worker slot
    std::vector<std::uint32_t> free_worker_slots_;
    using Due = std::pair<Clock::time_point, std::uint64_t>;  // (when, slot << 32 | gen)
    using DueQueue = std::priority_queue<Due, std::vector<Due>, std::greater<>>;
    DueQueue retries_;  // retries waiting out their back-off, earliest first
    // Broker-made outcomes: just sent (not yet scheduled), then by next send.
    std::vector<Ref> reported_now_;
    DueQueue reports_;
    std::uint64_t serve_seq_ = 0;
    std::uint64_t dispatch_seq_ = 0;
    Totals totals_;
};

}  // namespace drover
