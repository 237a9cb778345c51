// The Scheduler's workers: registration, credits, liveness, departure.
#include "scheduler.hpp"

#include <algorithm>

#include "internal/stall.hpp"

namespace drover {

using scheduling::TaskEntry;
using scheduling::TaskState;
using scheduling::WorkerState;

// Joining ---------------------------------------------------------------------

std::vector<FinalOutcome> Scheduler::hello(const std::string& identity, proto::Hello h, Clock::time_point now,
                                           bool same_process_keeps_tasks) {
    std::vector<FinalOutcome> finals;
    if (workers_.contains(identity)) finals = remove_worker(identity, false);
    // The same worker over a new connection (it reconnected): its tasks are
    // still running there, so they go back without counting a death.
    std::vector<std::string> same;
    for (const auto& [other, other_slot] : workers_)
        if (workers_[other_slot].hello.worker == h.worker) same.push_back(other);
    const std::uint32_t wslot = workers_.take_slot();
    for (const auto& other : same) {
        const std::uint32_t oslot = workers_.slot_of(other);
        const auto& earlier = workers_[oslot].hello;
        if (same_process_keeps_tasks && earlier.host == h.host && earlier.pid == h.pid &&
            earlier.restarts == h.restarts)
            hand_over_held(oslot, wslot, h.held);
        auto more = remove_worker(other, false);
        finals.insert(finals.end(), more.begin(), more.end());
    }
    WorkerState& w = workers_[wslot];
    w.identity = identity;
    w.hello = std::move(h);
    w.last_seen = now;
    for (const auto& name : w.hello.tasks) {
        const auto id = names_.acquire(name);
        names_.announce(id);
        w.names.push_back(id);
    }
    workers_.enter(identity, wslot);
    return finals;
}

void Scheduler::hand_over_held(std::uint32_t from, std::uint32_t to, std::size_t keep) {
    // Handed over in dispatch order, so the new registration blames the
    // same tasks should the worker die after all. It received a prefix of
    // them (a DISPATCH on its way when it dropped the old connection is
    // lost) and says how many it still holds; the rest go back to the queue
    // with the old registration. A finished task not yet settled takes the
    // place of one still running there, which then runs twice; a lost one
    // never stays.
    WorkerState& earlier = workers_[from];
    WorkerState& later = workers_[to];
    for (const auto& held : earlier.held) {
        if (keep == 0) break;
        if (!holds(from, held)) continue;
        --keep;
        tasks_[held.slot].worker = to;
        later.held.push_back(held);
        ++later.held_count;
        --earlier.held_count;
    }
}

bool Scheduler::ready(const std::string& identity, const proto::Ready& r, Clock::time_point now) {
    WorkerState* w = workers_.find(identity);
    if (!w) return false;
    w->credited(r.credits, r.starts);
    w->last_seen = now;
    for (const auto& [name, ns] : r.run_ns) {
        const auto id = names_.find(name);
        if (id == scheduling::k_none || std::find(w->names.begin(), w->names.end(), id) == w->names.end())
            continue;  // only names this worker announced
        // The latest report: a worker reports a change of 4x, and a name
        // taken for long (by a RETURN's report) must not stay so for long.
        names_.set_run_ns(id, std::max<std::uint64_t>(1, ns));
    }
    return true;
}

bool Scheduler::seen(const std::string& identity, Clock::time_point now) {
    WorkerState* w = workers_.find(identity);
    if (!w) return false;
    w->last_seen = now;
    return true;
}

// Leaving -----------------------------------------------------------------------

std::vector<FinalOutcome> Scheduler::remove_worker(const std::string& identity, bool died,
                                                   const std::vector<std::string>& finished) {
    const auto wslot = workers_.slot_of(identity);
    if (wslot == scheduling::k_none) return {};
    return remove_worker_slot(wslot, died, finished);
}

std::vector<FinalOutcome> Scheduler::remove_worker_slot(std::uint32_t wslot, bool died,
                                                        const std::vector<std::string>& finished) {
    std::vector<FinalOutcome> finals;
    WorkerState& w = workers_[wslot];
    // The worker sent their `timeout` just before it left, and it may not
    // arrive (its process exits when its linger runs out, its sink paused
    // meanwhile): the broker sends the same outcome until the sink settles.
    for (const auto& id : finished) {
        TaskEntry* e = tasks_.find(id);
        if (e && e->state == TaskState::held && e->worker == wslot)
            finals.push_back(
                end_task(*e, proto::Status::timeout, "timed out after " + std::to_string(e->timeout_ms) + " ms"));
    }
    std::vector<TaskEntry*> held;  // in dispatch order; collected first, as requeueing trims w.held
    for (const auto& h : w.held)
        if (holds(wslot, h)) held.push_back(&tasks_[h.slot]);
    std::size_t may_run = std::max<std::uint32_t>(1, w.hello.slots);
    std::vector<TaskEntry*> requeue;
    for (TaskEntry* e : held) {
        const bool blamed = died && may_run > 0;
        if (blamed) {
            --may_run;
            ++e->deaths;
            if (journal_ && e->journal_key) journal_->append_attempt(e->journal_key, e->attempt, e->deaths);
        }
        if (blamed && !next_attempt(AttemptEnd::died, {e->attempt, e->max_attempts, e->deaths}).again) {
            finals.push_back(
                end_task(*e, proto::Status::lost,
                         "worker died " + std::to_string(e->deaths) + (e->deaths == 1 ? " time" : " times")));
            ++totals_.lost;
        } else {
            requeue.push_back(e);
        }
    }
    // Back to front, so the queue keeps the dispatch order.
    for (auto r = requeue.rbegin(); r != requeue.rend(); ++r) {
        enqueue_front(**r);
        ++totals_.redispatched;
    }
    for (const auto name : w.names) names_.release(name);  // after the requeue: its tasks hold theirs
    workers_.remove(wslot);
    return finals;
}

std::optional<std::vector<FinalOutcome>> Scheduler::remove_lost_worker(const std::string& worker_id,
                                                                       std::string_view key) {
    for (const auto& [identity, wslot] : workers_) {
        const auto& hello = workers_[wslot].hello;
        if (hello.worker != worker_id) continue;
        if (hello.lost_key.empty() || hello.lost_key != key) return std::nullopt;
        return remove_worker_slot(wslot, true, {});
    }
    return std::vector<FinalOutcome>{};  // gone already
}

std::vector<std::string> Scheduler::expired(Clock::time_point now) const {
    return workers_.silent(limits_.heartbeat * limits_.liveness, now);
}

void Scheduler::stalled(Clock::duration stall, Clock::time_point now) {
    workers_.stalled(stall, now);
    // A sink's SETTLE may be waiting unread: its outcome is not due again yet.
    std::vector<Due> due;
    due.reserve(reports_.size());
    for (; !reports_.empty(); reports_.pop()) due.emplace_back(reports_.top().first + stall, reports_.top().second);
    reports_ = DueQueue(std::greater<>(), std::move(due));
}

// What workers say they hold ------------------------------------------------------

std::optional<std::vector<FinalOutcome>> Scheduler::worker_holds(const std::string& identity, std::uint32_t held,
                                                                 Clock::time_point now) {
    const auto wslot = workers_.slot_of(identity);
    if (wslot == scheduling::k_none) return std::nullopt;
    WorkerState& w = workers_[wslot];
    w.last_seen = now;
    // Tasks dispatched before the previous report reached the worker before
    // it sent this one (a heartbeat period earlier): if it holds none, it
    // has finished them. Later ones may still be on their way to it.
    const std::uint64_t reached = w.report_seq;
    w.report_seq = dispatch_seq_;
    if (w.idle_upto == 0) {
        if (held == 0 && reached > 0 && w.held_count > 0) {  // their outcomes should settle soon
            w.idle_since = now;
            w.idle_upto = reached;
        }
        return std::vector<FinalOutcome>{};
    }
    if (now - w.idle_since < limits_.heartbeat * limits_.liveness * limits_.unsettled_windows)
        return std::vector<FinalOutcome>{};
    // Only tasks with an attempt left: the outcome may be slow, not lost, and
    // a task ended `lost` here could reach its sink before its real outcome.
    std::vector<std::string> ids;
    for (const auto& h : w.held) {
        if (h.seq > w.idle_upto || !holds(wslot, h)) continue;
        const TaskEntry& e = tasks_[h.slot];
        if (next_attempt(AttemptEnd::retried, {e.attempt, e.max_attempts}).again) ids.push_back(e.id);
    }
    w.idle_upto = 0;
    totals_.recovered += ids.size();
    return retry(identity, ids, now);
}

bool Scheduler::give_back(const std::string& identity, const std::vector<std::string>& ids, Clock::time_point now) {
    const auto wslot = workers_.slot_of(identity);
    if (wslot == scheduling::k_none) return false;
    workers_[wslot].last_seen = now;
    std::vector<TaskEntry*> back;
    for (const auto& id : ids) {
        TaskEntry* e = tasks_.find(id);
        if (!e || e->state != TaskState::held || e->worker != wslot) continue;  // not this worker's (any more)
        back.push_back(e);
    }
    // Back to front, so the queue keeps their order.
    for (auto it = back.rbegin(); it != back.rend(); ++it) {
        TaskEntry& e = **it;
        if (e.attempt > 0) --e.attempt;  // it never ran
        enqueue_front(e);
        --totals_.dispatched;
        ++totals_.returned;
    }
    return true;
}

// Looking -----------------------------------------------------------------------

std::vector<std::string> Scheduler::worker_identities() const { return workers_.identities(); }

std::uint32_t Scheduler::credits_of(const std::string& identity) const {
    const WorkerState* w = workers_.find(identity);
    return w ? w->credits : 0;
}

std::size_t Scheduler::held_by(const std::string& identity) const {
    const WorkerState* w = workers_.find(identity);
    return w ? w->held_count : 0;
}

std::string Scheduler::describe_worker(const std::string& identity) const {
    const WorkerState* w = workers_.find(identity);
    return w ? w->hello.worker + " host=" + w->hello.host : std::string();
}

}  // namespace drover
