// The broker's workers: their messages (HELLO to BYE) and the DISPATCH of tasks to them.
#include "broker_impl.hpp"
#include "internal/proof.hpp"

#include <algorithm>

namespace drover {

void BrokerImpl::handle_backend(const std::string& peer, proto::Command c, std::string_view body) {
    using proto::Command;
    const auto now = Clock::now();
    switch (c) {
        case Command::hello: return worker_hello(peer, body, now);
        case Command::ready: {
            auto m = proto::decode_ready(body);
            if (!m) return drop(peer, Side::backend, m.error(), c);
            if (!scheduler_.ready(peer, *m, now)) (void)send_to(backend_, peer, Command::reset);
            return;
        }
        case Command::heartbeat: return worker_heartbeat(peer, body, now);
        case Command::bye: {
            auto m = proto::decode_bye(body);
            if (!m) return drop(peer, Side::backend, m.error(), c);
            remove_worker(peer, "said bye", false, m->ids);
            return;
        }
        case Command::retry: return worker_retry(peer, body, now);
        case Command::give_back: {
            auto m = proto::decode_ids(body);
            if (!m) return drop(peer, Side::backend, m.error(), c);
            log_->debug("task.returned n={} worker={}", m->ids.size(), scheduler_.describe_worker(peer));
            if (!scheduler_.give_back(peer, m->ids, now)) (void)send_to(backend_, peer, Command::reset);
            return;
        }
        case Command::result: {
            // Results whose sink the worker cannot reach: to the producer
            // over its own connection (or, for a detached task, to its sink
            // from here).
            auto m = proto::decode_results(body);
            if (!m) return drop(peer, Side::backend, m.error(), c);
            forward_results(peer, std::move(m->results));
            return;
        }
        case Command::lost: {
            auto m = proto::decode_lost(body);
            if (!m) return drop(peer, Side::backend, m.error(), c);
            auto finals = scheduler_.remove_lost_worker(m->worker, m->key);
            if (!finals) {
                if (count_drop(peer, "lost_refused", 1))
                    log_->warn(
                        "broker.lost_refused peer={} id={} (a LOST without the key that worker's HELLO "
                        "gave: only its own supervisor may report it; ignored, logged once per peer)",
                        to_hex_text(peer), m->worker);
                return;
            }
            log_->warn("worker.lost id={} reported_by_supervisor", m->worker);
            report(std::move(*finals));
            live_workers_ = scheduler_.worker_count();
            return;
        }
        default: return drop(peer, Side::backend, proto::DecodeError::unexpected, c);
    }
}

void BrokerImpl::worker_hello(const std::string& peer, std::string_view body, Clock::time_point now) {
    auto m = proto::decode_hello(body);
    if (!m) return drop(peer, Side::backend, m.error(), proto::Command::hello);
    log_->info("worker.joined id={} host={} pid={} pool={} slots={} tasks={}", m->worker, m->host, m->pid, m->pool,
               m->slots, m->tasks.size());
    // A worker registering again just after this broker was stopped
    // did so because of that silence: the tasks it holds run on there.
    const bool after_stall = stall_meter_.stalls() > 0 && now - last_stall_ <= config_.heartbeat * config_.liveness;
    report(scheduler_.hello(peer, std::move(*m), now, after_stall));
    live_workers_ = scheduler_.worker_count();
}

void BrokerImpl::worker_heartbeat(const std::string& peer, std::string_view body, Clock::time_point now) {
    auto m = proto::decode_worker_heartbeat(body);
    if (!m) return drop(peer, Side::backend, m.error(), proto::Command::heartbeat);
    if (!*m) {  // a worker that does not say what it holds
        if (!scheduler_.seen(peer, now)) (void)send_to(backend_, peer, proto::Command::reset);
        return;
    }
    const auto recovered = scheduler_.totals().recovered;
    auto finals = scheduler_.worker_holds(peer, **m, now);
    if (!finals) return (void)send_to(backend_, peer, proto::Command::reset);
    if (const auto n = scheduler_.totals().recovered - recovered; n > 0) {
        log_->warn(
            "worker.unsettled id={} n={} (the worker holds none of these tasks and no sink has "
            "settled them: their outcomes were lost on the way; they run again)",
            scheduler_.describe_worker(peer), n);
        next_retry_ = now;
    }
    report(std::move(*finals));
}

void BrokerImpl::worker_retry(const std::string& peer, std::string_view body, Clock::time_point now) {
    auto m = proto::decode_ids(body);
    if (!m) return drop(peer, Side::backend, m.error(), proto::Command::retry);
    log_->debug("task.retry n={}", m->ids.size());
    auto finals = scheduler_.retry(peer, m->ids, now);
    if (!finals) return (void)send_to(backend_, peer, proto::Command::reset);
    report(std::move(*finals));
    next_retry_ = now;  // recompute the next due time
}

void BrokerImpl::remove_worker(const std::string& identity, const std::string& reason, bool died,
                               const std::vector<std::string>& finished) {
    const auto held = scheduler_.held_by(identity);
    log_->info("worker.removed id={} reason=\"{}\" held={}", scheduler_.describe_worker(identity), reason, held);
    report(scheduler_.remove_worker(identity, died, finished));
    live_workers_ = scheduler_.worker_count();
}

void BrokerImpl::dispatch_ready_tasks() {
    // A refused task gives its worker's credit back: dispatch again then, or
    // the tasks queued behind it would wait for the next message or tick.
    bool refused = true;
    while (refused) {
        refused = false;
        for (auto& batch : scheduler_.dispatch()) refused = send_dispatch(batch) || refused;
    }
}

bool BrokerImpl::send_dispatch(const Scheduler::Batch& batch) {
    // The worker's limit too: ZeroMQ drops a peer that sends it more than
    // its ZMQ_MAXMSGSIZE, and both sides would take that for a dead connection.
    const auto accepts = batch.accepts;
    const auto max_bytes = accepts == 0
                               ? config_.max_message_bytes
                               : std::min<std::int64_t>(config_.max_message_bytes, static_cast<std::int64_t>(accepts));
    const std::size_t limit = batch_byte_limit(max_bytes);
    const auto& tasks = batch.tasks;
    bool refused = false;
    // One message per run of tasks that fits the byte limit.
    std::size_t begin = 0;
    while (begin < tasks.size()) {
        std::size_t bytes = wire_size(tasks[begin]);
        if (accepts != 0 && bytes + k_entry_overhead > accepts) {
            refused = refuse_too_large(batch, tasks[begin], bytes) || refused;
            ++begin;
            continue;
        }
        std::size_t end = begin + 1;
        for (; end < tasks.size(); ++end) {
            const auto size = wire_size(tasks[end]);
            if (bytes + size > limit) break;
            bytes += size;
        }
        auto body = proto::encode_message(tasks.data() + begin, end - begin);
        const auto st = send_to(backend_, batch.worker, proto::Command::dispatch, body);
        if (st != SendStatus::sent) {
            const auto first = tasks.begin() + static_cast<std::ptrdiff_t>(begin);
            scheduler_.undo_dispatch(Scheduler::Batch{batch.worker, {first, tasks.end()}});
            if (st == SendStatus::unreachable) remove_worker(batch.worker, "unreachable");
            break;
        }
        begin = end;
    }
    return refused;
}

bool BrokerImpl::refuse_too_large(const Scheduler::Batch& batch, const proto::TaskRef& task, std::size_t bytes) {
    const auto accepts = batch.accepts;
    const auto worker = scheduler_.describe_worker(batch.worker);
    std::string error = "task too large for worker " + worker + ": about " + std::to_string(bytes) +
                        " bytes, and it accepts messages of at most " + std::to_string(accepts) +
                        " (its --max-message-bytes)";
    auto f = scheduler_.refuse_dispatched(batch.worker, task.id, std::move(error));
    if (!f) return false;
    log_->warn("task.too_large id={} worker={} bytes={} accepts={}", f->outcome.id, worker, bytes, accepts);
    std::vector<FinalOutcome> finals;
    finals.push_back(std::move(*f));
    report(std::move(finals));
    return true;
}

}  // namespace drover
