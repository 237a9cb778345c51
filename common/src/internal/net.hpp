// Socket helpers shared by every drover process: sending DRV4 messages,
// socket options, endpoints and host facts.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "drover/common/clock.hpp"
#include "drover/common/limits.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/protocol.hpp"

namespace drover {

// Bounds a receive loop: at most `messages` messages and k_drain_time, so
// that heartbeats, settles and the other sockets are served however fast
// messages arrive (a batch may carry a thousand tasks or results).
inline constexpr Millis k_drain_time{20};
class DrainBudget {
public:
    explicit DrainBudget(int messages) : left_(messages), until_(Clock::now() + k_drain_time) {}
    bool more() { return left_-- > 0 && Clock::now() < until_; }

private:
    int left_;
    Clock::time_point until_;
};
// A batch (SUBMIT, DISPATCH, RESULT) is cut once its payload passes this many
// bytes, and never grows past half of --max-message-bytes.
inline constexpr std::size_t k_batch_bytes = 1024 * 1024;
// Bytes a task or outcome adds to a message beyond its payload (a bound).
inline constexpr std::size_t k_entry_overhead = 256;
// The largest payload (a task's arguments with its name, or a result) that
// a message of `max_message_bytes` carries: 4 x k_entry_overhead is kept
// for the message's own fields.
inline constexpr std::size_t k_message_fields = 4 * k_entry_overhead;
inline std::size_t payload_limit(std::int64_t max_message_bytes) {
    return static_cast<std::size_t>(max_message_bytes) - k_message_fields;
}
inline std::size_t batch_byte_limit(std::int64_t max_message_bytes) {
    return std::min(k_batch_bytes, static_cast<std::size_t>(max_message_bytes) / 2);
}
// Approximate encoded size of a task, for cutting batches.
template <class T>  // proto::Task or proto::TaskRef
std::size_t wire_size(const T& t) {
    return t.id.size() + t.name.size() + t.args.size() + t.reply_to.size() + k_entry_overhead;
}

enum class SendStatus { sent, would_block, unreachable };

// A message body. One of k_zero_copy_from bytes or more takes the string's
// buffer instead of a copy of it, a copy saved at each of a large task's
// three sends (drover-bench W6).
inline constexpr std::size_t k_zero_copy_from = 8192;
[[nodiscard]] zmq::message_t body_message(std::string&& body);

// The broker's ERROR replies as a client of it (producer, worker) logs
// them: a warning the first time each reason comes. Owned by one thread.
class BrokerErrors {
public:
    // Logs the ERROR `body` (of any protocol version) as `event` (e.g.
    // "worker.broker_error") unless its reason was logged before. Returns
    // whether it logged.
    bool log(const Logger& log, const char* event, std::string_view body);

private:
    static constexpr std::size_t k_max_reasons = 64;  // a broker of another version may have others
    std::set<std::string> logged_;
};

// Sends [header][body] on a DEALER/PUSH socket without blocking.
// Returns: would_block at the high-water mark (nothing was sent).
// The body is copied, unless it is a string to be moved of at least
// k_zero_copy_from bytes, or a message (body_message, proto::encode_message).
// A message is consumed only when sent: one that was not can be tried again.
SendStatus send_message(zmq::socket_t& s, proto::Command c, std::string_view body = {});
SendStatus send_message(zmq::socket_t& s, proto::Command c, std::string&& body);
SendStatus send_message(zmq::socket_t& s, proto::Command c, zmq::message_t& body);

// Like send_message, but waits (up to the socket's ZMQ_SNDTIMEO) when full.
SendStatus send_message_blocking(zmq::socket_t& s, proto::Command c, std::string_view body = {});
SendStatus send_message_blocking(zmq::socket_t& s, proto::Command c, zmq::message_t& body);

// Sends [identity][header][body] on a ROUTER socket set to ROUTER_MANDATORY.
// Returns: unreachable for an unknown or gone peer, would_block at its HWM.
SendStatus send_to(zmq::socket_t& router, std::string_view identity, proto::Command c, std::string_view body = {});
SendStatus send_to(zmq::socket_t& router, std::string_view identity, proto::Command c, std::string&& body);
SendStatus send_to(zmq::socket_t& router, std::string_view identity, proto::Command c, zmq::message_t& body);

// Sets what every ROUTER in drover needs: ROUTER_MANDATORY (so a message to
// an unknown peer is an error, not a silent drop), bounded message size,
// high-water marks and no linger.
void configure_router(zmq::socket_t& s, std::int64_t max_message_bytes, int hwm = 100000);

// The endpoint a socket actually bound (resolves "tcp://*:*" to a real port).
std::string last_endpoint(const zmq::socket_t& s);

// For an endpoint bound as "tcp://*:P" or "tcp://0.0.0.0:P", the address a
// local client connects to ("tcp://127.0.0.1:P"); other endpoints unchanged.
std::string connectable(const std::string& bound);

// A socket could not bind: the message names the flag and the endpoint.
class BindError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Throws std::invalid_argument with a one-line reason unless `ep` looks like
// a ZeroMQ endpoint drover supports (tcp://, ipc://, inproc://). inproc://
// only where `inproc_ok`: it reaches threads of the same process alone, so
// a separate program (drover-broker, -worker, -sink) bound or connected
// there would wait for ever.
void check_endpoint(const std::string& ep, const std::string& flag, bool inproc_ok = true);

// zmq::poll that returns 0 when a signal interrupts it (the caller's loop
// then looks at its StopSource) instead of throwing.
int poll(zmq::pollitem_t* items, std::size_t count, Millis timeout);

// Waits for input on ZeroMQ sockets and plain fds with one poll(2) a sleep.
// Single-threaded: it belongs to the loop that owns the sockets.
//
// Why not zmq::poll or cppzmq's zmq::poller_t (zmq_poller_wait): both ask
// every socket for its events (ZMQ_EVENTS) before they sleep and again
// after, and for a socket with nothing new each ask costs libzmq a
// getpid(2) and a poll(2): system calls at every wake-up of drover's loops,
// which watch three inputs each (docs/design.md, "ZeroMQ facts that shape
// this design"; drover-bench W2 measures the round trip they add to). A
// Poller asks a socket only when it may hold input that its fd (ZMQ_FD)
// would not announce:
// - a socket whose last receive found nothing (drained()) stays quiet until
//   its fd is readable, as long as nothing is sent on it: a send may take in
//   the socket's pending commands, after which input waits with its fd
//   quiet. So drained() counts only for a socket watched as receive_only;
//   the others are asked at every wait (two system calls);
// - a socket returned ready and not drained since (a receive loop that
//   stopped on its budget) is asked again, and so is a socket new to the
//   Poller (after a reconnect).
class Poller {
public:
    enum class Use { receive_only, send_and_receive };

    // Item i is this socket from now on (call it every round: a reconnect
    // replaces a socket, and a replaced socket is asked afresh).
    void watch(std::size_t i, zmq::socket_t& s, Use use);
    // Item i is a plain fd (level-triggered: ready while readable).
    void watch(std::size_t i, int fd);
    // Stops watching items i and after (fewer inputs this round).
    void limit(std::size_t count);

    // Sleeps up to `timeout` (0 when negative) unless an item is ready; a
    // signal ends the sleep with nothing ready. Throws zmq::error_t on
    // other errors. A ready socket may still hold nothing: its fd also
    // announces connections and other news.
    void wait(Millis timeout);
    [[nodiscard]] bool ready(std::size_t i) const { return i < count_ && items_[i].ready; }
    // A receive on socket i found nothing (EAGAIN).
    void drained(std::size_t i) {
        if (i < count_) items_[i].quiet = true;
    }

    static constexpr std::size_t k_max_items = 4;

private:
    struct Item {
        void* socket = nullptr;  // nullptr: a plain fd
        int fd = -1;
        bool receive_only = false;
        bool quiet = false;
        bool ready = false;
    };
    Item& at(std::size_t i);

    std::array<Item, k_max_items> items_{};
    std::size_t count_ = 0;
};

std::string host_name();

// The local IP address the kernel would use to reach `broker_endpoint`
// (tcp only); "127.0.0.1" when it cannot tell.
std::string local_address_towards(const std::string& broker_endpoint);

// A fresh random hex string of `bytes` random bytes.
std::string random_hex(std::size_t bytes);

}  // namespace drover
