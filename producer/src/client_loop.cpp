// Client: the I/O thread's loop, and the broker's messages to the client.
#include "client_impl.hpp"

#include <algorithm>
#include <iterator>

#include <unistd.h>

namespace drover {

namespace {

constexpr std::size_t k_sink = 0, k_broker = 1, k_wake = 2;  // the Poller's items

// Messages read from one socket before the loop serves the others.
constexpr int k_drain_messages = 1024;

}  // namespace

void ClientImpl::io_loop() {
    next_heartbeat_ = Clock::now();
    stall_meter_ = StallMeter(options_.heartbeat);
    bool has_named = false;  // unfinished tasks with a caller's id
    while (take_requests(has_named)) {
        // A caller's id given again after its outcome must reach the broker
        // after the SETTLE of its earlier run (the client's own ids are
        // never given twice).
        if (has_named && !unsent_.empty()) send_settle();
        wait_for_input(send_unsent());
        if (poller_.ready(k_wake)) {
            std::uint64_t n;
            [[maybe_unused]] auto r = ::read(wake_fd_, &n, sizeof n);
        }
        if (poller_.ready(k_sink)) drain_sink();
        if (poller_.ready(k_broker)) drain_broker();
        // Settle once the inputs are drained: one message for many ids.
        const auto now = Clock::now();
        if (settle_now_ || settle_.size() >= k_settle_batch || now >= settle_due()) send_settle();
        if (const auto stall = stall_meter_.check(now); stall != Clock::duration::zero()) after_stall(stall, now);
        if (now >= next_heartbeat_) {
            next_heartbeat_ = now + options_.heartbeat;
            on_tick(now);
        }
    }
    say_goodbye();
}

bool ClientImpl::take_requests(bool& has_named) {
    std::lock_guard lock(mutex_);
    if (unsent_.empty()) {
        unsent_.swap(inbox_);
    } else {
        unsent_.insert(unsent_.end(), std::make_move_iterator(inbox_.begin()), std::make_move_iterator(inbox_.end()));
        inbox_.clear();
    }
    has_named = pending_.any_named();
    if (!cancel_requests_.empty()) {
        (void)send_message(*broker_, proto::Command::cancel, proto::encode(proto::Ids{cancel_requests_}));
        cancel_requests_.clear();
    }
    return !stopping_;
}

void ClientImpl::wait_for_input(Unsent unsent) {
    poller_.watch(k_sink, sink_, Poller::Use::receive_only);
    poller_.watch(k_broker, *broker_, Poller::Use::send_and_receive);
    poller_.watch(k_wake, wake_fd_);
    auto wait = std::chrono::duration_cast<Millis>(std::min(next_heartbeat_, settle_due()) - Clock::now()) + Millis(1);
    // Room comes with outcomes and with the SETTLE sent after them.
    if (unsent == Unsent::socket_full || unsent == Unsent::no_room) wait = std::min(wait, Millis(1));
    if (unsent == Unsent::backing_off)
        wait = std::min(wait, std::chrono::duration_cast<Millis>(resend_at_ - Clock::now()) + Millis(1));
    wait = std::max(wait, Millis(0));
    stall_meter_.will_wait(wait);
    poller_.wait(wait);
}

void ClientImpl::drain_sink() {
    for (DrainBudget budget(k_drain_messages); budget.more();) {
        frames_.clear();
        if (!zmq::recv_multipart(sink_, std::back_inserter(frames_), zmq::recv_flags::dontwait)) {
            poller_.drained(k_sink);
            return;
        }
        if (!sink_guard_.admit(frames_.back())) continue;
        if (frames_.size() != 2) continue;
        auto cmd = proto::parse_header(frames_[0]);
        if (!cmd || *cmd != proto::Command::result) {
            log_->warn("client.sink_dropped reason=bad_header");
            continue;
        }
        on_results(proto::view(frames_[1]));
    }
}

void ClientImpl::drain_broker() {
    for (DrainBudget budget(k_drain_messages); budget.more();) {
        frames_.clear();
        if (!zmq::recv_multipart(*broker_, std::back_inserter(frames_), zmq::recv_flags::dontwait)) return;
        last_from_broker_ = Clock::now();
        broker_heard_.store(true, std::memory_order_relaxed);
        on_broker_message(frames_);
    }
}

void ClientImpl::after_stall(Clock::duration stall, Clock::time_point now) {
    // Past a liveness window the broker may have taken this producer for
    // gone and forgotten its tasks: they go again.
    last_from_broker_ = StallMeter::shifted(last_from_broker_, stall, now);
    std::lock_guard lock(mutex_);
    const bool resend = stall > options_.heartbeat * options_.liveness && !stopping_;
    log_->warn("client.stalled ms={} resend={}", std::chrono::duration_cast<Millis>(stall).count(),
               resend ? pending_.size() : 0);
    if (resend) resend_unfinished();
}

void ClientImpl::on_tick(Clock::time_point now) {
    forget_read_settles(now);
    // Refused tasks that wait for room (nothing of ours at the broker ends) also end in time.
    if (!unsent_.empty()) expire_refused(now);
    (void)send_message(*broker_, proto::Command::heartbeat);
    {
        std::lock_guard lock(mutex_);
        pending_.shrink_when_idle();
    }
    if (now - last_from_broker_ > options_.heartbeat * options_.liveness) reconnect(now);
}

void ClientImpl::reconnect(Clock::time_point now) {
    std::lock_guard lock(mutex_);
    log_->warn(
        "client.broker_silent broker={} ms={} reconnecting resend={} (is the broker running and "
        "reachable at that address, and, if it runs with --security, does this producer have the "
        "fleet's keys and is its key on the broker's allow-list?)",
        options_.broker, std::chrono::duration_cast<Millis>(now - last_from_broker_).count(), pending_.size());
    connect_broker();
    connect_submit();
    resend_unfinished();
    settle_again();
}

void ClientImpl::say_goodbye() {
    send_settle();
    (void)send_message(*broker_, proto::Command::bye);
    broker_->set(zmq::sockopt::linger, 500);  // let the last SETTLE, CANCEL and BYE leave
}

void ClientImpl::on_broker_message(std::vector<zmq::message_t>& frames) {
    if (frames.empty() || frames.size() > 2) return;
    const std::string_view body = frames.size() == 2 ? proto::view(frames[1]) : std::string_view{};
    auto cmd = proto::parse_header(frames[0]);
    if (!cmd && proto::is_error_header(frames[0])) {  // an ERROR of another protocol version
        (void)broker_errors_.log(log_, "client.broker_error", body);
        return;
    }
    if (!cmd) return;
    switch (*cmd) {
        case proto::Command::accepted: return on_accepted(body);
        case proto::Command::settled: return on_settled(body);
        case proto::Command::rejected: return on_rejected(body);
        case proto::Command::heartbeat: return on_heartbeat(body);
        case proto::Command::result: return on_relayed_results(body);
        case proto::Command::error: (void)broker_errors_.log(log_, "client.broker_error", body); return;
        case proto::Command::bye:
            log_->info("client.broker_bye (broker stopping)");
            last_from_broker_ = Clock::now() - options_.heartbeat * options_.liveness;
            return;
        default: return;  // anything else: liveness only
    }
}

void ClientImpl::on_accepted(std::string_view body) {
    // Only a task whose outcome goes elsewhere ends at ACCEPTED (an id
    // is sent, so counted, before its ACCEPTED can arrive).
    if (pending_.elsewhere() == 0) return;
    auto m = proto::decode_ids(body);
    if (!m) return;
    std::vector<std::pair<std::string, Result>> elsewhere;
    {
        std::lock_guard lock(mutex_);
        for (const auto& id : m->ids) {
            Pending* p = pending_.find(id).pending;
            if (!p) continue;
            p->accepted = true;
            if (p->elsewhere) {
                if (!p->settled) detached_kept_.insert_or_assign(id, p->task);  // until its sink settles it
                Result r;
                r.id = id;
                r.task = p->task.name;
                r.accepted_only = true;
                elsewhere.emplace_back(id, std::move(r));
            }
        }
    }
    if (!elsewhere.empty()) made_room();  // the broker took them
    for (auto& [id, r] : elsewhere) finish(id, std::move(r));
}

void ClientImpl::on_rejected(std::string_view body) {
    auto m = proto::decode_rejected(body);
    if (!m) return;
    if (m->reason == "queue_full") return hold_back(m->ids);
    for (const auto& id : m->ids) {
        Result r;
        r.id = id;
        r.status = proto::Status::rejected;
        r.error = m->reason;
        {
            std::lock_guard lock(mutex_);
            const Pending* p = pending_.find(id).pending;
            if (!p) continue;
            r.task = p->task.name;
            if (p->again)
                log_->warn("client.resend_rejected id={} reason={} (its outcome will not reach its sink)", id,
                           m->reason);
        }
        finish(id, std::move(r));
    }
}

void ClientImpl::on_settled(std::string_view body) {
    auto m = proto::decode_ids(body);
    if (!m) return;
    std::lock_guard lock(mutex_);
    for (const auto& id : m->ids) {
        if (detached_kept_.erase(id) > 0) continue;
        // A broker with a journal sends ACCEPTED once the task is on disk:
        // its sink may have settled it before.
        if (Pending* p = pending_.find(id).pending; p && p->elsewhere) p->settled = true;
    }
}

void ClientImpl::on_heartbeat(std::string_view body) {
    auto instance = proto::decode_heartbeat(body);
    if (!instance || instance->empty()) return;
    if (!broker_instance_.empty() && *instance != broker_instance_) {
        log_->warn("client.broker_restarted resending unfinished tasks, {} of them detached and not yet settled",
                   detached_kept_.size());
        std::lock_guard lock(mutex_);
        resend_unfinished(true);
    }
    broker_instance_ = *instance;
    heartbeat_answered_ = Clock::now();
}

void ClientImpl::on_relayed_results(std::string_view body) {
    if (!results_via_broker_) {
        results_via_broker_ = true;
        log_->warn(
            "client.results_via_broker: some workers cannot reach this producer's sink at {}; their "
            "results come through the broker (slower). Give a reachable address with --sink or "
            "--sink-advertise",
            reply_to_);
    }
    on_results(body);
}

}  // namespace drover
