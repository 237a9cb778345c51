// Integration tests of the socket helpers every process sends with: bodies
// handed to ZeroMQ without a copy, and a body that could not be sent kept
// for the next try.
#include <chrono>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "drover/net.hpp"
#include "drover/protocol.hpp"

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
