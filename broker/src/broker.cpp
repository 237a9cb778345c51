// The broker's poll loop: reads both sockets, hands each message to its handler, keeps time.
#include "broker_impl.hpp"
#include "internal/memory.hpp"
#include "internal/proof.hpp"

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
// Messages queued for one sink that does not read (broker-made outcomes,
// up to 1,024 a message, and forwarded results); the rest are sent again
// on the resend schedule.
constexpr int k_sink_send_hwm = 10'000;

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
    open_journal();
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
    if (journal_ && journal_->wake_fd() >= 0) poller.watch(3, journal_->wake_fd());
    stall_meter_ = StallMeter(config_.heartbeat);
    while (!stop.stop_requested()) {
        auto until = std::min(next_tick_, next_retry_);
        if (journal_) until = std::min(until, journal_->next_commit());
        auto wait = std::chrono::duration_cast<Millis>(until - Clock::now()) + Millis(1);
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
        if (journal_) commit_journal(Clock::now());
        flush_replies();
        flush_outcomes();
        const auto now = Clock::now();
        notice_stall(now);  // a stop during this turn: before any peer is judged at `now`
        if (now >= next_tick_) tick(now);
    }
    log_->info("broker.stopping workers={} held={}", scheduler_.worker_count(), scheduler_.task_count());
    close_journal();
    for (const auto& w : scheduler_.worker_identities()) (void)send_to(backend_, w, proto::Command::bye);
    for (const auto& [p, seen] : producers_) (void)send_to(frontend_, p, proto::Command::bye);
}

bool BrokerImpl::on_frontend() {
    return drain(
        Side::frontend, frontend_guard_,
        [this](const std::string& peer, proto::Command c, std::string_view body) { handle_frontend(peer, c, body); });
}

bool BrokerImpl::on_backend() {
    return drain(
        Side::backend, backend_guard_,
        [this](const std::string& peer, proto::Command c, std::string_view body) { handle_backend(peer, c, body); });
}

namespace {

// The command byte of a "DRV" header of any version, for an ERROR's
// `command`; none for anything else. Only on the paths that drop.
std::optional<std::uint8_t> drv_command(std::string_view header) {
    if (header.size() != proto::k_header_size || header.substr(0, 3) != "DRV") return std::nullopt;
    return static_cast<std::uint8_t>(header[4]);
}

}  // namespace

template <class Handle>
bool BrokerImpl::drain(Side side, PeerGuard& guard, Handle handle) {
    zmq::socket_t& socket = socket_of(side);
    std::vector<zmq::message_t> frames;
    for (DrainBudget budget(k_drain_limit); budget.more();) {
        frames.clear();
        if (!zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait)) return true;
        ++received_;
        const std::string peer = id_of(frames[0]);
        // A peer whose key was revoked is told nothing: its session is closing.
        if (!guard.admit(peer, frames.back())) continue;
        const auto header = frames.size() >= 2 ? proto::view(frames[1]) : std::string_view{};
        if (frames.size() >= 2 && proto::is_error_header(frames[1])) {
            // Never answered: two peers that answer ERRORs would answer each other for ever.
            if (count_drop(peer, "error_received", 1))
                log_->warn(
                    "broker.error_received socket={} peer={} (an ERROR sent to the broker: not answered; "
                    "logged once per peer)",
                    side == Side::frontend ? "frontend" : "backend", to_hex_text(peer));
            continue;
        }
        if (frames.size() < 2 || frames.size() > 3) {
            drop(peer, side, proto::DecodeError::bad_frames, drv_command(header));
            continue;
        }
        auto cmd = proto::parse_header(frames[1]);
        if (!cmd) {
            drop(peer, side, cmd.error(), drv_command(header), header.substr(0, 4));
            continue;
        }
        handle(peer, *cmd, frames.size() == 3 ? proto::view(frames[2]) : std::string_view{});
    }
    return false;
}

bool BrokerImpl::count_drop(const std::string& peer, const std::string& reason, std::size_t n) {
    dropped_[reason] += n;
    if (logged_drops_.size() > 10000) logged_drops_.clear();  // bounded; may log a peer again
    return logged_drops_.emplace(peer, reason).second;
}

void BrokerImpl::drop(const std::string& peer, Side side, proto::DecodeError reason,
                      std::optional<std::uint8_t> command, std::string_view version) {
    const std::string why = proto::decode_error_name(reason);
    const bool answered = answer_error(peer, side, reason, command, version);
    if (count_drop(peer, why, 1))
        log_->warn("broker.dropped socket={} peer={} reason={} answered={} (logged once per peer){}",
                   side == Side::frontend ? "frontend" : "backend", to_hex_text(peer), why, answered,
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
            to_hex_text(peer), what, n, first_id, proofs);
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
        log_->info("producer.gone peer={} cancelled={}", to_hex_text(peer), finals.size());
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
    forget_old_errors(now);
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
    doc["errors_sent"] = errors_sent_;
    doc["producers"] = producers_.size();
    doc["frontend"] = frontend_ep_;
    doc["backend"] = backend_ep_;
    doc["pid"] = ::getpid();
    doc["journal"] = journal_status();
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
