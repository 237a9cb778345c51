// The Scheduler's retries and the outcomes the broker makes itself.
#include "scheduler.hpp"

#include <algorithm>

#include "internal/proof.hpp"

namespace drover {

using scheduling::SlotRef;
using scheduling::TaskEntry;
using scheduling::TaskState;

namespace {

std::uint64_t pack_ref(std::uint32_t slot, std::uint32_t gen) { return std::uint64_t{slot} << 32 | gen; }
SlotRef unpack_ref(std::uint64_t ref) {
    return SlotRef{static_cast<std::uint32_t>(ref >> 32), static_cast<std::uint32_t>(ref)};
}

}  // namespace

// Retries -----------------------------------------------------------------------

std::optional<std::vector<FinalOutcome>> Scheduler::retry(const std::string& identity,
                                                          const std::vector<std::string>& ids, Clock::time_point now) {
    const auto wslot = workers_.slot_of(identity);
    if (wslot == scheduling::k_none) return std::nullopt;
    workers_[wslot].last_seen = now;
    std::vector<FinalOutcome> finals;
    for (const auto& id : ids) {
        TaskEntry* e = tasks_.find(id);
        if (!e || e->state != TaskState::held || e->worker != wslot) continue;  // not this worker's (any more)
        release_held(*e);
        // A worker retries only with attempts left; a sink it cannot reach may not leave one.
        const auto next = next_attempt(AttemptEnd::retried, {e->attempt, e->max_attempts}, backoff_policy());
        if (!next.again) {
            finals.push_back(
                end_task(*e, proto::Status::lost,
                         "failed " + std::to_string(e->attempt) + " attempts (the last could not reach its sink)"));
            ++totals_.lost;
            continue;
        }
        e->state = TaskState::waiting_retry;
        ++retrying_;
        if (journal_ && e->journal_key) journal_->append_attempt(e->journal_key, e->attempt, e->deaths);
        retries_.emplace(now + next.after, pack_ref(e->slot, e->gen));
        ++totals_.retried;
    }
    return finals;
}

Clock::time_point Scheduler::release_retries(Clock::time_point now) {
    while (!retries_.empty() && retries_.top().first <= now) {
        const SlotRef r = unpack_ref(retries_.top().second);
        retries_.pop();
        TaskEntry* e = tasks_.live(r);
        if (!e || e->state != TaskState::waiting_retry) continue;  // settled or cancelled meanwhile
        leave_retry(*e);
        mark_queued(*e);
        push_queued(*e, false);
    }
    return retries_.empty() ? Clock::time_point::max() : retries_.top().first;
}

// Broker-made outcomes ----------------------------------------------------------

FinalOutcome Scheduler::final_outcome(const TaskEntry& e, proto::Status status, std::string error) const {
    FinalOutcome f;
    f.reply_to = strings_[e.reply_to];
    f.outcome.id = e.id;
    f.outcome.task = names_[e.name];
    f.outcome.status = status;
    f.outcome.error = std::move(error);
    f.outcome.attempt = e.attempt;
    f.outcome.worker = "broker";
    f.outcome.token = broker_token(e.secret_view(), e.attempt);
    return f;
}

FinalOutcome Scheduler::end_task(TaskEntry& e, proto::Status status, std::string error) {
    if (e.state == TaskState::queued) unmark_queued(e);
    if (e.state == TaskState::held) release_held(e);
    leave_retry(e);
    e.state = TaskState::ended;
    e.reported =
        std::make_unique<scheduling::Report>(scheduling::Report{final_outcome(e, status, std::move(error)), {}});
    e.report_sends = 1;
    reported_now_.push_back(SlotRef{e.slot, e.gen});
    if (journal_ && e.journal_key) {
        const auto& o = e.reported->final.outcome;
        journal_->append_outcome(e.journal_key, JournalOutcome{o.status, o.attempt, o.error});
    }
    return e.reported->final;
}

Millis Scheduler::report_interval(std::uint32_t sends) const {
    const Millis window = limits_.heartbeat * limits_.liveness;
    const auto doubled = window * (1LL << std::min<std::uint32_t>(sends - 1, 10));
    return std::min<Millis>(doubled, Millis(60000));
}

std::vector<FinalOutcome> Scheduler::reports_due(Clock::time_point now) {
    std::vector<FinalOutcome> due;
    for (const auto& r : reported_now_) reports_.emplace(now + report_interval(1), pack_ref(r.slot, r.gen));
    reported_now_.clear();
    while (!reports_.empty() && reports_.top().first <= now) {
        const auto ref = reports_.top().second;
        reports_.pop();
        TaskEntry* e = tasks_.live(unpack_ref(ref));
        if (!e || !e->reported) continue;  // settled, or gone with its producer
        if (e->report_sends >= static_cast<std::uint32_t>(limits_.report_tries)) {
            ++totals_.reports_abandoned;  // its sink never answered: give up on it
            free_entry(*e);
            continue;
        }
        ++e->report_sends;
        ++totals_.reports_resent;
        due.push_back(e->reported->final);
        reports_.emplace(now + report_interval(e->report_sends), ref);
    }
    return due;
}

}  // namespace drover
