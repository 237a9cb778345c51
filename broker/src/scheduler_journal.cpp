// The Scheduler and the broker's journal: recovery and compaction.
#include "scheduler.hpp"

#include <cstring>

namespace drover {

using scheduling::SlotRef;
using scheduling::TaskEntry;
using scheduling::TaskState;

std::optional<FinalOutcome> Scheduler::restore(std::uint64_t key, const JournalState& state) {
    const JournalTask& j = state.task;
    proto::Task t;
    t.id = std::string(j.id);
    t.name = std::string(j.name);
    t.args = std::string(j.args);
    t.max_attempts = j.max_attempts;
    t.timeout_ms = j.timeout_ms;
    t.detached = j.detached;
    t.retry_on_error = j.retry_on_error;
    t.secret = j.secret;
    t.secret.make_full();
    const auto id_hash = tasks_.hash(t.id);
    if (TaskEntry* known = tasks_.find(t.id, id_hash)) {  // a later acceptance wins
        dropped_keys_.push_back(known->journal_key);
        free_entry(*known, id_hash);
    }
    SubmitContext ctx;
    ctx.producer = strings_.acquire(j.producer);
    TaskEntry& e = new_entry(std::move(t), j.reply_to, ctx, id_hash);
    strings_.release(ctx.producer);
    e.journal_key = key;
    e.attempt = static_cast<std::uint16_t>(state.attempt);
    e.deaths = static_cast<std::uint16_t>(state.deaths);
    ++totals_.accepted;
    if (!state.outcome) {
        mark_queued(e);
        push_queued(e, false);
        return std::nullopt;
    }
    // Ended already: the same outcome, with the token of the same attempt, until settled.
    e.attempt = static_cast<std::uint16_t>(state.outcome->attempt);
    e.reported = std::make_unique<scheduling::Report>(
        scheduling::Report{final_outcome(e, state.outcome->status, std::string(state.outcome->error)), {}});
    e.report_sends = 1;
    reported_now_.push_back(SlotRef{e.slot, e.gen});
    return e.reported->final;
}

void Scheduler::set_journal(Journal* journal) {
    journal_ = journal;
    if (!journal_) return;
    for (const auto key : dropped_keys_) journal_->append_settled(key);
    dropped_keys_.clear();
}

std::size_t Scheduler::detached_count() const {
    std::size_t n = 0;
    for (const auto& e : tasks_.slots()) n += e.state != TaskState::free && e.detached;
    return n;
}

JournalState Scheduler::journal_state(const TaskEntry& e) const {
    JournalState s;
    s.task.id = e.id;
    s.task.name = names_[e.name];
    s.task.args = e.args;
    s.task.reply_to = strings_[e.reply_to];
    s.task.producer = strings_[e.producer];
    s.task.secret = e.secret_view();
    s.task.max_attempts = e.max_attempts;
    s.task.timeout_ms = e.timeout_ms;
    s.task.detached = e.detached;
    s.task.retry_on_error = e.retry_on_error;
    s.attempt = e.attempt;
    s.deaths = e.deaths;
    if (e.reported) {
        const auto& o = e.reported->final.outcome;
        s.outcome = JournalOutcome{o.status, o.attempt, o.error};
    }
    return s;
}

void Scheduler::relocate_journal(std::uint64_t below) {
    if (!journal_) return;
    for (auto& e : tasks_.slots())
        if (e.state != TaskState::free && e.journal_key && e.journal_key < below)
            e.journal_key = journal_->relocate(e.journal_key, journal_state(e));
}

}  // namespace drover
