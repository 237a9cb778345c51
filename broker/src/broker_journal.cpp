// The broker's journal: recovery before bind, a commit each loop turn,
// ACCEPTED held until durable, compaction, and its part of STATUS.
#include "broker_impl.hpp"

#include <stdexcept>

namespace drover {

void BrokerImpl::open_journal() {
    if (config_.journal_dir.empty()) {
        log_->warn(
            "broker.memory_only (no --journal: accepted tasks live in this process's memory only, and a crash or "
            "stop loses those still held)");
        return;
    }
    const auto policy = parse_fsync_policy(config_.fsync);
    if (!policy) throw std::invalid_argument("--fsync: expected always, batch or off, got '" + config_.fsync + "'");
    JournalOptions options;
    options.fsync = *policy;
    options.segment_bytes = std::uint64_t{config_.journal_segment_mib} << 20;
    options.repair = config_.journal_repair;
    std::vector<FinalOutcome> finals;
    const auto now = Clock::now();
    const auto visit = [&](Journal::Seq key, const JournalState& state) {
        if (auto f = scheduler_.restore(key, state)) finals.push_back(std::move(*f));
        // An attached task's producer is given a window to come back and resend, like a live one.
        if (!state.task.detached) producers_.try_emplace(std::string(state.task.producer), now);
    };
    journal_ = Journal::open(config_.journal_dir, options, visit, &recovery_, log_);
    scheduler_.set_journal(journal_.get());
    const std::size_t ended = finals.size();
    report(std::move(finals));
    log_->info(
        "broker.journal dir={} fsync={} recovered={} ended={} took_ms={} bytes={} segments={} torn_tails={} "
        "repaired={}",
        config_.journal_dir, fsync_policy_name(*policy), recovery_.tasks, ended,
        std::chrono::duration_cast<Millis>(recovery_.took).count(), journal_->bytes_on_disk(),
        journal_->segment_count(), recovery_.torn_tails, recovery_.repaired);
}

void BrokerImpl::hold_accepted(const std::string& producer, std::vector<std::string>&& ids) {
    // Appends since the last commit share the batch's durability: the last sequence number stands for them all.
    const auto seq = journal_->last_seq();
    if (!held_accepted_.empty() && held_accepted_.back().seq == seq && held_accepted_.back().producer == producer) {
        auto& held = held_accepted_.back().ids;
        held.insert(held.end(), std::make_move_iterator(ids.begin()), std::make_move_iterator(ids.end()));
        return;
    }
    held_accepted_.push_back(HeldAccepted{seq, producer, std::move(ids)});
}

void BrokerImpl::commit_journal(Clock::time_point now) {
    const bool was_available = journal_->available();
    const auto durable = journal_->commit(now);
    if (was_available != journal_->available()) {
        if (was_available)
            log_->error("broker.journal_unavailable error=\"{}\" (new tasks are rejected journal_unavailable)",
                        journal_->last_error());
        else log_->info("broker.journal_available (the disk takes writes again)");
    }
    while (!held_accepted_.empty() && held_accepted_.front().seq <= durable) {
        auto& held = held_accepted_.front();
        if (producers_.count(held.producer)) keep_reply(held.producer, accepted_[held.producer], held.ids);
        held_accepted_.pop_front();
    }
    if (const auto below = journal_->take_relocation()) scheduler_.relocate_journal(below);
}

void BrokerImpl::close_journal() {
    if (!journal_) {
        if (const auto detached = scheduler_.detached_count(); detached > 0)
            log_->warn(
                "broker.tasks_lost detached={} held={} (no --journal: the detached tasks this broker still held are "
                "lost with it; live producers resend their own)",
                detached, scheduler_.task_count());
        return;
    }
    const auto durable = journal_->flush(Clock::now());
    log_->info("broker.journal_closed held={} durable_seq={} last_seq={} bytes={}", scheduler_.task_count(), durable,
               journal_->last_seq(), journal_->bytes_on_disk());
    scheduler_.set_journal(nullptr);
}

nlohmann::json BrokerImpl::journal_status() const {
    if (!journal_) return nlohmann::json{{"enabled", false}};
    return nlohmann::json{
        {"enabled", true},
        {"dir", journal_->dir()},
        {"fsync", fsync_policy_name(journal_->options().fsync)},
        {"available", journal_->available()},
        {"error", journal_->last_error()},
        {"bytes", journal_->bytes_on_disk()},
        {"segments", journal_->segment_count()},
        {"live_tasks", journal_->live_tasks()},
        {"durable_seq", journal_->durable_seq()},
        {"recovered", recovery_.tasks},
        {"recovery_ms", std::chrono::duration_cast<Millis>(recovery_.took).count()},
        {"torn_tails", recovery_.torn_tails},
        {"repaired", recovery_.repaired},
    };
}

}  // namespace drover
