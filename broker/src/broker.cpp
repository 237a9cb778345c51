// The broker's poll loop: decode, hand to the Scheduler, send what it returns.
#include "broker_impl.hpp"
#include "internal/memory.hpp"
#include "internal/unpack.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <stdexcept>

#include <unistd.h>

namespace drover {

namespace {

constexpr int k_drain_limit = 4096;  // messages read from one socket before serving the other

// Messages queued for one frontend peer (its ZMQ_SNDHWM). Replies past it
// are dropped and counted (dropped.unread_replies), so that a client that
// sends requests and never reads the answers holds no more than this here;
// a client that reads has its own receive queue.
constexpr int k_frontend_send_hwm = 100;
// Messages queued from one frontend peer before libzmq stops reading its
// connection: a client that floods SUBMITs waits in its own buffers, not in
// the broker's (a SUBMIT carries up to 1,000 tasks).
constexpr int k_frontend_receive_hwm = 1000;
// Free heap above which a broker that still holds tasks gives memory back,
// once its input is down to a trickle (fewer than k_quiet_messages a tick).
constexpr std::size_t k_trim_free_bytes = 32 * 1024 * 1024;
constexpr std::uint64_t k_quiet_messages = 256;
// ACCEPTED and REJECTED ids kept for one producer while its connection is
// full; more are dropped and counted.
constexpr std::size_t k_max_unsent_reply_ids = 100'000;
// Ids in one ACCEPTED or REJECTED message, and their bytes at most (a
// client's --max-message-bytes may be as low as 4 KiB; a SUBMIT's answer
// fits in about as much as its SUBMIT took).
constexpr std::size_t k_reply_ids = 1000;
constexpr std::size_t k_reply_bytes = 64 * 1024;
// Messages queued for one sink that does not read (broker-made outcomes,
// up to 1,024 a message, and forwarded results); the rest are sent again
// on the resend schedule.
constexpr int k_sink_send_hwm = 10'000;

std::string to_hex(std::string_view bytes) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned char b : bytes) {
        out.push_back(digits[b >> 4]);
        out.push_back(digits[b & 0xf]);
    }
    return out;
}

std::string id_of(const zmq::message_t& m) { return std::string(static_cast<const char*>(m.data()), m.size()); }

void write_endpoints_file(const std::string& path, const std::string& frontend, const std::string& backend) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp);
        if (!out) throw std::runtime_error("cannot write endpoints file '" + path + "'");
        out << nlohmann::json{{"frontend", frontend}, {"backend", backend}, {"pid", ::getpid()}}.dump() << "\n";
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
        throw std::runtime_error("cannot write endpoints file '" + path + "'");
}

}  // namespace

BrokerImpl::BrokerImpl(zmq::context_t& ctx, BrokerConfig config, Logger log)
    : ctx_(ctx),
      config_(std::move(config)),
      log_(std::move(log)),
      frontend_(ctx, zmq::socket_type::router),
      backend_(ctx, zmq::socket_type::router),
      instance_(random_hex(8)),
      sinks_(ctx, /*linger_ms=*/1000, /*sndtimeo_ms=*/-1, k_sink_send_hwm),
      scheduler_(SchedulerLimits{config_.max_queued, config_.heartbeat, config_.liveness}),
      frontend_guard_(config_.security.get(), Domain::producers, log_),
      backend_guard_(config_.security.get(), Domain::workers, log_) {
    sinks_.secure_with(config_.security.get());
    configure_router(frontend_, config_.max_message_bytes);
    frontend_.set(zmq::sockopt::sndhwm, k_frontend_send_hwm);
    frontend_.set(zmq::sockopt::rcvhwm, k_frontend_receive_hwm);
    // A producer keeps its routing id across reconnects: the new connection takes over.
    frontend_.set(zmq::sockopt::router_handover, 1);
    configure_router(backend_, config_.max_message_bytes);
}

BrokerImpl::~BrokerImpl() = default;

void BrokerImpl::bind() {
    const auto bind_one = [&](zmq::socket_t& s, Domain domain, const std::string& ep, const char* flag) {
        try {
            bind_server(ctx_, s, config_.security.get(), domain, ep);
        } catch (const zmq::error_t& e) {
            throw BindError(std::string("cannot bind ") + flag + " " + ep + ": " + e.what());
        }
    };
    bind_one(frontend_, Domain::producers, config_.frontend, "--frontend");
    bind_one(backend_, Domain::workers, config_.backend, "--backend");
    warn_if_exposed(log_, config_.security.get(), {config_.frontend, config_.backend});
    const auto frontend_bound = last_endpoint(frontend_), backend_bound = last_endpoint(backend_);
    frontend_ep_ = connectable(frontend_bound);
    backend_ep_ = connectable(backend_bound);
    if (!config_.endpoints_file.empty()) write_endpoints_file(config_.endpoints_file, frontend_ep_, backend_ep_);
    // Bound on every address: said so, with the address a local client uses.
    const auto shown = [](const std::string& bound, const std::string& local) {
        return bound == local ? bound : bound + " (here: " + local + ")";
    };
    log_->info("broker.listening frontend={} backend={} max_queued={} heartbeat_ms={} liveness={}",
               shown(frontend_bound, frontend_ep_), shown(backend_bound, backend_ep_), config_.max_queued,
               config_.heartbeat.count(), config_.liveness);
}

void BrokerImpl::run(const StopSource& stop) {
    next_tick_ = Clock::now() + config_.heartbeat;
    // Both sockets are sent on, so the poller asks them at every wait.
    Poller poller;
    constexpr std::size_t k_frontend = 0, k_backend = 1;
    poller.watch(k_frontend, frontend_, Poller::Use::send_and_receive);
    poller.watch(k_backend, backend_, Poller::Use::send_and_receive);
    poller.watch(2, stop.fd());
    stall_meter_ = StallMeter(config_.heartbeat);
    while (!stop.stop_requested()) {
        auto wait = std::chrono::duration_cast<Millis>(std::min(next_tick_, next_retry_) - Clock::now()) + Millis(1);
        if (wait.count() < 0) wait = Millis(0);
        stall_meter_.will_wait(wait);
        poller.wait(wait);
        notice_stall(Clock::now());
        for (const auto& w :
             backend_guard_.revoked()) {  // its tasks run again; RESET makes it reconnect, and be refused
            remove_worker(w, "key revoked");
            (void)send_to(backend_, w, proto::Command::reset);
        }
        (void)frontend_guard_.revoked();  // a producer whose messages are dropped is gone after its silence
        bool drained = true;
        // After a stall, SETTLEs first: a worker registering again keeps only
        // its unsettled tasks (Scheduler::hello), so fewer settled ones stand in for running ones.
        if (catching_up_ && poller.ready(k_frontend)) drained = on_frontend() && drained;
        if (poller.ready(k_backend)) drained = on_backend() && drained;
        if (!catching_up_ && poller.ready(k_frontend)) drained = on_frontend() && drained;
        // A flood that never lets it drain must not stop expiry for good: a window at most.
        if (drained || Clock::now() - last_stall_ > config_.heartbeat * config_.liveness) catching_up_ = false;
        if (Clock::now() >= next_retry_) next_retry_ = scheduler_.release_retries(Clock::now());
        dispatch_ready_tasks();
        flush_replies();
        flush_outcomes();
        const auto now = Clock::now();
        notice_stall(now);  // a stop during this turn: before any peer is judged at `now`
        if (now >= next_tick_) tick(now);
    }
    log_->info("broker.stopping workers={} held={}", scheduler_.worker_count(), scheduler_.task_count());
    for (const auto& w : scheduler_.worker_identities()) (void)send_to(backend_, w, proto::Command::bye);
    for (const auto& [p, seen] : producers_) (void)send_to(frontend_, p, proto::Command::bye);
}

bool BrokerImpl::count_drop(const std::string& peer, const std::string& reason, std::size_t n) {
    dropped_[reason] += n;
    if (logged_drops_.size() > 10000) logged_drops_.clear();  // bounded; may log a peer again
    return logged_drops_.emplace(peer, reason).second;
}

void BrokerImpl::drop(const std::string& peer, const char* socket, proto::DecodeError reason) {
    const std::string why = proto::decode_error_name(reason);
    if (count_drop(peer, why, 1))
        log_->warn("broker.dropped socket={} peer={} reason={} (logged once per peer){}", socket, to_hex(peer), why,
                   reason == proto::DecodeError::wrong_version
                       ? ": a peer of another drover release; run the same release on broker, workers and "
                         "producers"
                       : "");
}

void BrokerImpl::refuse(const std::string& peer, const char* what, std::size_t n, bool proofs,
                        const std::string& first_id) {
    if (count_drop(peer, "not_owner", n))
        log_->warn(
            "broker.not_owner peer={} command={} ids={} first={} proofs={} (tasks of another producer, or "
            "a proof that does not match: ignored; logged once per peer)",
            to_hex(peer), what, n, first_id, proofs);
}

bool BrokerImpl::on_frontend() {
    std::vector<zmq::message_t> frames;
    for (DrainBudget budget(k_drain_limit); budget.more();) {
        frames.clear();
        if (!zmq::recv_multipart(frontend_, std::back_inserter(frames), zmq::recv_flags::dontwait)) return true;
        ++received_;
        const std::string peer = id_of(frames[0]);
        if (!frontend_guard_.admit(peer, frames.back())) continue;
        if (frames.size() < 2 || frames.size() > 3) {
            drop(peer, "frontend", proto::DecodeError::bad_frames);
            continue;
        }
        auto cmd = proto::parse_header(frames[1]);
        if (!cmd) {
            drop(peer, "frontend", cmd.error());
            continue;
        }
        handle_frontend(peer, *cmd, frames.size() == 3 ? proto::view(frames[2]) : std::string_view{});
    }
    return false;
}

bool BrokerImpl::on_backend() {
    std::vector<zmq::message_t> frames;
    for (DrainBudget budget(k_drain_limit); budget.more();) {
        frames.clear();
        if (!zmq::recv_multipart(backend_, std::back_inserter(frames), zmq::recv_flags::dontwait)) return true;
        ++received_;
        const std::string peer = id_of(frames[0]);
        if (!backend_guard_.admit(peer, frames.back())) continue;
        if (frames.size() < 2 || frames.size() > 3) {
            drop(peer, "backend", proto::DecodeError::bad_frames);
            continue;
        }
        auto cmd = proto::parse_header(frames[1]);
        if (!cmd) {
            drop(peer, "backend", cmd.error());
            continue;
        }
        handle_backend(peer, *cmd, frames.size() == 3 ? proto::view(frames[2]) : std::string_view{});
    }
    return false;
}

void BrokerImpl::handle_frontend(const std::string& peer, proto::Command c, std::string_view body) {
    using proto::Command;
    const auto now = Clock::now();
    switch (c) {
        case Command::submit: {
            std::string_view reply_to;  // the batch's, in `body`
            auto m = proto::decode_submit(body, reply_to);
            if (!m) return drop(peer, "frontend", m.error());
            const std::string producer = producer_of(peer);
            producers_[producer] = now;
            auto result = scheduler_.submit(producer, std::move(m->tasks), now, reply_to);
            report(std::move(result.finals));
            if (!result.acknowledged.empty()) keep_reply(producer, accepted_[producer], result.acknowledged);
            for (auto& [reason, ids] : result.rejected) {
                log_->debug("broker.rejected n={} reason={}", ids.size(), reason);
                keep_reply(producer, rejected_[producer][reason], ids);
            }
            return;
        }
        case Command::settle: {
            auto m = proto::decode_settle(body);
            if (!m) return drop(peer, "frontend", m.error());
            std::string first;
            const auto refused = scheduler_.settle(producer_of(peer), m->ids, m->proofs, &first);
            if (refused > 0) refuse(peer, "settle", refused, !m->proofs.empty(), first);
            scheduler_.totals().timed_out += m->timed_out;
            return;
        }
        case Command::cancel: {
            auto m = proto::decode_ids(body);
            if (!m) return drop(peer, "frontend", m.error());
            std::size_t refused = 0;
            report(scheduler_.cancel(producer_of(peer), m->ids, &refused));
            if (refused > 0) refuse(peer, "cancel", refused, false, {});
            return;
        }
        case Command::status: {
            if (!proto::decode_empty(body)) return drop(peer, "frontend", proto::DecodeError::bad_body);
            const auto doc = nlohmann::json::to_msgpack(status_json(now));
            reply(peer, Command::status_reply, std::string_view(reinterpret_cast<const char*>(doc.data()), doc.size()));
            return;
        }
        case Command::heartbeat: {
            if (!proto::decode_empty(body)) return drop(peer, "frontend", proto::DecodeError::bad_body);
            producers_[peer] = now;
            reply(peer, Command::heartbeat, proto::encode_heartbeat(instance_));
            return;
        }
        case Command::bye: forget_producer(peer); return;
        default: return drop(peer, "frontend", proto::DecodeError::unexpected);
    }
}

void BrokerImpl::handle_backend(const std::string& peer, proto::Command c, std::string_view body) {
    using proto::Command;
    const auto now = Clock::now();
    switch (c) {
        case Command::hello: {
            auto m = proto::decode_hello(body);
            if (!m) return drop(peer, "backend", m.error());
            log_->info("worker.joined id={} host={} pid={} pool={} slots={} tasks={}", m->worker, m->host, m->pid,
                       m->pool, m->slots, m->tasks.size());
            // A worker registering again just after this broker was stopped
            // did so because of that silence: the tasks it holds run on there.
            const bool after_stall =
                stall_meter_.stalls() > 0 && now - last_stall_ <= config_.heartbeat * config_.liveness;
            report(scheduler_.hello(peer, std::move(*m), now, after_stall));
            live_workers_ = scheduler_.worker_count();
            return;
        }
        case Command::ready: {
            auto m = proto::decode_ready(body);
            if (!m) return drop(peer, "backend", m.error());
            if (!scheduler_.ready(peer, *m, now)) (void)send_to(backend_, peer, Command::reset);
            return;
        }
        case Command::heartbeat: {
            auto m = proto::decode_worker_heartbeat(body);
            if (!m) return drop(peer, "backend", m.error());
            if (!*m) {  // a worker that does not say what it holds
                if (!scheduler_.seen(peer, now)) (void)send_to(backend_, peer, Command::reset);
                return;
            }
            const auto recovered = scheduler_.totals().recovered;
            auto finals = scheduler_.worker_holds(peer, **m, now);
            if (!finals) return (void)send_to(backend_, peer, Command::reset);
            if (const auto n = scheduler_.totals().recovered - recovered; n > 0) {
                log_->warn(
                    "worker.unsettled id={} n={} (the worker holds none of these tasks and no sink has "
                    "settled them: their outcomes were lost on the way; they run again)",
                    scheduler_.describe_worker(peer), n);
                next_retry_ = now;
            }
            report(std::move(*finals));
            return;
        }
        case Command::bye: {
            auto m = proto::decode_bye(body);
            if (!m) return drop(peer, "backend", m.error());
            remove_worker(peer, "said bye", false, m->ids);
            return;
        }
        case Command::retry: {
            auto m = proto::decode_ids(body);
            if (!m) return drop(peer, "backend", m.error());
            log_->debug("task.retry n={}", m->ids.size());
            auto finals = scheduler_.retry(peer, m->ids, now);
            if (!finals) return (void)send_to(backend_, peer, Command::reset);
            report(std::move(*finals));
            next_retry_ = now;  // recompute the next due time
            return;
        }
        case Command::give_back: {
            auto m = proto::decode_ids(body);
            if (!m) return drop(peer, "backend", m.error());
            log_->debug("task.returned n={} worker={}", m->ids.size(), scheduler_.describe_worker(peer));
            if (!scheduler_.give_back(peer, m->ids, now)) (void)send_to(backend_, peer, Command::reset);
            return;
        }
        case Command::result: {
            // Results whose sink the worker cannot reach: to the producer
            // over its own connection (or, for a detached task, to its sink
            // from here).
            auto m = proto::decode_results(body);
            if (!m) return drop(peer, "backend", m.error());
            forward_results(peer, std::move(m->results));
            return;
        }
        case Command::lost: {
            auto m = proto::decode_lost(body);
            if (!m) return drop(peer, "backend", m.error());
            log_->warn("worker.lost id={} reported_by_supervisor", m->worker);
            report(scheduler_.remove_worker_by_id(m->worker));
            live_workers_ = scheduler_.worker_count();
            return;
        }
        default: return drop(peer, "backend", proto::DecodeError::unexpected);
    }
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
    // its ZMQ_MAXMSGSIZE, which looked to both sides like a dead connection,
    // and the task ended `lost` after three of them.
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
            const auto worker = scheduler_.describe_worker(batch.worker);
            std::string error = "task too large for worker " + worker + ": about " + std::to_string(bytes) +
                                " bytes, and it accepts messages of at most " + std::to_string(accepts) +
                                " (its --max-message-bytes)";
            if (auto f = scheduler_.refuse_dispatched(batch.worker, tasks[begin].id, std::move(error))) {
                log_->warn("task.too_large id={} worker={} bytes={} accepts={}", f->outcome.id, worker, bytes, accepts);
                std::vector<FinalOutcome> finals;
                finals.push_back(std::move(*f));
                report(std::move(finals));
                refused = true;
            }
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

// A client's callers send lone tasks on a connection of their own:
// its routing id is the client's, "P" and 8 characters, with "S" for "P".
std::string BrokerImpl::producer_of(const std::string& peer) {
    if (peer.size() != 9 || peer[0] != 'S') return peer;
    std::string producer = peer;
    producer[0] = 'P';
    return producer;
}

void BrokerImpl::forget_producer(const std::string& peer) {
    producers_.erase(peer);
    accepted_.erase(peer);
    rejected_.erase(peer);
}

void BrokerImpl::reply(const std::string& peer, proto::Command c, std::string_view body) {
    if (send_to(frontend_, peer, c, body) == SendStatus::would_block) ++dropped_["unread_replies"];
}

void BrokerImpl::keep_reply(const std::string& producer, std::vector<std::string>& kept,
                            std::vector<std::string>& ids) {
    std::size_t held = 0;
    for (const auto& [reason, r] : rejected_[producer]) held += r.size();
    held += accepted_[producer].size();
    const std::size_t room = k_max_unsent_reply_ids - std::min(held, k_max_unsent_reply_ids);
    const std::size_t n = std::min(room, ids.size());
    kept.insert(kept.end(), std::make_move_iterator(ids.begin()),
                std::make_move_iterator(ids.begin() + static_cast<std::ptrdiff_t>(n)));
    if (n < ids.size()) {
        if (count_drop(producer, "unread_replies", ids.size() - n))
            log_->warn(
                "broker.unread_replies peer={} (it does not read its answers: more than {} ids wait for "
                "it; the rest are dropped and counted; logged once per peer)",
                to_hex(producer), k_max_unsent_reply_ids);
    }
}

namespace {

// Sends `ids` from the front in messages of at most k_reply_ids ids and
// k_reply_bytes; erases what was sent. Returns false once the peer is full.
template <class Encode>
bool send_ids(zmq::socket_t& router, const std::string& peer, proto::Command c, std::vector<std::string>& ids,
              Encode encode) {
    std::size_t sent = 0;
    bool room = true;
    while (sent < ids.size()) {
        std::size_t end = sent, bytes = 0;
        while (end < ids.size() && end - sent < k_reply_ids &&
               (end == sent || bytes + ids[end].size() <= k_reply_bytes))
            bytes += ids[end++].size() + 2;
        std::vector<std::string> batch(ids.begin() + static_cast<std::ptrdiff_t>(sent),
                                       ids.begin() + static_cast<std::ptrdiff_t>(end));
        if (send_to(router, peer, c, encode(batch)) != SendStatus::sent) {
            room = false;
            break;
        }
        sent = end;
    }
    ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(sent));
    return room;
}

}  // namespace

void BrokerImpl::flush_replies() {
    // A reply its producer cannot take now is kept and sent again at the
    // next turn, until the producer is gone: its tasks may have come on its
    // submit connection, back from a break before its own connection is.
    for (auto& [peer, ids] : accepted_) {
        if (ids.empty()) continue;
        (void)send_ids(frontend_, peer, proto::Command::accepted, ids,
                       [](std::vector<std::string>& batch) { return proto::encode(proto::Ids{std::move(batch)}); });
    }
    for (auto it = rejected_.begin(); it != rejected_.end();) {
        auto& by_reason = it->second;
        for (auto r = by_reason.begin(); r != by_reason.end();) {
            const std::string& reason = r->first;
            (void)send_ids(frontend_, it->first, proto::Command::rejected, r->second,
                           [&](std::vector<std::string>& batch) {
                               return proto::encode(proto::Rejected{std::move(batch), reason});
                           });
            r = r->second.empty() ? by_reason.erase(r) : std::next(r);
        }
        it = by_reason.empty() ? rejected_.erase(it) : std::next(it);
    }
}

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
                    to_hex(worker), o.id);
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
                   to_hex(worker));
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
    log_->warn("broker.forward_failed worker={} results={} (their tasks run again)", to_hex(worker), failed.size());
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

void BrokerImpl::notice_stall(Clock::time_point now) {
    const auto stall = stall_meter_.check(now);
    if (stall == Clock::duration::zero()) return;
    scheduler_.stalled(stall, now);
    for (auto& [producer, seen] : producers_) seen = StallMeter::shifted(seen, stall, now);
    catching_up_ = true;
    last_stall_ = now;
    log_->warn(
        "broker.stalled ms={} (this process did not run: its peers' liveness deadlines move on as much, and "
        "it reads what waited before it judges any peer)",
        std::chrono::duration_cast<Millis>(stall).count());
}

void BrokerImpl::expire_peers(Clock::time_point now) {
    for (const auto& identity : scheduler_.expired(now)) {
        ++scheduler_.totals().workers_expired;
        remove_worker(identity, "missed heartbeats");
    }
    const auto window = config_.heartbeat * config_.liveness;
    for (auto it = producers_.begin(); it != producers_.end();) {
        // At least 3 s, so that a producer on default 1 s heartbeats outlives a
        // broker run with short ones.
        if (now - it->second <= std::max<Clock::duration>(window, std::chrono::seconds(3))) {
            ++it;
            continue;
        }
        const std::string peer = (it++)->first;
        auto finals = scheduler_.producer_gone(peer);
        log_->info("producer.gone peer={} cancelled={}", to_hex(peer), finals.size());
        report(std::move(finals));
        forget_producer(peer);
    }
    // A sink that has not settled a broker-made outcome is sent it again (and given up on in the end).
    auto again = scheduler_.reports_due(now);
    if (!again.empty()) log_->info("broker.resending_outcomes n={} (not settled yet)", again.size());
    report(std::move(again));
}

void BrokerImpl::tick(Clock::time_point now) {
    next_tick_ = now + config_.heartbeat;
    // Just after a stall, a peer's messages may still wait unread: peers
    // are judged at a later tick.
    if (!catching_up_) expire_peers(now);
    for (const auto& identity : scheduler_.worker_identities()) {
        if (send_to(backend_, identity, proto::Command::heartbeat) == SendStatus::unreachable)
            remove_worker(identity, "unreachable");
    }
    flush_outcomes();
    // Idle after traffic: give the heap back to the system, so that a
    // drained backlog or a flood of bad input does not stay in RSS.
    if (scheduler_.task_count() == 0 && (scheduler_.compact() || received_ != received_at_trim_)) {
        received_at_trim_ = received_;
        // The reply buffers keep the capacity of the largest burst otherwise
        // (unless they hold replies still to send).
        if (std::all_of(accepted_.begin(), accepted_.end(), [](const auto& a) { return a.second.empty(); }))
            decltype(accepted_)().swap(accepted_);
        if (rejected_.empty()) decltype(rejected_)().swap(rejected_);
        decltype(outcomes_)().swap(outcomes_);
        const bool released = trim_heap();
        log_->debug("broker.trimmed released={}", released);
    } else if (received_ - received_at_tick_ < k_quiet_messages && received_ != received_at_trim_) {
        // Tasks held, a burst over: what carried it (input queues, decoded
        // batches) is free but would stay in RSS.
        received_at_trim_ = received_;
        if (trim_heap(k_trim_free_bytes)) log_->debug("broker.trimmed released=true held={}", scheduler_.task_count());
    }
    received_at_tick_ = received_;
}

nlohmann::json BrokerImpl::status_json(Clock::time_point now) const {
    auto doc = scheduler_.status(now);
    doc["dropped"] = nlohmann::json(dropped_);
    doc["producers"] = producers_.size();
    doc["frontend"] = frontend_ep_;
    doc["backend"] = backend_ep_;
    doc["pid"] = ::getpid();
    return doc;
}

Broker::Broker(zmq::context_t& ctx, BrokerConfig config, Logger log)
    : impl_(std::make_unique<BrokerImpl>(ctx, std::move(config), std::move(log))) {}
Broker::~Broker() = default;
void Broker::bind() { impl_->bind(); }
void Broker::run(const StopSource& stop) { impl_->run(stop); }
const std::string& Broker::frontend_endpoint() const { return impl_->frontend_endpoint(); }
const std::string& Broker::backend_endpoint() const { return impl_->backend_endpoint(); }
std::size_t Broker::live_workers() const { return impl_->live_workers(); }

}  // namespace drover
