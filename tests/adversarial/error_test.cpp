// Adversarial: messages the broker cannot take are answered ERROR, saying
// why, to a peer of another protocol version too; a flood of them is
// answered at most once a second for each reason, and the broker serves on.
#include <chrono>
#include <cmath>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <zmq.hpp>

#include "../e2e/cluster_fixture.hpp"
#include "drover/common/protocol.hpp"
#include "raw_peer.hpp"

using namespace drover::test;
using namespace std::chrono_literals;
namespace proto = drover::proto;

namespace {

std::string header(std::string_view protocol, std::uint8_t command) {
    std::string h(protocol);
    h.push_back(static_cast<char>(command));
    return h;
}

std::string header(proto::Command c) { return header(proto::k_protocol, static_cast<std::uint8_t>(c)); }

// One bad message from a fresh peer on `endpoint`, and the ERROR it gets
// (REQUIREd within 5 s); CHECKs that nothing else follows within 300 ms.
proto::Error one_error(zmq::context_t& ctx, const std::string& endpoint, const std::vector<std::string>& frames) {
    RawPeer peer(ctx, zmq::socket_type::dealer, endpoint);
    REQUIRE(peer.send_frames(frames));
    const auto reply = peer.receive(5s);
    REQUIRE(reply);
    REQUIRE(reply->first == proto::Command::error);
    auto error = proto::decode_error(reply->second);
    REQUIRE(error);
    CHECK(error->protocol == "DRV4");
    CHECK(!error->detail.empty());
    CHECK_FALSE(peer.receive(300ms));
    return *error;
}

// The broker serves on: a HEARTBEAT is answered, a STATUS counts what was refused.
void check_serving(zmq::context_t& ctx, const BrokerProcess& broker) {
    RawPeer client(ctx, zmq::socket_type::dealer, broker.frontend);
    REQUIRE(client.send(proto::Command::heartbeat));
    const auto beat = client.receive(5s);
    REQUIRE(beat);
    CHECK(beat->first == proto::Command::heartbeat);
    const auto status = require_status(broker.frontend, 5000ms);
    INFO(status.dump());
    CHECK(dropped_total(status) >= 1);
}

}  // namespace

TEST_CASE("a message the broker cannot take is answered with one ERROR naming the reason, and it serves on",
          "[adversarial][error]") {
    TempDir dir;
    BrokerProcess broker(dir);
    zmq::context_t ctx;
    proto::Settle settle;
    settle.ids = {"a"};
    const std::string good_settle = proto::encode(settle);

    SECTION("another protocol version") {
        const auto e = one_error(ctx, broker.frontend, {header("DRV3", 0x10), good_settle});
        CHECK(e.reason == "wrong_version");
        CHECK(e.command == std::optional<std::uint8_t>(0x10));
        CHECK(e.detail.find("DRV3") != std::string::npos);
        const auto later = one_error(ctx, broker.backend, {header("DRV5", 0x01), proto::encode_empty()});
        CHECK(later.reason == "wrong_version");
    }
    SECTION("an unknown command") {
        const auto e = one_error(ctx, broker.frontend, {header("DRV4", 0x42), proto::encode_empty()});
        CHECK(e.reason == "unknown_command");
        CHECK(e.command == std::optional<std::uint8_t>(0x42));
    }
    SECTION("a body that is not msgpack") {
        const auto e = one_error(ctx, broker.frontend, {header(proto::Command::submit), "\xc1\xff garbage"});
        CHECK(e.reason == "bad_body");
        CHECK(e.command == std::optional<std::uint8_t>(0x10));
    }
    SECTION("a body with bytes after its map") {
        const auto e = one_error(ctx, broker.frontend, {header(proto::Command::settle), good_settle + '\x00'});
        CHECK(e.reason == "trailing_bytes");
        CHECK(e.command == std::optional<std::uint8_t>(0x13));
    }
    SECTION("a command the socket does not take") {
        const auto e = one_error(ctx, broker.backend, {header(proto::Command::submit), good_settle});
        CHECK(e.reason == "unexpected");
        CHECK(e.detail.find("SUBMIT") != std::string::npos);
    }
    check_serving(ctx, broker);
}

TEST_CASE("a message that is not a DRV message is answered ERROR, and an ERROR never is", "[adversarial][error]") {
    TempDir dir;
    BrokerProcess broker(dir);
    zmq::context_t ctx;
    SECTION("a header that is not one, and too many frames") {
        const auto bad = one_error(ctx, broker.frontend, {"GET / HTTP/1.1", ""});
        CHECK(bad.reason == "bad_header");
        CHECK_FALSE(bad.command);
        const auto five = one_error(ctx, broker.backend, {"HELLO", proto::encode_empty()});
        CHECK(five.reason == "bad_header");
        CHECK_FALSE(five.command);
        const auto frames = one_error(ctx, broker.frontend, {header(proto::Command::status), "", "", ""});
        CHECK(frames.reason == "bad_frames");
    }
    SECTION("an ERROR, of any version, is never answered") {
        for (const auto* version : {"DRV4", "DRV3"}) {
            RawPeer peer(ctx, zmq::socket_type::dealer, broker.frontend);
            REQUIRE(peer.send_frames({header(version, 0x7f), proto::encode(proto::Error{"bad_body", "", {}})}));
            CHECK_FALSE(peer.receive(500ms));
        }
    }
    check_serving(ctx, broker);
}

TEST_CASE("a flood of 100,000 bad messages is answered at most once a second for each reason", "[adversarial][error]") {
    TempDir dir;
    BrokerProcess broker(dir);
    zmq::context_t ctx;
    RawPeer flooder(ctx, zmq::socket_type::dealer, broker.frontend);
    const auto start = std::chrono::steady_clock::now();
    constexpr int n = 100'000;
    for (int i = 0; i < n; ++i) {
        // Two reasons, alternating: each has its own once a second.
        const auto h = i % 2 ? header("DRV4", 0x42) : header("DRV3", 0x10);
        REQUIRE(flooder.send_frames({h, proto::encode_empty()}));
    }
    const auto read = wait_status(
        broker.frontend,
        [&](const nlohmann::json& s) {
            return dropped_count(s, "unknown_command") + dropped_count(s, "wrong_version") >= std::uint64_t{n};
        },
        60s);
    REQUIRE(read);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    int errors = 0;
    while (const auto m = flooder.receive(300ms)) {
        REQUIRE(m->first == proto::Command::error);
        ++errors;
    }
    INFO("ERRORs " << errors << " in " << seconds << " s; status " << read->dump());
    CHECK(errors >= 2);
    CHECK(errors <= 2 * (static_cast<int>(std::ceil(seconds)) + 1));
    CHECK((*read)["errors_sent"].get<int>() == errors);
    // A second later the same peer and reason are answered again, once.
    std::this_thread::sleep_for(1100ms);
    for (int i = 0; i < 100; ++i) REQUIRE(flooder.send_frames({header("DRV4", 0x42), proto::encode_empty()}));
    const auto again = flooder.receive(5s);
    REQUIRE(again);
    CHECK(again->first == proto::Command::error);
    CHECK_FALSE(flooder.receive(300ms));
    // Still serving.
    REQUIRE(flooder.send(proto::Command::heartbeat));
    const auto beat = flooder.receive(5s);
    REQUIRE(beat);
    CHECK(beat->first == proto::Command::heartbeat);
}
