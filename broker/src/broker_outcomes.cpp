// The broker's outcomes: its own (lost, cancelled, ...) to their sinks, and
// results it forwards for workers that cannot reach theirs.
#include "broker_impl.hpp"
#include "internal/proof.hpp"

#include <algorithm>

namespace drover {

void BrokerImpl::forward_results(const std::string& worker, std::vector<proto::Outcome>&& results) {
    // Workers send only results of attached tasks here, whose producer's
    // connection stands in for its sink; a detached task's sink is tried
    // from here once. What cannot be passed on now runs again later.
    std::unordered_map<std::string_view, std::vector<proto::Outcome>> by_producer, by_sink;
    for (auto& o : results) {
        if (!scheduler_.genuine_result(worker, o)) {  // not dispatched that attempt: forged, or from the wrong peer
            if (count_drop(worker, "forged_result", 1))
                log_->warn(
                    "broker.forged_result peer={} id={} (a RESULT without the token of an attempt this broker "
                    "gave out: forged, or from before a restart; dropped, logged once per peer)",
                    to_hex_text(worker), o.id);
            continue;
        }
        const auto route = scheduler_.route_of(o.id);
        if (!route) continue;  // settled already, or its producer is gone: nobody waits for it
        ++scheduler_.totals().results_forwarded;
        (route->detached ? by_sink[route->reply_to] : by_producer[route->producer]).push_back(std::move(o));
    }
    if (logged_forwards_.size() > 10000) logged_forwards_.clear();
    if (logged_forwards_.insert(worker).second)
        log_->warn("broker.forwarding_results worker={} (it cannot reach a sink: results go through the broker)",
                   to_hex_text(worker));
    std::vector<std::string> failed;
    const auto failed_all = [&](std::vector<proto::Outcome>& list) {
        for (auto& o : list) failed.push_back(std::move(o.id));
    };
    for (auto& [producer, list] : by_producer) {
        auto body = proto::encode_message(list.data(), list.size());
        if (send_to(frontend_, producer, proto::Command::result, body) != SendStatus::sent) failed_all(list);
    }
    for (auto& [endpoint, list] : by_sink) {
        try {
            auto body = proto::encode_message(list.data(), list.size());
            if (send_message(sinks_.get(std::string(endpoint)), proto::Command::result, body) != SendStatus::sent)
                failed_all(list);
        } catch (const zmq::error_t&) {
            failed_all(list);
        }
    }
    if (failed.empty()) return;
    log_->warn("broker.forward_failed worker={} results={} (their tasks run again)", to_hex_text(worker),
               failed.size());
    if (auto finals = scheduler_.retry(worker, failed, Clock::now())) report(std::move(*finals));
    next_retry_ = Clock::now();
}

void BrokerImpl::report(std::vector<FinalOutcome>&& finals) {
    // Each one in the log when few; a count by status when many (a gone
    // producer may have a million tasks cancelled at once).
    constexpr std::size_t k_logged_each = 16;
    std::map<std::string_view, std::size_t> by_status;
    const std::string first_id =
        finals.size() > k_logged_each ? finals.front().outcome.id : std::string();  // moved out below
    for (auto& f : finals) {
        if (finals.size() <= k_logged_each)
            log_->info("task.final id={} status={} error=\"{}\"", f.outcome.id, proto::status_name(f.outcome.status),
                       f.outcome.error);
        else ++by_status[proto::status_name(f.outcome.status)];
        outcomes_[f.reply_to].push_back(std::move(f.outcome));
    }
    for (const auto& [status, n] : by_status)
        log_->info("task.final n={} status={} (first id {})", n, status, first_id);
}

void BrokerImpl::flush_outcomes() {
    for (auto& [endpoint, list] : outcomes_) {
        if (list.empty()) continue;
        try {
            // In batches a sink takes (a broker-made outcome has no result).
            constexpr std::size_t k_outcome_batch = 1024;
            auto& sink = sinks_.get(endpoint);
            std::size_t unsent = 0;
            for (std::size_t i = 0; i < list.size(); i += k_outcome_batch) {
                const auto n = std::min(k_outcome_batch, list.size() - i);
                auto body = proto::encode_message(list.data() + i, n);
                if (send_message(sink, proto::Command::result, body) != SendStatus::sent) unsent += n;
            }
            // Sent again on the resend schedule until settled.
            if (unsent > 0) log_->warn("broker.sink_full endpoint={} unsent_outcomes={}", endpoint, unsent);
        } catch (const zmq::error_t& e) {
            log_->warn("broker.sink_unusable endpoint={} error=\"{}\" dropped_outcomes={}", endpoint, e.what(),
                       list.size());
        }
        list.clear();
    }
}

}  // namespace drover
