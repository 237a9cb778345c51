// Integration tests of the socket helpers every process sends with: bodies
// handed to ZeroMQ without a copy, and a body that could not be sent kept
// for the next try.
#include <chrono>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <catch2/catch.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "drover/common/protocol.hpp"
#include "internal/net.hpp"

using namespace drover;

namespace {

std::string bytes(const zmq::message_t& m) { return std::string(static_cast<const char*>(m.data()), m.size()); }

}  // namespace

TEST_CASE("body_message takes a big string's buffer and copies a small one", "[net][message]") {
    std::string big(k_zero_copy_from, 'x');
    const char* buffer = big.data();
    const auto m = body_message(std::move(big));
    CHECK(m.data() == buffer);
    CHECK(bytes(m) == std::string(k_zero_copy_from, 'x'));

    std::string small(k_zero_copy_from - 1, 'y');
    const char* small_buffer = small.data();
    const auto s = body_message(std::move(small));
    CHECK(s.data() != small_buffer);
    CHECK(bytes(s) == std::string(k_zero_copy_from - 1, 'y'));
}

TEST_CASE("A message body not sent is kept whole for the next try, and sent whole", "[net][message]") {
    zmq::context_t ctx;
    zmq::socket_t push(ctx, zmq::socket_type::push);
    push.set(zmq::sockopt::linger, 0);
    // Connected to nothing yet: a send would block.

    const std::string payload(65536, 'p');
    auto body = body_message(std::string(payload));
    CHECK(send_message(push, proto::Command::result, body) == SendStatus::would_block);
    CHECK(bytes(body) == payload);

    zmq::socket_t pull(ctx, zmq::socket_type::pull);
    pull.set(zmq::sockopt::linger, 0);
    pull.bind("inproc://drover-net-test");
    push.connect("inproc://drover-net-test");
    CHECK(send_message_blocking(push, proto::Command::result, body) == SendStatus::sent);

    std::vector<zmq::message_t> frames;
    REQUIRE(zmq::recv_multipart(pull, std::back_inserter(frames)));
    REQUIRE(frames.size() == 2);
    auto cmd = proto::parse_header(frames[0]);
    REQUIRE(cmd);
    CHECK(*cmd == proto::Command::result);
    CHECK(bytes(frames[1]) == payload);

    // A string to be moved goes the same way.
    CHECK(send_message(push, proto::Command::settle, std::string(payload)) == SendStatus::sent);
    frames.clear();
    REQUIRE(zmq::recv_multipart(pull, std::back_inserter(frames)));
    REQUIRE(frames.size() == 2);
    CHECK(bytes(frames[1]) == payload);
}

TEST_CASE("A message body for a peer a ROUTER does not know is kept whole", "[net][message]") {
    zmq::context_t ctx;
    zmq::socket_t router(ctx, zmq::socket_type::router);
    router.set(zmq::sockopt::linger, 0);
    router.set(zmq::sockopt::router_mandatory, 1);
    router.bind("inproc://drover-net-router");

    const std::string payload(65536, 'r');
    auto body = body_message(std::string(payload));
    CHECK(send_to(router, "nobody", proto::Command::dispatch, body) == SendStatus::unreachable);
    CHECK(bytes(body) == payload);

    zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::routing_id, "somebody");
    dealer.connect("inproc://drover-net-router");
    // The ROUTER knows the peer once its connection is made.
    SendStatus st = SendStatus::unreachable;
    for (int i = 0; i < 200 && st != SendStatus::sent; ++i) {
        st = send_to(router, "somebody", proto::Command::dispatch, body);
        if (st != SendStatus::sent) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(st == SendStatus::sent);
    std::vector<zmq::message_t> frames;
    REQUIRE(zmq::recv_multipart(dealer, std::back_inserter(frames)));
    REQUIRE(frames.size() == 2);
    CHECK(bytes(frames[1]) == payload);
}

namespace {

// The first frame of one message on s, waiting up to 5 s.
std::string receive_one(zmq::socket_t& s) {
    s.set(zmq::sockopt::rcvtimeo, 5000);
    zmq::message_t m;
    REQUIRE(s.recv(m));
    return m.to_string();
}

// Two sockets without linger: the first bound to `ep`, the second connected to it.
std::pair<zmq::socket_t, zmq::socket_t> bound_and_connected(zmq::context_t& ctx, zmq::socket_type bound,
                                                            zmq::socket_type connected, const std::string& ep) {
    std::pair<zmq::socket_t, zmq::socket_t> p{zmq::socket_t(ctx, bound), zmq::socket_t(ctx, connected)};
    p.first.set(zmq::sockopt::linger, 0);
    p.second.set(zmq::sockopt::linger, 0);
    p.first.bind(ep);
    p.second.connect(last_endpoint(p.first));
    return p;
}

// Waits with the poller for a message on item 0, socket s, as a drover loop
// does: a ready socket may still have nothing (its fd also announces
// connections). A wake-up the poller missed ends the 5 s with nothing.
std::string wait_for_one(Poller& poller, zmq::socket_t& s) {
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    zmq::message_t m;
    while (Clock::now() < deadline) {
        poller.wait(Millis(5000));
        if (!poller.ready(0)) continue;
        if (s.recv(m, zmq::recv_flags::dontwait)) return m.to_string();
        poller.drained(0);
    }
    return {};
}

}  // namespace

TEST_CASE("A Poller wakes for input on a drained receive-only socket", "[net][poller]") {
    zmq::context_t ctx;
    auto [pull, push] = bound_and_connected(ctx, zmq::socket_type::pull, zmq::socket_type::push, "tcp://127.0.0.1:*");
    push.send(zmq::str_buffer("first"));
    CHECK(receive_one(pull) == "first");  // connected: no connection news can wake the poller below

    Poller poller;
    poller.watch(0, pull, Poller::Use::receive_only);
    zmq::message_t m;
    REQUIRE_FALSE(pull.recv(m, zmq::recv_flags::dontwait));
    poller.drained(0);
    poller.wait(Millis(0));
    CHECK_FALSE(poller.ready(0));  // quiet: nothing was asked, nothing came

    std::thread sender([&] {
        std::this_thread::sleep_for(Millis(50));
        push.send(zmq::str_buffer("late"));
    });
    CHECK(wait_for_one(poller, pull) == "late");  // woken by the fd, not at the timeout
    sender.join();
}

TEST_CASE("A Poller finds input that a send took in on a socket it sends on", "[net][poller]") {
    // A send takes in the socket's pending commands (at most once a
    // millisecond), among them the one that announced this input: from then
    // on the socket's fd stays quiet with the input waiting.
    zmq::context_t ctx;
    auto [a, b] = bound_and_connected(ctx, zmq::socket_type::pair, zmq::socket_type::pair, "tcp://127.0.0.1:*");
    b.send(zmq::str_buffer("hello"));
    CHECK(receive_one(a) == "hello");  // connected both ways

    Poller poller;
    poller.watch(0, a, Poller::Use::send_and_receive);
    zmq::message_t m;
    REQUIRE_FALSE(a.recv(m, zmq::recv_flags::dontwait));
    poller.drained(0);

    b.send(zmq::str_buffer("waiting"));
    std::this_thread::sleep_for(Millis(100));  // it is in a's pipe, announced by a command
    a.send(zmq::str_buffer("sent"));           // which this send may take in
    CHECK(wait_for_one(poller, a) == "waiting");
    CHECK(receive_one(b) == "sent");
}

TEST_CASE("A Poller returns a socket not drained without sleeping, and plain fds while readable", "[net][poller]") {
    zmq::context_t ctx;
    auto [pull, push] =
        bound_and_connected(ctx, zmq::socket_type::pull, zmq::socket_type::push, "inproc://drover-net-poller");
    push.send(zmq::str_buffer("one"));
    push.send(zmq::str_buffer("two"));

    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    Poller poller;
    poller.watch(0, pull, Poller::Use::receive_only);
    poller.watch(1, fds[0]);
    poller.wait(Millis(5000));
    REQUIRE(poller.ready(0));
    CHECK_FALSE(poller.ready(1));
    CHECK(receive_one(pull) == "one");  // a receive loop stopped by its budget: not drained

    REQUIRE(::write(fds[1], "x", 1) == 1);
    poller.wait(Millis(5000));
    REQUIRE(poller.ready(0));
    CHECK(poller.ready(1));
    CHECK(receive_one(pull) == "two");
    zmq::message_t m;
    REQUIRE_FALSE(pull.recv(m, zmq::recv_flags::dontwait));
    poller.drained(0);

    poller.limit(1);  // the fd, still readable, is no longer watched
    poller.wait(Millis(0));
    CHECK_FALSE(poller.ready(0));
    CHECK_FALSE(poller.ready(1));
    ::close(fds[0]);
    ::close(fds[1]);
}
