// Client: its construction and end, and the callers' side (submit, wait).
#include "client_impl.hpp"

#include <algorithm>
#include <stdexcept>
#include <system_error>

#include <sys/eventfd.h>
#include <unistd.h>

#include "drover/client/status.hpp"
#include "internal/proof.hpp"

namespace drover {

namespace {

// 8 digits, 48 random bits: with the task number, an id fits in a
// std::string without a heap allocation up to 2^36 tasks.
std::string new_session() {
    char buf[11];
    char* end = buf + sizeof buf;
    char* start = detail::write_number(end, std::stoull(random_hex(6), nullptr, 16) | (std::uint64_t{1} << 47));
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

// Throws: std::invalid_argument unless a task of this name and arguments
// fits in a message of `max_message_bytes`.
void check_fits(const std::string& name, const std::string& args, std::int64_t max_message_bytes) {
    const auto room = payload_limit(max_message_bytes);
    if (args.size() + name.size() <= room) return;
    throw std::invalid_argument("task '" + name + "' arguments too large: " + std::to_string(args.size()) +
                                " bytes, where at most " + std::to_string(room - std::min(room, name.size())) +
                                " fit (--max-message-bytes " + std::to_string(max_message_bytes) + ", less " +
                                std::to_string(k_message_fields) + " for the message's own fields and the name)");
}

// The sink a task's outcome goes to instead of the client's (reply_to as
// TaskOptions gives it; empty: none). Throws: std::invalid_argument for an
// address without the sink's key.
SinkAddress other_sink(const std::string& reply_to) {
    if (reply_to.empty()) return {};
    SinkAddress elsewhere = split_sink_address(reply_to);
    if (elsewhere.key.empty())
        throw std::invalid_argument("reply_to '" + reply_to +
                                    "' has no sink secret: give the address the sink printed (with ?secret=...)");
    return elsewhere;
}

}  // namespace

ClientImpl::ClientImpl(zmq::context_t& ctx, ClientOptions options, Logger log)
    : ctx_(ctx),
      options_(std::move(options)),
      log_(std::move(log)),
      route_(new_route()),
      sink_key_(random_secret()),
      pending_(new_session()),
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
    log_->debug("client.started session={} broker={} reply_to={}", pending_.session(), options_.broker, reply_to_);
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
               pending_.session(), duplicates_.load());
    // Whatever has no outcome now never will from this client.
    std::vector<Pending> left;
    {
        std::lock_guard lock(mutex_);
        pending_.for_each([&](std::uint64_t, Pending& p) { left.push_back(std::move(p)); });
        pending_.clear();
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

// The steps of submit_packed, inline: each task takes them.
inline void ClientImpl::wait_for_room(std::unique_lock<std::mutex>& lock) {
    room_.wait(lock, [&] { return has_room() || stopping_; });
    if (stopping_) throw std::runtime_error("client is closing");
}

inline Pending& ClientImpl::add_task(std::string&& name, std::string&& args, ResultCallback&& done,
                                     TaskOptions& options, SinkAddress& elsewhere, std::uint64_t& seq) {
    const bool goes_elsewhere = !options.reply_to.empty();
    Pending& p = pending_.add(std::move(options.id), goes_elsewhere, seq);
    p.task.name = std::move(name);
    p.task.args = std::move(args);
    p.task.max_attempts = options.max_attempts.value_or(options_.max_attempts);
    p.task.timeout_ms = options.timeout_ms;
    p.task.retry_on_error = options.retry_on_error;
    if (goes_elsewhere) p.task.reply_to = std::move(elsewhere.reply_to);  // else reply_to_, added when sent
    // Only this client, the broker and the task's sink can know it: the
    // sink drops outcomes whose token it does not prove (internal/proof.hpp).
    task_secret_into(goes_elsewhere ? elsewhere.key : sink_key_, p.task.id, p.task.secret);
    p.task.detached = goes_elsewhere;
    p.done = std::move(done);
    return p;
}

inline void ClientImpl::hand_to_io_thread(std::unique_lock<std::mutex>& lock, std::uint64_t seq) {
    const bool first = inbox_.empty();
    inbox_.push_back(seq);
    lock.unlock();
    if (first) wake();
}

std::string ClientImpl::submit_packed(std::string&& name, std::string&& args, ResultCallback&& done,
                                      TaskOptions&& options) {
    check_fits(name, args, options_.max_message_bytes);
    std::unique_lock lock(mutex_);
    wait_for_room(lock);
    SinkAddress elsewhere = other_sink(options.reply_to);
    const bool named = !options.id.empty();
    if (named && pending_.find(options.id).pending)
        throw std::invalid_argument("duplicate id '" + options.id + "': a task with this id is still unfinished");
    std::uint64_t seq = 0;
    const Pending& p = add_task(std::move(name), std::move(args), std::move(done), options, elsewhere, seq);
    std::string id = p.task.id;
    // A lone task (nothing else unfinished, so nothing to batch it with and
    // nothing waiting to be sent before it) whose id is the client's own
    // (never given twice, so no SETTLE must go first): the caller sends it
    // itself, on a socket of its own, instead of waking the I/O thread.
    // Only once the broker has answered on the client's own connection: it
    // then knows where to send its answers (ACCEPTED, REJECTED).
    if (!named && pending_.size() == 1 && broker_heard_.load(std::memory_order_relaxed)) {
        if (send_directly(lock, p)) return id;
        if (!pending_.find(seq)) return id;  // finished meanwhile
    }
    hand_to_io_thread(lock, seq);
    return id;
}

bool ClientImpl::send_directly(std::unique_lock<std::mutex>& lock, const Pending& p) {
    const proto::TaskRef ref = wire_ref(p);
    auto body = proto::encode_message(&ref, 1);
    lock.unlock();
    {
        std::lock_guard submit(submit_mutex_);
        try {
            if (submit_socket_ && send_message(*submit_socket_, proto::Command::submit, body) == SendStatus::sent) {
                ++submitted_directly_;
                return true;
            }
        } catch (const zmq::error_t& e) {
            log_->warn("client.submit_connection_failed error=\"{}\" (the I/O thread sends the task)", e.what());
        }
    }
    lock.lock();  // full, failed or closed: the I/O thread sends it
    return false;
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

bool ClientImpl::wait_connected(Millis timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!broker_heard_.load(std::memory_order_relaxed)) {
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(Millis(5));
    }
    return true;
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
bool Client::wait_connected(Millis timeout) { return impl_->wait_connected(timeout); }
const std::string& Client::reply_to() const { return impl_->reply_to(); }
std::size_t Client::unfinished() const { return impl_->unfinished(); }
std::uint64_t Client::duplicates_dropped() const { return impl_->duplicates_dropped(); }
std::uint64_t Client::forged_dropped() const { return impl_->forged_dropped(); }
std::uint64_t Client::too_deep_results() const { return impl_->too_deep_results(); }
std::uint64_t Client::submitted_directly() const { return impl_->submitted_directly(); }

}  // namespace drover
