// Client: outcomes checked against their tokens, settled, and delivered.
#include "client_impl.hpp"

#include "internal/proof.hpp"
#include "internal/unpack.hpp"

namespace drover {

template <class Run>
void ClientImpl::deliver(std::size_t n, Run&& run) {
    room_.notify_all();
    for (std::size_t k = 0; k < n; ++k) run(k);
    {
        std::lock_guard lock(mutex_);
        delivering_ -= n;
    }
    room_.notify_all();  // wait_all() returns only once every callback has run
}

void ClientImpl::on_results(std::string_view body) {
    auto m = proto::decode_result_views(body);
    if (!m) {
        log_->warn("client.sink_dropped reason={}", proto::decode_error_name(m.error()));
        return;
    }
    // One lock and one wake-up for the whole batch. Only the checks and
    // pending_ need the lock: Results are made, and callbacks run, after it.
    std::vector<std::pair<ResultCallback, std::size_t>> taken;  // callback, index in *m
    taken.reserve(m->size());
    std::size_t resubmitted = 0;
    {
        std::lock_guard lock(mutex_);
        if (settle_.empty()) settle_since_ = Clock::now();
        for (std::size_t i = 0; i < m->size(); ++i) {
            ResultCallback done;
            switch (take_outcome((*m)[i], done)) {
                case Taken::ready: taken.emplace_back(std::move(done), i); break;
                case Taken::resubmitted: ++resubmitted; break;
                default: break;
            }
        }
        delivering_ += taken.size();
        // The last in flight, with the broker in this process: it is told at
        // once (k_settle_delay). With the window full, at once too: the
        // window counts the outcomes to settle.
        if (pending_.empty() && settle_last_at_once_) settle_now_ = true;
        if (!has_room()) settle_now_ = true;
    }
    if (!taken.empty()) {
        made_room();
        widen_broker_room(taken.size());
        // Each Result is made just before its callback runs: one pass, no
        // second vector of callbacks and Results.
        deliver(taken.size(), [&](std::size_t k) {
            auto& [done, i] = taken[k];
            const proto::OutcomeView& o = (*m)[i];
            run_callback(done, to_result(o), o.id);
        });
    }
    if (resubmitted > 0)
        log_->warn(
            "client.resubmitting n={} (the broker took this producer for gone, as it was stopped, and "
            "cancelled them: they go again under their ids)",
            resubmitted);
}

bool ClientImpl::proven(const proto::OutcomeView& o, const Found& f) const {
    // A task of ours still unfinished has its secret kept: one hash checks
    // the token. Any other id's is derived from our sink key.
    const bool by_broker = o.worker == "broker";
    const Submitted* own = f.pending && !f.pending->elsewhere ? &f.pending->task : nullptr;
    return own ? genuine({own->secret, sizeof own->secret}, o.attempt, by_broker, o.token)
               : genuine_for(sink_key_, o.id, o.attempt, by_broker, o.token);
}

ClientImpl::Taken ClientImpl::take_outcome(const proto::OutcomeView& o, ResultCallback& taken) {
    const Found f = pending_.find(o.id);
    if (!proven(o, f)) {
        // Not from the broker or a worker given that attempt: never
        // delivered, never settled (the real outcome is still to come).
        if (forged_.fetch_add(1) == 0)
            log_->warn(
                "client.forged_result id={} worker={} (an outcome without its attempt's token: "
                "dropped and counted; logged once)",
                o.id, o.worker);
        return Taken::forged;
    }
    if (o.status == proto::Status::cancelled && o.error == proto::k_producer_gone && o.worker == "broker" &&
        !stopping_) {
        // The broker took this producer for gone while it was stopped, and
        // forgot the task: it goes again under its id. Not settled, as the
        // broker keeps no such outcome, and a SETTLE could end the task sent
        // again.
        if (!f.pending || f.pending->elsewhere) return Taken::ignored;
        unsent_.push_back(f.seq);
        return Taken::resubmitted;
    }
    // Settle duplicates too: the broker may still hold the task.
    settle_.emplace_back(o.id);
    if (f.pending && !f.pending->named) settled_recent_.push_back(f.seq);
    if (!f.pending || f.pending->elsewhere) {
        ++duplicates_;
        return Taken::duplicate;
    }
    settle_timed_out_ += o.status == proto::Status::timeout;
    taken = std::move(f.pending->done);
    pending_.erase(f);
    return Taken::ready;
}

Result ClientImpl::to_result(const proto::OutcomeView& o) {
    const double elapsed_ms = static_cast<double>(o.elapsed_us) / 1000.0;
    if (o.status == proto::Status::ok && !within_depth_limit(o.result)) {
        // Its reader (as<T>, JSON) would recurse that deep: an error instead.
        too_deep_.fetch_add(1);
        log_->warn("client.result_too_deep id={} worker={} limit={} (delivered as an error)", o.id, o.worker,
                   k_max_data_depth);
        return Result{std::string(o.id),          std::string(o.task), proto::Status::error,  std::string(),
                      too_deep_message("result"), o.attempt,           std::string(o.worker), elapsed_ms};
    }
    // Each string made from its view, not assigned into an empty one
    // (std::string::assign is out of line).
    return Result{std::string(o.id), std::string(o.task),   o.status,  std::string(o.result), std::string(o.error),
                  o.attempt,         std::string(o.worker), elapsed_ms};
}

void ClientImpl::finish(const std::string& id, Result&& r) {
    ResultCallback done;
    {
        std::lock_guard lock(mutex_);
        const Found f = pending_.find(id);
        if (!f.pending) return;
        done = std::move(f.pending->done);
        pending_.erase(f);
        ++delivering_;
    }
    deliver(1, [&](std::size_t) { run_callback(done, std::move(r), id); });
}

void ClientImpl::run_callback(ResultCallback& done, Result&& r, std::string_view id) {
    if (!done) return;
    try {
        done(std::move(r));
    } catch (const std::exception& e) {  // a user callback must not end the I/O thread
        log_->error("client.callback_threw id={} error=\"{}\"", id, e.what());
    }
}

}  // namespace drover
