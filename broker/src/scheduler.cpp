// The broker's bookkeeping: tasks, queues, workers and credits.
#include "drover/scheduler.hpp"

#include <algorithm>

namespace drover {

Scheduler::Submitted Scheduler::submit(const std::string& producer, std::vector<proto::Task>&& tasks,
                                       Clock::time_point) {
    Submitted out;
    out.accepted.reserve(tasks.size());
    for (auto& t : tasks) {
        if (auto known = tasks_.find(t.id); known != tasks_.end()) {  // a resend: already ours
            known->second.producer = producer;  // it may come over a new connection
            out.accepted.push_back(t.id);
            if (known->second.reported) out.finals.push_back(*known->second.reported);  // it was missed
            continue;
        }
        if (t.name.empty() || t.reply_to.empty()) {
            out.rejected["invalid: a task needs a name and a reply_to"].push_back(t.id);
            ++totals_.rejected;
            continue;
        }
        if (!workers_.empty() && !known_names_.count(t.name)) {
            const std::string id = t.id;
            Entry& e = tasks_[id];
            e.task = std::move(t);
            e.producer = producer;
            out.finals.push_back(end_task(e, proto::Status::error, "unknown task '" + e.task.name + "': no worker runs it"));
            out.accepted.push_back(id);
            ++totals_.accepted;
            continue;
        }
        if (tasks_.size() >= limits_.max_queued) {
            out.rejected["queue_full"].push_back(t.id);
            ++totals_.rejected;
            continue;
        }
        if (t.max_attempts == 0) t.max_attempts = 1;
        t.attempt = 0;
        const std::string id = t.id;
        Entry& e = tasks_[id];
        e.task = std::move(t);
        e.producer = producer;
        mark_queued(e);
        queues_[e.task.name].push_back(id);
        ++totals_.accepted;
        out.accepted.push_back(id);
    }
    return out;
}

std::vector<FinalOutcome> Scheduler::hello(const std::string& identity, proto::Hello h, Clock::time_point now) {
    std::vector<FinalOutcome> finals;
    if (workers_.count(identity)) finals = remove_worker(identity, false);
    // The same worker over a new connection (it reconnected): its tasks are
    // still running there, so they go back without counting a death.
    for (auto it = workers_.begin(); it != workers_.end();) {
        auto next = std::next(it);
        if (it->second.hello.worker == h.worker && it->first != identity) {
            auto more = remove_worker(std::string(it->first), false);
            finals.insert(finals.end(), more.begin(), more.end());
        }
        it = next;
    }
    WorkerState& w = workers_[identity];
    w.hello = std::move(h);
    w.last_seen = now;
    w.served_seq = 0;
    for (const auto& name : w.hello.tasks) {
        queues_.try_emplace(name);
        known_names_.insert(name);
    }
    return finals;
}

bool Scheduler::ready(const std::string& identity, std::uint32_t credits, Clock::time_point now) {
    auto it = workers_.find(identity);
    if (it == workers_.end()) return false;
    it->second.credits += credits;
    it->second.last_seen = now;
    return true;
}

bool Scheduler::seen(const std::string& identity, Clock::time_point now) {
    auto it = workers_.find(identity);
    if (it == workers_.end()) return false;
    it->second.last_seen = now;
    return true;
}

void Scheduler::mark_queued(Entry& e) {
    e.queued = true;
    ++queued_;
    ++queued_by_name_[e.task.name];
}

void Scheduler::unmark_queued(Entry& e) {
    e.queued = false;
    --queued_;
    --queued_by_name_[e.task.name];
}

void Scheduler::enqueue_front(Entry& e) {
    e.worker.clear();
    mark_queued(e);
    queues_[e.task.name].push_front(e.task.id);
}

FinalOutcome Scheduler::end_task(Entry& e, proto::Status status, std::string error) {
    if (e.queued) unmark_queued(e);
    e.waiting_retry = false;
    e.worker.clear();
    e.ended = true;
    e.reported = std::make_unique<FinalOutcome>(final_outcome(e, status, std::move(error)));
    e.report_sends = 1;
    reported_now_.push_back(e.task.id);
    return *e.reported;
}

Millis Scheduler::report_interval(std::uint32_t sends) const {
    const Millis window = limits_.heartbeat * limits_.liveness;
    const auto doubled = window * (1LL << std::min<std::uint32_t>(sends - 1, 10));
    return std::min<Millis>(doubled, Millis(60000));
}

std::vector<FinalOutcome> Scheduler::reports_due(Clock::time_point now) {
    std::vector<FinalOutcome> due;
    for (auto& id : reported_now_) reports_.emplace(now + report_interval(1), std::move(id));
    reported_now_.clear();
    while (!reports_.empty() && reports_.top().first <= now) {
        std::string id = reports_.top().second;
        reports_.pop();
        auto t = tasks_.find(id);
        if (t == tasks_.end() || !t->second.reported) continue;  // settled, or gone with its producer
        Entry& e = t->second;
        if (e.report_sends >= static_cast<std::uint32_t>(limits_.report_tries)) {
            ++totals_.reports_abandoned;  // its sink never answered: give up on it
            tasks_.erase(t);
            continue;
        }
        ++e.report_sends;
        ++totals_.reports_resent;
        due.push_back(*e.reported);
        reports_.emplace(now + report_interval(e.report_sends), std::move(id));
    }
    return due;
}

std::optional<std::vector<FinalOutcome>> Scheduler::retry(const std::string& identity,
                                                          const std::vector<std::string>& ids, Clock::time_point now) {
    auto w = workers_.find(identity);
    if (w == workers_.end()) return std::nullopt;
    w->second.last_seen = now;
    std::vector<FinalOutcome> finals;
    for (const auto& id : ids) {
        if (w->second.held.erase(id) == 0) continue;  // not this worker's (any more)
        auto t = tasks_.find(id);
        if (t == tasks_.end()) continue;
        Entry& e = t->second;
        e.worker.clear();
        if (e.task.attempt >= e.task.max_attempts) {  // a worker retries only with attempts left; a sink may not
            finals.push_back(end_task(e, proto::Status::lost, "failed " + std::to_string(e.task.attempt) +
                                                                  " attempts (the last could not reach its sink)"));
            ++totals_.lost;
            continue;
        }
        e.waiting_retry = true;
        const auto shift = std::min<std::uint32_t>(std::max(e.task.attempt, 1u) - 1, 16);
        const auto backoff = std::min<Millis>(limits_.retry_base * (1LL << shift), limits_.retry_max);
        retries_.emplace(now + backoff, id);
        ++totals_.retried;
    }
    return finals;
}

Clock::time_point Scheduler::release_retries(Clock::time_point now) {
    while (!retries_.empty() && retries_.top().first <= now) {
        std::string id = retries_.top().second;
        retries_.pop();
        auto t = tasks_.find(id);
        if (t == tasks_.end() || !t->second.waiting_retry) continue;  // settled or cancelled meanwhile
        Entry& e = t->second;
        e.waiting_retry = false;
        mark_queued(e);
        queues_[e.task.name].push_back(std::move(id));
    }
    return retries_.empty() ? Clock::time_point::max() : retries_.top().first;
}

FinalOutcome Scheduler::final_outcome(const Entry& e, proto::Status status, std::string error) const {
    FinalOutcome f;
    f.reply_to = e.task.reply_to;
    f.outcome.id = e.task.id;
    f.outcome.task = e.task.name;
    f.outcome.status = status;
    f.outcome.error = std::move(error);
    f.outcome.attempt = e.task.attempt;
    f.outcome.worker = "broker";
    return f;
}

std::vector<FinalOutcome> Scheduler::remove_worker(const std::string& identity, bool died,
                                                   const std::vector<std::string>& finished) {
    std::vector<FinalOutcome> finals;
    auto it = workers_.find(identity);
    if (it == workers_.end()) return finals;
    for (const auto& id : finished) {
        if (it->second.held.erase(id) == 0) continue;
        if (auto t = tasks_.find(id); t != tasks_.end()) {
            t->second.worker.clear();
            t->second.ended = true;
        }
    }
    std::size_t may_run = std::max<std::uint32_t>(1, it->second.hello.slots);
    std::vector<std::pair<std::uint64_t, const std::string*>> order;
    order.reserve(it->second.held.size());
    for (const auto& [id, seq] : it->second.held) order.emplace_back(seq, &id);
    std::sort(order.begin(), order.end());
    std::vector<Entry*> requeue;
    for (const auto& [seq, idp] : order) {
        const std::string& id = *idp;
        auto t = tasks_.find(id);
        if (t == tasks_.end()) continue;
        Entry& e = t->second;
        const bool blamed = died && may_run > 0;
        if (blamed) {
            --may_run;
            ++e.deaths;
        }
        if (blamed && e.deaths >= e.task.max_attempts) {
            finals.push_back(end_task(e, proto::Status::lost,
                                      "worker died " + std::to_string(e.deaths) + (e.deaths == 1 ? " time" : " times")));
            ++totals_.lost;
        } else {
            requeue.push_back(&e);
        }
    }
    // Back to front, so the queue keeps the dispatch order.
    for (auto r = requeue.rbegin(); r != requeue.rend(); ++r) {
        enqueue_front(**r);
        ++totals_.redispatched;
    }
    workers_.erase(it);
    return finals;
}

std::vector<FinalOutcome> Scheduler::remove_worker_by_id(const std::string& worker_id) {
    for (const auto& [identity, w] : workers_)
        if (w.hello.worker == worker_id) return remove_worker(std::string(identity), true);
    return {};
}

std::vector<std::string> Scheduler::expired(Clock::time_point now) const {
    std::vector<std::string> out;
    const auto window = limits_.heartbeat * limits_.liveness;
    for (const auto& [identity, w] : workers_)
        if (now - w.last_seen > window) out.push_back(identity);
    return out;
}

std::vector<Scheduler::Batch> Scheduler::dispatch() {
    std::vector<Batch> batches;
    if (queued_ == 0) return batches;
    std::vector<std::pair<const std::string*, WorkerState*>> ready;
    for (auto& [identity, w] : workers_)
        if (w.credits > 0) ready.emplace_back(&identity, &w);
    if (ready.empty()) return batches;
    // Least recently served first; a round gives each worker at most one
    // task, so a queue shorter than the credits is spread over the workers.
    std::sort(ready.begin(), ready.end(),
              [](const auto& a, const auto& b) { return a.second->served_seq < b.second->served_seq; });
    std::vector<std::vector<proto::Task>> taken(ready.size());
    bool progress = true;
    while (progress && queued_ > 0) {
        progress = false;
        for (std::size_t i = 0; i < ready.size(); ++i) {
            WorkerState& w = *ready[i].second;
            if (w.credits == 0) continue;
            bool took = false;
            for (const auto& name : w.hello.tasks) {
                auto q = queues_.find(name);
                if (q == queues_.end()) continue;
                while (!q->second.empty()) {
                    std::string id = std::move(q->second.front());
                    q->second.pop_front();
                    auto t = tasks_.find(id);
                    if (t == tasks_.end() || !t->second.queued) continue;  // settled or cancelled meanwhile
                    Entry& e = t->second;
                    unmark_queued(e);
                    e.worker = *ready[i].first;
                    ++e.task.attempt;
                    w.held.emplace(id, ++dispatch_seq_);
                    --w.credits;
                    taken[i].push_back(e.task);
                    ++totals_.dispatched;
                    took = true;
                    break;
                }
                if (took) break;
            }
            progress = progress || took;
        }
    }
    for (std::size_t i = 0; i < ready.size(); ++i) {
        if (taken[i].empty()) continue;
        ready[i].second->served_seq = ++serve_seq_;
        batches.push_back(Batch{*ready[i].first, std::move(taken[i])});
    }
    return batches;
}

void Scheduler::undo_dispatch(const Batch& batch) {
    auto w = workers_.find(batch.worker);
    // Reverse order keeps the original order at the front of the queue.
    for (auto it = batch.tasks.rbegin(); it != batch.tasks.rend(); ++it) {
        auto t = tasks_.find(it->id);
        if (t == tasks_.end()) continue;
        --t->second.task.attempt;
        if (w != workers_.end()) {
            w->second.held.erase(it->id);
            ++w->second.credits;
        }
        enqueue_front(t->second);
        --totals_.dispatched;
    }
}

void Scheduler::settle(const std::vector<std::string>& ids) {
    for (const auto& id : ids) {
        auto t = tasks_.find(id);
        if (t == tasks_.end()) continue;
        Entry& e = t->second;
        if (!e.worker.empty()) {
            auto w = workers_.find(e.worker);
            if (w != workers_.end()) {
                w->second.held.erase(id);
                ++w->second.done;
            }
        }
        if (e.queued) unmark_queued(e);  // its queue slot is skipped lazily
        tasks_.erase(t);
        ++totals_.settled;
    }
}

std::vector<FinalOutcome> Scheduler::producer_gone(const std::string& producer) {
    std::vector<FinalOutcome> finals;
    for (auto it = tasks_.begin(); it != tasks_.end();) {
        Entry& e = it->second;
        if (e.task.detached || e.producer != producer) {
            ++it;
            continue;
        }
        if (e.ended) {  // its outcome went out already
            it = tasks_.erase(it);
            continue;
        }
        // Reported anyway: a producer that was only stalled still gets an outcome.
        finals.push_back(final_outcome(e, proto::Status::cancelled, "producer gone"));
        if (e.queued) {
            unmark_queued(e);
        } else if (auto w = workers_.find(e.worker); w != workers_.end()) {
            w->second.held.erase(it->first);  // it runs on; its result goes nowhere
        }
        ++totals_.cancelled;
        it = tasks_.erase(it);
    }
    return finals;
}

std::vector<FinalOutcome> Scheduler::cancel(const std::vector<std::string>& ids) {
    std::vector<FinalOutcome> finals;
    for (const auto& id : ids) {
        auto t = tasks_.find(id);
        if (t == tasks_.end() || !(t->second.queued || t->second.waiting_retry)) continue;
        finals.push_back(end_task(t->second, proto::Status::cancelled, "cancelled"));
        ++totals_.cancelled;
    }
    return finals;
}

std::vector<std::string> Scheduler::worker_identities() const {
    std::vector<std::string> out;
    out.reserve(workers_.size());
    for (const auto& [identity, w] : workers_) out.push_back(identity);
    return out;
}

std::uint32_t Scheduler::credits_of(const std::string& identity) const {
    auto it = workers_.find(identity);
    return it == workers_.end() ? 0 : it->second.credits;
}

std::size_t Scheduler::held_by(const std::string& identity) const {
    auto it = workers_.find(identity);
    return it == workers_.end() ? 0 : it->second.held.size();
}

nlohmann::json Scheduler::status(Clock::time_point now) const {
    using nlohmann::json;
    std::unordered_map<std::string, std::size_t> running;
    for (const auto& [id, e] : tasks_)
        if (!e.worker.empty()) ++running[e.task.name];
    std::unordered_map<std::string, std::size_t> can_run;
    for (const auto& [identity, w] : workers_)
        for (const auto& name : w.hello.tasks) ++can_run[name];

    json queues = json::object();
    json waiting = json::array();
    for (const auto& entry : queues_) {
        const std::string& name = entry.first;
        const auto qn = queued_by_name_.find(name);
        const std::size_t queued = qn == queued_by_name_.end() ? 0 : qn->second;
        const auto r = running.count(name) ? running.at(name) : 0;
        const auto workers = can_run.count(name) ? can_run.at(name) : 0;
        if (queued == 0 && r == 0 && workers == 0) continue;
        queues[name] = {{"queued", queued}, {"in_flight", r}, {"workers", workers}};
        if (queued > 0 && workers == 0) waiting.push_back(name);
    }
    json workers = json::array();
    for (const auto& [identity, w] : workers_) {
        workers.push_back({{"id", w.hello.worker},
                           {"host", w.hello.host},
                           {"pid", w.hello.pid},
                           {"pool", w.hello.pool},
                           {"slots", w.hello.slots},
                           {"credits", w.credits},
                           {"held", w.held.size()},
                           {"done", w.done},
                           {"restarts", w.hello.restarts},
                           {"last_heartbeat_ms",
                            std::chrono::duration_cast<Millis>(now - w.last_seen).count()}});
    }
    std::sort(workers.begin(), workers.end(),
              [](const json& a, const json& b) { return a["id"].get<std::string>() < b["id"].get<std::string>(); });
    std::size_t in_flight = 0, retrying = 0, ended = 0;
    for (const auto& [name, n] : running) in_flight += n;
    for (const auto& [id, e] : tasks_) {
        retrying += e.waiting_retry;
        ended += e.ended;
    }
    return {{"queues", queues},
            {"waiting_for_workers", waiting},
            {"workers", workers},
            {"queued", queued_},
            {"in_flight", in_flight},
            {"retrying", retrying},
            {"awaiting_settle", ended},
            {"held", tasks_.size()},
            {"totals",
             {{"accepted", totals_.accepted},
              {"rejected", totals_.rejected},
              {"dispatched", totals_.dispatched},
              {"settled", totals_.settled},
              {"redispatched", totals_.redispatched},
              {"retried", totals_.retried},
              {"lost", totals_.lost},
              {"cancelled", totals_.cancelled},
              {"timed_out", totals_.timed_out},
              {"workers_expired", totals_.workers_expired},
              {"reports_resent", totals_.reports_resent},
              {"reports_abandoned", totals_.reports_abandoned}}}};
}

}  // namespace drover
