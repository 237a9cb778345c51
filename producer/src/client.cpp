// Client: submission window, SUBMIT batches, the sink, SETTLE, resends.
#include "client_impl.hpp"
#include "internal/stall.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <sys/eventfd.h>
#include <unistd.h>

#include "drover/client/status.hpp"
#include "internal/unpack.hpp"

namespace drover {

namespace {

constexpr std::size_t k_submit_batch = 1000;
constexpr std::size_t k_settle_batch = 4096;
// SETTLE waits for more ids, up to this long: it carries no task (it lets
// the broker forget finished ones), and a SETTLE a result woke the broker
// and two I/O threads a task, on cores the running tasks share (W3,
// performance.md). Over tcp and ipc it waits even when no task is left in
// flight: a producer waiting on one task at a time had its next SUBMIT
// follow that SETTLE through the same four threads (W2 p50 over tcp 214
// against 185 us). Over inproc the SETTLE of the last one goes at once: it
// wakes only the broker's thread, which is then awake for the next SUBMIT
// (W2 over inproc 67 against 81 us).
constexpr Millis k_settle_delay{10};

// The back-off after a queue_full: it starts here and doubles while
// refusals come with no outcome between them, up to k_max_backoff.
constexpr Millis k_min_backoff{2};
constexpr Millis k_max_backoff{1000};

// Digits in ascending ASCII order, so that for numbers written with them a
// shorter string is smaller and equal lengths compare as the numbers do.
constexpr std::string_view k_digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

// The value of each digit of k_digits, -1 for other characters.
constexpr auto k_digit_values = [] {
    std::array<std::int8_t, 256> v{};
    for (auto& x : v) x = -1;
    for (std::size_t i = 0; i < k_digits.size(); ++i)
        v[static_cast<unsigned char>(k_digits[i])] = static_cast<std::int8_t>(i);
    return v;
}();

// Writes n in k_digits right to left, ending just before `end` (at most 11
// digits); returns where the number starts.
char* write_number(char* end, std::uint64_t n) {
    do {
        *--end = k_digits[n % 64];
        n /= 64;
    } while (n > 0);
    return end;
}

// 8 characters, 48 random bits: with the task number, an id fits in a
// std::string without a heap allocation up to 2^36 tasks.
std::string new_session() {
    char buf[11];
    char* end = buf + sizeof buf;
    char* start = write_number(end, std::stoull(random_hex(6), nullptr, 16) | (std::uint64_t{1} << 47));
    return std::string(start, end);  // always 8 digits
}

// The routing id's 8 characters: random, and unrelated to the session in
// task ids, which workers and sinks see. ROUTER_HANDOVER gives a connection
// that names a producer's routing id that producer's place at the broker, so
// it must not be guessable from anything on the wire.
std::string new_route() {
    static const char* alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";
    const std::string bytes = random_secret();
    std::string out;
    for (std::size_t i = 0; i < 8; ++i) out.push_back(alphabet[static_cast<unsigned char>(bytes[i]) & 63]);
    return out;
}

std::string default_sink(const std::string& broker) {
    if (broker.rfind("inproc://", 0) == 0) return "inproc://drover-sink-" + random_hex(8);
    if (broker.rfind("ipc://", 0) == 0)
        return "ipc:///tmp/drover-sink-" + std::to_string(::getpid()) + "-" + random_hex(4);
    return "tcp://" + local_address_towards(broker) + ":*";
}

}  // namespace

ClientImpl::ClientImpl(zmq::context_t& ctx, ClientOptions options, Logger log)
    : ctx_(ctx),
      options_(std::move(options)),
      log_(std::move(log)),
      session_(new_session()),
      route_(new_route()),
      sink_key_(random_secret()),
      sink_(ctx, zmq::socket_type::pull) {
    if (options_.sink.empty()) options_.sink = default_sink(options_.broker);
    settle_last_at_once_ = options_.broker.rfind("inproc://", 0) == 0;
    sink_.set(zmq::sockopt::maxmsgsize, options_.max_message_bytes);
    sink_.set(zmq::sockopt::rcvhwm, 100000);
    sink_.set(zmq::sockopt::linger, 0);
    bind_server(ctx_, sink_, options_.security.get(), Domain::sink, options_.sink);
    const auto bound = last_endpoint(sink_);
    if (bound.rfind("ipc://", 0) == 0) sink_ipc_path_ = bound.substr(6);
    reply_to_ = options_.sink_advertise.empty() ? connectable(bound) : options_.sink_advertise;
    reply_to_ = with_sink_key(reply_to_, options_.security.get());
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
    connect_broker();
    connect_submit();
    log_->debug("client.started session={} broker={} reply_to={}", session_, options_.broker, reply_to_);
    io_ = std::thread([this] { io_loop(); });
}

ClientImpl::~ClientImpl() {
    {
        // What callers queued there and the socket has not sent yet goes no
        // further (its tasks end cancelled below). What it did send may reach
        // the broker after the CANCEL and BYE below: the broker then runs it
        // for nobody, until it takes this producer for gone.
        std::lock_guard lock(submit_mutex_);
        submit_closed_ = true;
        submit_socket_.reset();
    }
    cancel_all();
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake();
    if (io_.joinable()) io_.join();
    log_->info("client.stopped session={} duplicates_dropped={} (late or repeated results: each id is delivered once)",
               session_, duplicates_.load());
    // Whatever has no outcome now never will from this client.
    std::vector<Pending> left;
    {
        std::lock_guard lock(mutex_);
        pending_.for_each([&](std::uint64_t, Pending& p) { left.push_back(std::move(p)); });
        pending_.clear();
        named_.clear();
    }
    for (auto& p : left) {
        Result r;
        r.id = std::move(p.task.id);
        r.task = p.task.name;
        r.status = proto::Status::cancelled;
        r.error = "client closed";
        if (p.done) p.done(std::move(r));
    }
    ::close(wake_fd_);
    if (!sink_ipc_path_.empty()) ::unlink(sink_ipc_path_.c_str());
}

void ClientImpl::wake() {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

std::string ClientImpl::submit_packed(std::string name, std::string args, ResultCallback done, TaskOptions options) {
    const auto room = payload_limit(options_.max_message_bytes);
    if (args.size() + name.size() > room)
        throw std::invalid_argument("task '" + name + "' arguments too large: " + std::to_string(args.size()) +
                                    " bytes, where at most " + std::to_string(room - std::min(room, name.size())) +
                                    " fit (--max-message-bytes " + std::to_string(options_.max_message_bytes) +
                                    ", less " + std::to_string(k_message_fields) +
                                    " for the message's own fields and the name)");
    std::unique_lock lock(mutex_);
    room_.wait(lock, [&] { return pending_.size() + settle_.size() < options_.window || stopping_; });
    if (stopping_) throw std::runtime_error("client is closing");
    SinkAddress elsewhere;
    if (!options.reply_to.empty()) {
        elsewhere = split_sink_address(options.reply_to);
        if (elsewhere.key.empty())
            throw std::invalid_argument("reply_to '" + options.reply_to +
                                        "' has no sink secret: give the address the sink printed (with ?secret=...)");
    }
    const bool named = !options.id.empty();
    if (named && find_pending(options.id).pending)
        throw std::invalid_argument("duplicate id '" + options.id + "': a task with this id is still unfinished");
    // A caller's id of our own form: its number is never given to another task.
    if (named) pending_.skip_to(own_seq(options.id));
    std::uint64_t seq = 0;
    Pending& p = pending_.insert(seq);
    if (named) {
        p.task.id = std::move(options.id);
        p.named = true;
        named_.emplace(p.task.id, seq);
    } else {
        p.task.id = own_id(seq);
    }
    p.task.name = std::move(name);
    p.task.args = std::move(args);
    p.task.max_attempts = options.max_attempts.value_or(options_.max_attempts);
    p.task.timeout_ms = options.timeout_ms;
    p.task.retry_on_error = options.retry_on_error;
    p.elsewhere = !options.reply_to.empty();
    if (p.elsewhere) p.task.reply_to = std::move(elsewhere.reply_to);  // else reply_to_, added when sent
    // Only this client, the broker and the task's sink can know it: the
    // sink drops outcomes whose token it does not prove (drover/proof.hpp).
    task_secret_into(p.elsewhere ? elsewhere.key : sink_key_, p.task.id, p.task.secret);
    p.task.detached = p.elsewhere;
    p.done = std::move(done);
    if (p.elsewhere) ++elsewhere_pending_;
    std::string id = p.task.id;
    // A lone task (nothing else unfinished, so nothing to batch it with and
    // nothing waiting to be sent before it) whose id is the client's own
    // (never given twice, so no SETTLE must go first): the caller sends it
    // itself, on a socket of its own, instead of waking the I/O thread.
    // Only once the broker has answered on the client's own connection: it
    // then knows where to send its answers (ACCEPTED, REJECTED).
    if (!named && pending_.size() == 1 && broker_heard_.load(std::memory_order_relaxed)) {
        const proto::TaskRef ref = wire_ref(p);
        auto body = proto::encode_message(&ref, 1);
        lock.unlock();
        {
            std::lock_guard submit(submit_mutex_);
            try {
                if (submit_socket_ && send_message(*submit_socket_, proto::Command::submit, body) == SendStatus::sent) {
                    ++submitted_directly_;
                    return id;
                }
            } catch (const zmq::error_t& e) {
                log_->warn("client.submit_connection_failed error=\"{}\" (the I/O thread sends the task)", e.what());
            }
        }
        lock.lock();                         // full, failed or closed: the I/O thread sends it
        if (!pending_.find(seq)) return id;  // finished meanwhile
    }
    const bool first = inbox_.empty();
    inbox_.push_back(seq);
    lock.unlock();
    if (first) wake();
    return id;
}

std::string ClientImpl::own_id(std::uint64_t seq) const {
    // Written right to left into one buffer, then made a string once (three
    // appends to a string were 200 instructions a task).
    char buf[32];
    char* end = buf + sizeof buf;
    char* start = write_number(end, seq);
    *--start = '.';
    const std::size_t n = std::min(session_.size(), static_cast<std::size_t>(start - buf));
    start -= n;
    std::memcpy(start, session_.data(), n);
    return std::string(start, end);
}

std::uint64_t ClientImpl::own_seq(std::string_view id) const {
    const std::size_t start = session_.size() + 1;
    if (id.size() <= start || id.size() > start + 11 || id[session_.size()] != '.' ||
        id.compare(0, session_.size(), session_) != 0)
        return 0;
    std::uint64_t n = 0;
    for (std::size_t i = start; i < id.size(); ++i) {
        const int d = k_digit_values[static_cast<unsigned char>(id[i])];
        if (d < 0 || n > (std::numeric_limits<std::uint64_t>::max() >> 6)) return 0;  // not a digit, or past 64 bits
        n = n * 64 + static_cast<std::uint64_t>(d);
    }
    return n;
}

ClientImpl::Found ClientImpl::find_pending(std::string_view id) {
    if (const auto seq = own_seq(id); seq != 0)
        if (Pending* p = pending_.find(seq); p && p->task.id == id) return {seq, p};
    if (named_.empty()) return {};
    const auto it = named_.find(std::string(id));
    if (it == named_.end()) return {};
    return {it->second, pending_.find(it->second)};
}

void ClientImpl::erase_pending(const Found& f) {
    if (f.pending->named) named_.erase(f.pending->task.id);
    if (f.pending->elsewhere) --elsewhere_pending_;
    pending_.erase(f.seq);
}

void ClientImpl::wait_all() {
    std::unique_lock lock(mutex_);
    room_.wait(lock, [&] { return all_finished(); });
}

bool ClientImpl::wait_all_for(Millis timeout) {
    std::unique_lock lock(mutex_);
    return room_.wait_for(lock, timeout, [&] { return all_finished(); });
}

void ClientImpl::cancel_all() {
    {
        std::lock_guard lock(mutex_);
        pending_.for_each([&](std::uint64_t, const Pending& p) {
            if (!p.elsewhere) cancel_requests_.push_back(p.task.id);
        });
    }
    wake();
}

std::size_t ClientImpl::unfinished() const {
    std::lock_guard lock(mutex_);
    return pending_.size() + delivering_;  // a callback still running is not finished
}

bool ClientImpl::wait_for_workers(std::size_t n, Millis timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        auto doc = fetch_status(ctx_, options_.broker, Millis(1000), options_.security.get());
        if (doc && (*doc)["workers"].size() >= n) return true;
        std::this_thread::sleep_for(Millis(20));
    }
    return false;
}

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

proto::TaskRef ClientImpl::wire_ref(const Pending& p) const {
    const Submitted& t = p.task;
    return proto::TaskRef{
        t.id,         t.name,     t.args,           p.elsewhere ? t.reply_to : reply_to_,        0, t.max_attempts,
        t.timeout_ms, t.detached, t.retry_on_error, std::string_view(t.secret, sizeof t.secret), 0};
}

std::size_t ClientImpl::at_broker() const {
    const std::size_t known = pending_.size() + settle_.size();
    return known - std::min(known, unsent_.size() + inbox_.size());
}

ClientImpl::Unsent ClientImpl::send_unsent() {
    if (unsent_.empty()) return Unsent::none;
    if (Clock::now() < resend_at_) return Unsent::backing_off;
    std::size_t sent = 0;
    std::lock_guard lock(mutex_);
    // After a queue_full, no more at the broker than it has room for.
    std::size_t budget = SIZE_MAX;
    if (broker_room_ != SIZE_MAX) {
        const std::size_t there = at_broker();
        budget = broker_room_ > there ? broker_room_ - there : 0;
    }
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
            if (const Found f = find_pending(id); f.pending) again.push_back(f.seq);
        // Sent again first, in the order submitted.
        std::sort(again.begin(), again.end());
        unsent_.insert(unsent_.begin(), again.begin(), again.end());
        // The broker took what it holds of ours, and no more: keep to that,
        // growing as outcomes come (on_results).
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

void ClientImpl::finish(const std::string& id, Result&& r) {
    std::vector<std::pair<ResultCallback, Result>> ready;
    {
        std::lock_guard lock(mutex_);
        const Found f = find_pending(id);
        if (!f.pending) return;
        ready.emplace_back(std::move(f.pending->done), std::move(r));
        erase_pending(f);
        ++delivering_;
    }
    deliver(ready);
}

// Runs the callbacks of outcomes taken from pending_ (and counted in
// delivering_) by the caller, without the lock.
void ClientImpl::deliver(std::vector<std::pair<ResultCallback, Result>>& ready) {
    room_.notify_all();
    for (auto& [done, r] : ready) {
        if (!done) continue;
        try {
            done(std::move(r));
        } catch (const std::exception& e) {  // a user callback must not end the I/O thread
            log_->error("client.callback_threw id={} error=\"{}\"", r.id, e.what());
        }
    }
    {
        std::lock_guard lock(mutex_);
        delivering_ -= ready.size();
    }
    room_.notify_all();  // wait_all() returns only once every callback has run
}

void ClientImpl::on_results(std::string_view body) {
    auto m = proto::decode_result_views(body);
    if (!m) {
        log_->warn("client.sink_dropped reason={}", proto::decode_error_name(m.error()));
        return;
    }
    // One lock and one wake-up for the whole batch; callbacks run unlocked.
    std::vector<std::pair<ResultCallback, Result>> ready;
    ready.reserve(m->size());
    std::size_t resubmitted = 0;
    {
        std::lock_guard lock(mutex_);
        if (settle_.empty()) settle_since_ = Clock::now();
        for (std::size_t i = 0; i < m->size(); ++i) {
            const auto& o = (*m)[i];
            const Found f = find_pending(o.id);
            // A task of ours still unfinished has its secret kept: one hash
            // checks the token. Any other id's is derived from our sink key.
            const bool by_broker = o.worker == "broker";
            const Submitted* own = f.pending && !f.pending->elsewhere ? &f.pending->task : nullptr;
            const bool proven = own ? genuine({own->secret, sizeof own->secret}, o.attempt, by_broker, o.token)
                                    : genuine_for(sink_key_, o.id, o.attempt, by_broker, o.token);
            if (!proven) {
                // Not from the broker or a worker given that attempt: never
                // delivered, never settled (the real outcome is still to come).
                if (forged_.fetch_add(1) == 0)
                    log_->warn(
                        "client.forged_result id={} worker={} (an outcome without its attempt's token: "
                        "dropped and counted; logged once)",
                        o.id, o.worker);
                continue;
            }
            if (by_broker && o.status == proto::Status::cancelled && o.error == proto::k_producer_gone && !stopping_) {
                // The broker took this producer for gone while it was stopped,
                // and forgot the task: it goes again under its id. Not
                // settled, as the broker keeps no such outcome, and a SETTLE
                // could end the task sent again.
                if (f.pending && !f.pending->elsewhere) {
                    unsent_.push_back(f.seq);
                    ++resubmitted;
                }
                continue;
            }
            // Settle duplicates too: the broker may still hold the task.
            settle_.emplace_back(o.id);
            if (f.pending && !f.pending->named) settled_recent_.push_back(f.seq);
            if (!f.pending || f.pending->elsewhere) {
                ++duplicates_;
                continue;
            }
            settle_timed_out_ += o.status == proto::Status::timeout;
            // Each string made from its view, not assigned into an empty one
            // (std::string::assign is out of line: 5 calls a result).
            if (o.status == proto::Status::ok && !within_depth_limit(o.result)) {
                // Its reader (as<T>, JSON) would recurse that deep: an error instead.
                too_deep_.fetch_add(1);
                log_->warn("client.result_too_deep id={} worker={} limit={} (delivered as an error)", o.id, o.worker,
                           k_max_data_depth);
                ready.emplace_back(std::move(f.pending->done),
                                   Result{std::string(o.id), std::string(o.task), proto::Status::error, std::string(),
                                          too_deep_message("result"), o.attempt, std::string(o.worker),
                                          static_cast<double>(o.elapsed_us) / 1000.0});
            } else {
                ready.emplace_back(std::move(f.pending->done),
                                   Result{std::string(o.id), std::string(o.task), o.status, std::string(o.result),
                                          std::string(o.error), o.attempt, std::string(o.worker),
                                          static_cast<double>(o.elapsed_us) / 1000.0});
            }
            erase_pending(f);
        }
        delivering_ += ready.size();
        // The last in flight, with the broker in this process: it is told at
        // once (k_settle_delay). With the window full, at once too: the
        // window counts the outcomes to settle.
        if (pending_.empty() && settle_last_at_once_) settle_now_ = true;
        if (pending_.size() + settle_.size() >= options_.window) settle_now_ = true;
    }
    if (!ready.empty()) {
        // The broker makes room: after a queue_full, one task more at it a
        // round trip (as many outcomes as it holds of ours), back to no
        // limit once the window fits.
        made_room();
        if (broker_room_ != SIZE_MAX) {
            room_growth_ += ready.size();
            while (room_growth_ >= broker_room_) {
                room_growth_ -= broker_room_;
                ++broker_room_;
            }
            if (broker_room_ >= options_.window) broker_room_ = SIZE_MAX;
        }
        deliver(ready);
    }
    if (resubmitted > 0)
        log_->warn(
            "client.resubmitting n={} (the broker took this producer for gone, as it was stopped, and "
            "cancelled them: they go again under their ids)",
            resubmitted);
}

void ClientImpl::on_broker_message(std::vector<zmq::message_t>& frames) {
    if (frames.empty() || frames.size() > 2) return;
    auto cmd = proto::parse_header(frames[0]);
    if (!cmd) return;
    const std::string_view body = frames.size() == 2 ? proto::view(frames[1]) : std::string_view{};
    switch (*cmd) {
        case proto::Command::accepted: {
            // Only a task whose outcome goes elsewhere ends at ACCEPTED (an id
            // is sent, so counted, before its ACCEPTED can arrive).
            if (elsewhere_pending_.load() == 0) return;
            auto m = proto::decode_ids(body);
            if (!m) return;
            std::vector<std::pair<std::string, Result>> elsewhere;
            {
                std::lock_guard lock(mutex_);
                for (const auto& id : m->ids) {
                    Pending* p = find_pending(id).pending;
                    if (!p) continue;
                    p->accepted = true;
                    if (p->elsewhere) {
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
            return;
        }
        case proto::Command::rejected: {
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
                    if (const Pending* p = find_pending(id).pending) r.task = p->task.name;
                }
                finish(id, std::move(r));
            }
            return;
        }
        case proto::Command::heartbeat: {
            auto instance = proto::decode_heartbeat(body);
            if (!instance || instance->empty()) return;
            if (!broker_instance_.empty() && *instance != broker_instance_) {
                log_->warn("client.broker_restarted resending unfinished tasks");
                std::lock_guard lock(mutex_);
                resend_unfinished();
            }
            broker_instance_ = *instance;
            heartbeat_answered_ = Clock::now();
            return;
        }
        case proto::Command::result:
            // Workers that cannot reach our sink send results through the broker.
            if (!results_via_broker_) {
                results_via_broker_ = true;
                log_->warn(
                    "client.results_via_broker: some workers cannot reach this producer's sink at {}; their "
                    "results come through the broker (slower). Give a reachable address with --sink or "
                    "--sink-advertise",
                    reply_to_);
            }
            on_results(body);
            return;
        case proto::Command::bye:
            log_->info("client.broker_bye (broker stopping)");
            last_from_broker_ = Clock::now() - options_.heartbeat * options_.liveness;
            return;
        default: return;  // HEARTBEAT and anything else: liveness only
    }
}

// The broker may know none of our tasks: resend all that have no outcome
// yet, under the same ids, in the order submitted. Called with mutex_ held.
void ClientImpl::resend_unfinished() {
    unsent_.clear();
    broker_room_ = SIZE_MAX;  // another broker, or the same one after a break: its queue is news
    made_room();
    resend_at_ = {};
    pending_.for_each([&](std::uint64_t seq, const Pending& p) {
        if (!p.elsewhere || !p.accepted) unsent_.push_back(seq);
    });
    std::sort(unsent_.begin(), unsent_.end());
}

void ClientImpl::settle_again() {
    if (settled_older_.empty() && settled_recent_.empty()) return;
    if (settle_.empty()) settle_since_ = Clock::now();
    for (const auto* kept : {&settled_older_, &settled_recent_})
        for (const auto seq : *kept) settle_.push_back(own_id(seq));
    settle_now_ = true;
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

void ClientImpl::io_loop() {
    auto next_heartbeat = Clock::now();
    std::vector<zmq::message_t> frames;
    const auto window = options_.heartbeat * options_.liveness;
    bool has_named = false;  // unfinished tasks with a caller's id
    StallMeter stall_meter(options_.heartbeat);
    Poller poller;
    constexpr std::size_t k_sink = 0, k_broker = 1, k_wake = 2;
    while (true) {
        {
            std::lock_guard lock(mutex_);
            if (unsent_.empty()) {
                unsent_.swap(inbox_);
            } else {
                unsent_.insert(unsent_.end(), std::make_move_iterator(inbox_.begin()),
                               std::make_move_iterator(inbox_.end()));
                inbox_.clear();
            }
            has_named = !named_.empty();
            if (!cancel_requests_.empty()) {
                (void)send_message(*broker_, proto::Command::cancel, proto::encode(proto::Ids{cancel_requests_}));
                cancel_requests_.clear();
            }
            if (stopping_) break;
        }
        // A caller's id given again after its outcome must reach the broker
        // after the SETTLE of its earlier run (the client's own ids are
        // never given twice).
        if (has_named && !unsent_.empty()) send_settle();
        const Unsent unsent = send_unsent();

        poller.watch(k_sink, sink_, Poller::Use::receive_only);
        poller.watch(k_broker, *broker_, Poller::Use::send_and_receive);
        poller.watch(k_wake, wake_fd_);
        auto wait =
            std::chrono::duration_cast<Millis>(std::min(next_heartbeat, settle_due()) - Clock::now()) + Millis(1);
        // Room comes with outcomes and with the SETTLE sent after them.
        if (unsent == Unsent::socket_full || unsent == Unsent::no_room) wait = std::min(wait, Millis(1));
        if (unsent == Unsent::backing_off)
            wait = std::min(wait, std::chrono::duration_cast<Millis>(resend_at_ - Clock::now()) + Millis(1));
        wait = std::max(wait, Millis(0));
        stall_meter.will_wait(wait);
        poller.wait(wait);
        if (poller.ready(k_wake)) {
            std::uint64_t n;
            [[maybe_unused]] auto r = ::read(wake_fd_, &n, sizeof n);
        }
        if (poller.ready(k_sink)) {
            for (DrainBudget budget(1024); budget.more();) {
                frames.clear();
                if (!zmq::recv_multipart(sink_, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
                    poller.drained(k_sink);
                    break;
                }
                if (!sink_guard_.admit(frames.back())) continue;
                if (frames.size() != 2) continue;
                auto cmd = proto::parse_header(frames[0]);
                if (!cmd || *cmd != proto::Command::result) {
                    log_->warn("client.sink_dropped reason=bad_header");
                    continue;
                }
                on_results(proto::view(frames[1]));
            }
        }
        if (poller.ready(k_broker)) {
            for (DrainBudget budget(1024); budget.more();) {
                frames.clear();
                if (!zmq::recv_multipart(*broker_, std::back_inserter(frames), zmq::recv_flags::dontwait)) break;
                last_from_broker_ = Clock::now();
                broker_heard_.store(true, std::memory_order_relaxed);
                on_broker_message(frames);
            }
        }
        // Settle once the inputs are drained: one message for many ids.
        const auto now = Clock::now();
        if (settle_now_ || settle_.size() >= k_settle_batch || now >= settle_due()) send_settle();
        if (const auto stall = stall_meter.check(now); stall != Clock::duration::zero()) {
            // This process was stopped: the broker's silence meanwhile is not
            // the broker's. Past a liveness window the broker may have taken
            // this producer for gone and forgotten its tasks: they go again.
            last_from_broker_ = StallMeter::shifted(last_from_broker_, stall, now);
            std::lock_guard lock(mutex_);
            const bool resend = stall > window && !stopping_;
            log_->warn("client.stalled ms={} resend={}", std::chrono::duration_cast<Millis>(stall).count(),
                       resend ? pending_.size() : 0);
            if (resend) resend_unfinished();
        }

        if (now >= next_heartbeat) {
            next_heartbeat = now + options_.heartbeat;
            // The broker answered the previous HEARTBEAT, so it read every
            // SETTLE sent before that one: those ids are no longer kept.
            if (heartbeat_answered_ >= heartbeat_sent_) {
                settled_older_.swap(settled_recent_);
                settled_recent_.clear();
            } else {
                settled_older_.insert(settled_older_.end(), settled_recent_.begin(), settled_recent_.end());
                settled_recent_.clear();
            }
            heartbeat_sent_ = now;
            // Refused tasks that wait for room (nothing of ours at the broker ends) also end in time.
            if (!unsent_.empty()) expire_refused(now);
            (void)send_message(*broker_, proto::Command::heartbeat);
            {
                // Idle since the last tick: a burst's table goes back to the heap.
                std::lock_guard lock(mutex_);
                if (pending_.empty() && pending_.last() == last_at_tick_) pending_.shrink();
                last_at_tick_ = pending_.last();
            }
            if (now - last_from_broker_ > window) {
                std::lock_guard lock(mutex_);
                log_->warn(
                    "client.broker_silent broker={} ms={} reconnecting resend={} (is the broker running and "
                    "reachable at that address, and, if it runs with --security, does this producer have the "
                    "fleet's keys and is its key on the broker's allow-list?)",
                    options_.broker, std::chrono::duration_cast<Millis>(now - last_from_broker_).count(),
                    pending_.size());
                connect_broker();
                connect_submit();
                resend_unfinished();
                settle_again();
            }
        }
    }
    send_settle();
    (void)send_message(*broker_, proto::Command::bye);
    broker_->set(zmq::sockopt::linger, 500);  // let the last SETTLE, CANCEL and BYE leave
}

Client::Client(zmq::context_t& ctx, ClientOptions options, Logger log)
    : impl_(std::make_unique<ClientImpl>(ctx, std::move(options), std::move(log))) {}
Client::~Client() = default;
std::string Client::submit_packed(std::string name, std::string args, ResultCallback done, TaskOptions options) {
    return impl_->submit_packed(std::move(name), std::move(args), std::move(done), std::move(options));
}
void Client::wait_all() { impl_->wait_all(); }
bool Client::wait_all_for(Millis timeout) { return impl_->wait_all_for(timeout); }
void Client::cancel_all() { impl_->cancel_all(); }
bool Client::wait_for_workers(std::size_t n, Millis timeout) { return impl_->wait_for_workers(n, timeout); }
const std::string& Client::reply_to() const { return impl_->reply_to(); }
std::size_t Client::unfinished() const { return impl_->unfinished(); }
std::uint64_t Client::duplicates_dropped() const { return impl_->duplicates_dropped(); }
std::uint64_t Client::forged_dropped() const { return impl_->forged_dropped(); }
std::uint64_t Client::too_deep_results() const { return impl_->too_deep_results(); }
std::uint64_t Client::submitted_directly() const { return impl_->submitted_directly(); }

}  // namespace drover
