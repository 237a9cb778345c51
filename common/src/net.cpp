// Socket helpers shared by every drover process.
#include "internal/net.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace drover {

namespace {

// `body` may be null (no body frame); it is consumed only when sent.
SendStatus send_frames(zmq::socket_t& s, std::string_view identity, proto::Command c, zmq::message_t* body,
                       bool blocking) {
    const auto more = blocking ? zmq::send_flags::sndmore : (zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    const auto last = blocking ? zmq::send_flags::none : zmq::send_flags::dontwait;
    const bool has_body = body && body->size() > 0;
    try {
        if (!identity.empty()) {
            if (!s.send(zmq::buffer(identity.data(), identity.size()), more)) return SendStatus::would_block;
        }
        auto header = proto::make_header(c);
        // Once the first frame is queued, the rest of a multipart message
        // always goes through (libzmq queues it whole or not at all).
        if (!s.send(header, has_body ? more : last)) return SendStatus::would_block;
        if (has_body) s.send(*body, last);
        return SendStatus::sent;
    } catch (const zmq::error_t& e) {
        if (e.num() == EHOSTUNREACH) return SendStatus::unreachable;
        if (e.num() == EAGAIN) return SendStatus::would_block;
        throw;
    }
}

SendStatus send_copy(zmq::socket_t& s, std::string_view identity, proto::Command c, std::string_view body,
                     bool blocking) {
    zmq::message_t m(body.data(), body.size());
    return send_frames(s, identity, c, &m, blocking);
}

}  // namespace

zmq::message_t body_message(std::string&& body) {
    if (body.size() < k_zero_copy_from) return zmq::message_t(body.data(), body.size());
    auto owned = std::make_unique<std::string>(std::move(body));
    zmq::message_t m(
        owned->data(), owned->size(), [](void*, void* hint) { delete static_cast<std::string*>(hint); }, owned.get());
    (void)owned.release();  // the message frees it
    return m;
}

bool BrokerErrors::log(const Logger& log, const char* event, std::string_view body) {
    auto m = proto::decode_error(body);
    const std::string reason = m ? m->reason : std::string("unreadable");
    if (logged_.size() >= k_max_reasons || !logged_.insert(reason).second) return false;
    if (!m) {
        log->warn("{} reason=unreadable (an ERROR from the broker whose body is not one: {})", event,
                  proto::decode_error_name(m.error()));
        return true;
    }
    const std::string command =
        m->command ? proto::command_name(static_cast<proto::Command>(*m->command)) : std::string("-");
    log->warn(
        "{} reason={} command={} protocol={} detail=\"{}\" (the broker did not take a message of ours; logged once "
        "per reason)",
        event, m->reason, command, m->protocol, m->detail);
    return true;
}

SendStatus send_message(zmq::socket_t& s, proto::Command c, std::string_view body) {
    return send_copy(s, {}, c, body, false);
}

SendStatus send_message(zmq::socket_t& s, proto::Command c, std::string&& body) {
    auto m = body_message(std::move(body));
    return send_frames(s, {}, c, &m, false);
}

SendStatus send_message(zmq::socket_t& s, proto::Command c, zmq::message_t& body) {
    return send_frames(s, {}, c, &body, false);
}

SendStatus send_message_blocking(zmq::socket_t& s, proto::Command c, std::string_view body) {
    return send_copy(s, {}, c, body, true);
}

SendStatus send_message_blocking(zmq::socket_t& s, proto::Command c, zmq::message_t& body) {
    return send_frames(s, {}, c, &body, true);
}

SendStatus send_to(zmq::socket_t& router, std::string_view identity, proto::Command c, std::string_view body) {
    return send_copy(router, identity, c, body, false);
}

SendStatus send_to(zmq::socket_t& router, std::string_view identity, proto::Command c, std::string&& body) {
    auto m = body_message(std::move(body));
    return send_frames(router, identity, c, &m, false);
}

SendStatus send_to(zmq::socket_t& router, std::string_view identity, proto::Command c, zmq::message_t& body) {
    return send_frames(router, identity, c, &body, false);
}

void configure_router(zmq::socket_t& s, std::int64_t max_message_bytes, int hwm) {
    s.set(zmq::sockopt::router_mandatory, 1);
    s.set(zmq::sockopt::maxmsgsize, max_message_bytes);
    s.set(zmq::sockopt::sndhwm, hwm);
    s.set(zmq::sockopt::rcvhwm, hwm);
    s.set(zmq::sockopt::linger, 0);
}

std::string last_endpoint(const zmq::socket_t& s) { return s.get(zmq::sockopt::last_endpoint); }

std::string connectable(const std::string& bound) {
    for (const char* any : {"tcp://0.0.0.0:", "tcp://*:"}) {
        if (bound.rfind(any, 0) == 0) return "tcp://127.0.0.1:" + bound.substr(std::strlen(any));
    }
    if (bound.rfind("tcp://[::]:", 0) == 0) return "tcp://[::1]:" + bound.substr(11);
    return bound;
}

void check_endpoint(const std::string& ep, const std::string& flag, bool inproc_ok) {
    const auto sep = ep.find("://");
    if (sep == std::string::npos || sep == 0 || ep.size() == sep + 3)
        throw std::invalid_argument(flag + ": '" + ep +
                                    "' is not an endpoint (expected tcp://HOST:PORT, ipc://PATH or inproc://NAME)");
    const auto scheme = ep.substr(0, sep);
    if (scheme != "tcp" && scheme != "ipc" && scheme != "inproc")
        throw std::invalid_argument(flag + ": unsupported transport '" + scheme + "' in '" + ep +
                                    "' (use tcp, ipc or inproc)");
    if (scheme == "inproc" && !inproc_ok)
        throw std::invalid_argument(
            flag + ": '" + ep +
            "' reaches only threads of this process; another program needs "
            "tcp://HOST:PORT or ipc://PATH (inproc is for drover-producer --local and the C++ API)");
    if (scheme == "tcp") {
        const auto colon = ep.rfind(':');
        if (colon <= sep + 3 || colon + 1 >= ep.size())
            throw std::invalid_argument(flag + ": '" + ep + "' needs a port (tcp://HOST:PORT)");
        const auto port = ep.substr(colon + 1);
        if (port != "*" && (port.find_first_not_of("0123456789") != std::string::npos || std::stol(port) > 65535))
            throw std::invalid_argument(flag + ": bad port '" + port + "' in '" + ep + "'");
    }
}

int poll(zmq::pollitem_t* items, std::size_t count, Millis timeout) {
    try {
        return zmq::poll(items, count, timeout);
    } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) return 0;
        throw;
    }
}

Poller::Item& Poller::at(std::size_t i) {
    if (i >= k_max_items) throw std::out_of_range("Poller: item " + std::to_string(i));
    count_ = std::max(count_, i + 1);
    return items_[i];
}

void Poller::watch(std::size_t i, zmq::socket_t& s, Use use) {
    auto& item = at(i);
    const int fd = s.get(zmq::sockopt::fd);  // no system call
    if (item.socket != s.handle() || item.fd != fd) {
        item.socket = s.handle();
        item.fd = fd;
        item.quiet = false;
    }
    item.receive_only = use == Use::receive_only;
}

void Poller::watch(std::size_t i, int fd) {
    auto& item = at(i);
    item.socket = nullptr;
    item.fd = fd;
}

void Poller::limit(std::size_t count) { count_ = std::min(count_, count); }

void Poller::wait(Millis timeout) {
    std::array<pollfd, k_max_items> fds{};
    bool any = false;
    for (std::size_t i = 0; i < count_; ++i) {
        auto& item = items_[i];
        item.ready = false;
        if (item.socket != nullptr && !(item.receive_only && item.quiet)) {
            // Takes in the socket's pending commands, so that from here its
            // fd announces any new input.
            int events = 0;
            std::size_t size = sizeof events;
            if (zmq_getsockopt(item.socket, ZMQ_EVENTS, &events, &size) != 0) {
                if (zmq_errno() != EINTR) throw zmq::error_t();
                events = ZMQ_POLLIN;  // ask again
            }
            item.ready = (events & ZMQ_POLLIN) != 0;
            item.quiet = !item.ready;
            any = any || item.ready;
        }
        fds[i] = pollfd{item.fd, POLLIN, 0};
    }
    const auto ms = std::clamp<Millis::rep>(timeout.count(), 0, INT_MAX);
    const int rc = ::poll(fds.data(), count_, any ? 0 : static_cast<int>(ms));
    if (rc < 0) {
        if (errno == EINTR) return;
        throw zmq::error_t();
    }
    for (std::size_t i = 0; i < count_ && rc > 0; ++i) {
        if ((fds[i].revents & (POLLIN | POLLERR | POLLHUP)) == 0) continue;
        items_[i].ready = true;
        items_[i].quiet = false;
    }
}

std::string host_name() {
    std::array<char, 256> buf{};
    if (::gethostname(buf.data(), buf.size() - 1) != 0) return "unknown";
    return buf.data();
}

std::string local_address_towards(const std::string& broker_endpoint) {
    if (broker_endpoint.rfind("tcp://", 0) != 0) return "127.0.0.1";
    auto hostport = broker_endpoint.substr(6);
    const auto colon = hostport.rfind(':');
    if (colon == std::string::npos) return "127.0.0.1";
    auto host = hostport.substr(0, colon);
    const auto port = hostport.substr(colon + 1);
    if (host.size() > 1 && host.front() == '[') return "127.0.0.1";  // IPv6: keep loopback
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_DGRAM;
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res) return "127.0.0.1";
    std::string out = "127.0.0.1";
    const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    // A UDP connect sends nothing; it only asks the kernel for a route.
    if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
        sockaddr_in local{};
        socklen_t len = sizeof local;
        if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
            char text[INET_ADDRSTRLEN];
            if (::inet_ntop(AF_INET, &local.sin_addr, text, sizeof text)) out = text;
        }
    }
    if (fd >= 0) ::close(fd);
    ::freeaddrinfo(res);
    return out;
}

std::string random_hex(std::size_t bytes) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    static const char* digits = "0123456789abcdef";
    std::string out;
    out.reserve(bytes * 2);
    for (std::size_t i = 0; i < bytes; ++i) {
        const auto b = static_cast<unsigned>(rng() & 0xff);
        out.push_back(digits[b >> 4]);
        out.push_back(digits[b & 0xf]);
    }
    return out;
}

}  // namespace drover
