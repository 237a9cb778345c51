// Client: what the I/O thread sends the broker: SUBMIT batches, the
// queue_full back-off, SETTLE, and resends after a reconnect.
#include "client_impl.hpp"

#include <algorithm>

namespace drover {

namespace {

constexpr std::size_t k_submit_batch = 1000;

// The back-off after a queue_full: it starts here and doubles while
// refusals come with no outcome between them, up to k_max_backoff.
constexpr Millis k_min_backoff{2};
constexpr Millis k_max_backoff{1000};

}  // namespace

void ClientImpl::connect_broker() {
    broker_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
    broker_->set(zmq::sockopt::linger, 0);
    // One routing id for the session, so the broker sees the same producer
    // after a reconnect (and does not declare it gone).
    broker_->set(zmq::sockopt::routing_id, "P" + route_);
    broker_->set(zmq::sockopt::maxmsgsize, options_.max_message_bytes);
    broker_->set(zmq::sockopt::sndhwm, 100000);
    broker_->set(zmq::sockopt::rcvhwm, 100000);
    connect_client(*broker_, options_.security.get(), options_.broker);
    last_from_broker_ = Clock::now();
    broker_heard_.store(false);
}

void ClientImpl::connect_submit() {
    auto s = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::routing_id, "S" + route_);  // the broker's reply goes to "P" + route_
    s->set(zmq::sockopt::sndhwm, 100000);
    connect_client(*s, options_.security.get(), options_.broker);
    std::lock_guard lock(submit_mutex_);
    if (!submit_closed_) submit_socket_ = std::move(s);
}

std::size_t ClientImpl::at_broker() const {
    const std::size_t known = pending_.size() + settle_.size();
    return known - std::min(known, unsent_.size() + inbox_.size());
}

std::size_t ClientImpl::submit_budget() const {
    if (broker_room_ == SIZE_MAX) return SIZE_MAX;
    const std::size_t there = at_broker();
    return broker_room_ > there ? broker_room_ - there : 0;
}

ClientImpl::Unsent ClientImpl::send_unsent() {
    if (unsent_.empty()) return Unsent::none;
    if (Clock::now() < resend_at_) return Unsent::backing_off;
    std::size_t sent = 0;
    std::lock_guard lock(mutex_);
    std::size_t budget = submit_budget();  // after a queue_full, no more than the broker has room for
    const std::size_t limit = batch_byte_limit(options_.max_message_bytes);
    bool full = false;
    while (sent < unsent_.size() && budget > 0) {
        std::vector<proto::TaskRef> batch;
        std::size_t end = sent, bytes = 0;
        const std::size_t most = std::min(k_submit_batch, budget);
        while (end < unsent_.size() && batch.size() < most && (batch.empty() || bytes < limit)) {
            const Pending* p = pending_.find(unsent_[end++]);
            if (!p) continue;  // finished (cancelled, rejected) before it was sent
            batch.push_back(wire_ref(*p));
            bytes += wire_size(batch.back());
        }
        if (!batch.empty()) {
            auto body = proto::encode_message(batch.data(), batch.size());
            if (send_message(*broker_, proto::Command::submit, body) != SendStatus::sent) {
                full = true;  // try again on the next turn of the loop
                break;
            }
            budget -= batch.size();
        }
        sent = end;
    }
    unsent_.erase(unsent_.begin(), unsent_.begin() + static_cast<std::ptrdiff_t>(sent));
    if (unsent_.empty()) return Unsent::none;
    return full ? Unsent::socket_full : Unsent::no_room;
}

void ClientImpl::hold_back(const std::vector<std::string>& ids) {
    const auto now = Clock::now();
    std::vector<std::uint64_t> again;
    std::size_t there = 0;
    {
        std::lock_guard lock(mutex_);
        for (const auto& id : ids)
            if (const Found f = pending_.find(id); f.pending) again.push_back(f.seq);
        // Sent again first, in the order submitted.
        std::sort(again.begin(), again.end());
        unsent_.insert(unsent_.begin(), again.begin(), again.end());
        // The broker took what it holds of ours, and no more: keep to that,
        // growing as outcomes come (widen_broker_room).
        there = at_broker();
        broker_room_ = std::max<std::size_t>(1, there);
        room_growth_ = 0;
    }
    if (stalled_since_ == Clock::time_point{}) stalled_since_ = now;
    // One back-off for the refusals of one round (several SUBMITs may have
    // been refused at once); doubled when they come again after it.
    if (now >= resend_at_) {
        backoff_ = backoff_ == Millis(0) ? k_min_backoff : std::min(backoff_ * 2, k_max_backoff);
        resend_at_ = now + backoff_;
    }
    if (!refused_logged_) {
        refused_logged_ = true;
        log_->warn(
            "client.queue_full n={} at_broker={} backoff_ms={} (the broker's queue is full: tasks are held back "
            "and sent again as it makes room; after {} ms without any they end rejected; logged once)",
            ids.size(), there, backoff_.count(), options_.queue_full_wait.count());
    }
    expire_refused(now);
}

void ClientImpl::made_room() {
    backoff_ = Millis(0);
    stalled_since_ = {};
}

void ClientImpl::widen_broker_room(std::size_t n) {
    if (broker_room_ == SIZE_MAX) return;
    room_growth_ += n;
    while (room_growth_ >= broker_room_) {
        room_growth_ -= broker_room_;
        ++broker_room_;
    }
    if (broker_room_ >= options_.window) broker_room_ = SIZE_MAX;
}

void ClientImpl::expire_refused(Clock::time_point now) {
    if (stalled_since_ == Clock::time_point{} || now - stalled_since_ < options_.queue_full_wait) return;
    std::vector<std::pair<std::string, std::string>> expired;
    {
        std::lock_guard lock(mutex_);
        for (const auto seq : unsent_)
            if (const Pending* p = pending_.find(seq)) expired.emplace_back(p->task.id, p->task.name);
    }
    stalled_since_ = {};  // tasks submitted from now on get a wait of their own
    log_->warn(
        "client.queue_full_gave_up n={} ms={} (the broker took none of this client's tasks and finished none "
        "for that long: the tasks not sent end rejected: queue_full)",
        expired.size(), options_.queue_full_wait.count());
    end_refused(expired);  // their unsent_ entries are skipped once they are not pending
}

void ClientImpl::end_refused(std::vector<std::pair<std::string, std::string>>& expired) {
    for (auto& [id, task] : expired) {
        Result r;
        r.id = id;
        r.task = std::move(task);
        r.status = proto::Status::rejected;
        r.error = "queue_full";
        finish(id, std::move(r));
    }
}

void ClientImpl::resend_unfinished(bool restarted) {
    unsent_.clear();
    broker_room_ = SIZE_MAX;  // another broker, or the same one after a break: its queue is news
    made_room();
    resend_at_ = {};
    if (restarted) pend_kept_detached();
    pending_.for_each([&](std::uint64_t seq, const Pending& p) {
        if (!p.elsewhere || !p.accepted) unsent_.push_back(seq);
    });
    std::sort(unsent_.begin(), unsent_.end());
}

void ClientImpl::pend_kept_detached() {
    // Pending again without a callback: their ACCEPTED moves them back to
    // detached_kept_, a queue_full holds them back as any task.
    for (auto& [id, task] : detached_kept_) {
        if (pending_.find(id).pending) continue;  // submitted again by its caller meanwhile
        std::uint64_t seq = 0;
        Pending& p = pending_.add(std::string(id), true, seq);
        p.task = std::move(task);  // the same id
        p.again = true;
    }
    detached_kept_.clear();
}

Clock::time_point ClientImpl::settle_due() const {
    return settle_.empty() ? Clock::time_point::max() : settle_since_ + k_settle_delay;
}

void ClientImpl::send_settle() {
    if (settle_.empty()) return;
    for (std::size_t i = 0; i < settle_.size(); i += k_settle_batch) {
        const auto end = std::min(settle_.size(), i + k_settle_batch);
        proto::Settle batch{
            {settle_.begin() + static_cast<std::ptrdiff_t>(i), settle_.begin() + static_cast<std::ptrdiff_t>(end)},
            i == 0 ? settle_timed_out_ : 0,
            {}};
        (void)send_message(*broker_, proto::Command::settle, proto::encode(batch));
    }
    {
        std::lock_guard lock(mutex_);  // submitters count settle_ in the window
        settle_.clear();
        settle_timed_out_ = 0;
        settle_now_ = false;
    }
    room_.notify_all();
}

void ClientImpl::settle_again() {
    if (settled_older_.empty() && settled_recent_.empty()) return;
    if (settle_.empty()) settle_since_ = Clock::now();
    for (const auto* kept : {&settled_older_, &settled_recent_})
        for (const auto seq : *kept) settle_.push_back(pending_.own_id(seq));
    settle_now_ = true;
}

void ClientImpl::forget_read_settles(Clock::time_point now) {
    if (heartbeat_answered_ >= heartbeat_sent_) {
        settled_older_.swap(settled_recent_);
        settled_recent_.clear();
    } else {
        settled_older_.insert(settled_older_.end(), settled_recent_.begin(), settled_recent_.end());
        settled_recent_.clear();
    }
    heartbeat_sent_ = now;
}

}  // namespace drover
