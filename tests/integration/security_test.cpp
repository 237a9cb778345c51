// Integration: CURVE servers and clients of one process over tcp loopback
// (CURVE is never used on inproc): the ZAP handler, failing closed, and
// PeerGuard's revocation with the keys libzmq reports.
#include <catch2/catch.hpp>

#include <filesystem>
#include <optional>

#include <zmq_addon.hpp>

#include "drover/common/security.hpp"
#include "internal/net.hpp"

using namespace drover;
using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;

struct Fleet {
    Fleet() {
        char tmpl[] = "/tmp/drover-integration-XXXXXX";
        REQUIRE(::mkdtemp(tmpl));
        dir = tmpl;
        write_fleet(dir);
    }
    ~Fleet() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    [[nodiscard]] std::shared_ptr<Security> load(Role role, const std::string& secret = {}) const {
        SecurityOptions o;
        o.dir = dir;
        o.secret = secret;
        return std::make_shared<Security>(o, role, null_logger());
    }
    std::string dir;
};

// The next message on `s` within `timeout`, all frames.
std::optional<std::vector<zmq::message_t>> receive(zmq::socket_t& s, std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    if (drover::poll(&item, 1, timeout) <= 0) return std::nullopt;
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(s, std::back_inserter(frames), zmq::recv_flags::dontwait)) return std::nullopt;
    return frames;
}

// A ROUTER for the workers' domain, CURVE with `broker`'s keys, bound on an
// ephemeral loopback port (linger 0).
zmq::socket_t workers_server(zmq::context_t& ctx, const std::shared_ptr<Security>& broker) {
    zmq::socket_t server(ctx, zmq::socket_type::router);
    server.set(zmq::sockopt::linger, 0);
    bind_server(ctx, server, broker.get(), Domain::workers, "tcp://127.0.0.1:*");
    return server;
}

zmq::socket_t client(zmq::context_t& ctx, const Security& security, const std::string& endpoint) {
    zmq::socket_t c(ctx, zmq::socket_type::dealer);
    c.set(zmq::sockopt::linger, 0);
    connect_client(c, &security, endpoint);
    return c;
}

}  // namespace

TEST_CASE("an allowed key gets in under its name, another is refused", "[integration]") {
    Fleet fleet;
    zmq::context_t ctx;
    auto broker = fleet.load(Role::broker);
    auto server = workers_server(ctx, broker);
    const auto endpoint = last_endpoint(server);
    const auto worker = fleet.load(Role::worker);

    auto allowed = client(ctx, *worker, endpoint);
    allowed.send(zmq::str_buffer("hello"), zmq::send_flags::none);
    auto got = receive(server, 3000ms);
    REQUIRE(got);
    REQUIRE(got->size() == 2);
    CHECK(std::string(got->back().gets("User-Id")) == "worker");

    // A producer's key is not on the workers' list.
    auto producer = fleet.load(Role::producer);
    auto wrong_list = client(ctx, *producer, endpoint);
    wrong_list.send(zmq::str_buffer("let me in"), zmq::send_flags::none);
    CHECK_FALSE(receive(server, 700ms));
}

TEST_CASE("a CURVE server whose context runs no ZAP handler refuses even an allowed key (fails closed)",
          "[integration]") {
    Fleet fleet;
    auto broker = fleet.load(Role::broker);
    auto worker = fleet.load(Role::worker);
    zmq::context_t ctx;  // no bind_server here: no handler ever starts in it
    zmq::socket_t server(ctx, zmq::socket_type::router);
    server.set(zmq::sockopt::linger, 0);
    make_curve_server(server, *broker, Domain::workers);
    server.bind("tcp://127.0.0.1:*");
    auto c = client(ctx, *worker, last_endpoint(server));
    c.send(zmq::str_buffer("hello"), zmq::send_flags::none);
    CHECK_FALSE(receive(server, 1500ms));
}

TEST_CASE("PeerGuard drops the messages of a key removed from the allow-list, and only those", "[integration]") {
    Fleet fleet;
    const auto allow = fleet.dir + "/allow/workers";
    write_key_pair(fleet.dir, "w1", generate_key_pair());
    write_key_pair(fleet.dir, "w2", generate_key_pair());
    fs::copy_file(fleet.dir + "/w1.key", allow + "/w1.key");
    fs::copy_file(fleet.dir + "/w2.key", allow + "/w2.key");
    zmq::context_t ctx;
    auto broker = fleet.load(Role::broker);
    auto server = workers_server(ctx, broker);
    const auto endpoint = last_endpoint(server);
    PeerGuard guard(broker.get(), Domain::workers, null_logger());

    auto w1_keys = fleet.load(Role::worker, fleet.dir + "/w1.key_secret");
    auto w2_keys = fleet.load(Role::worker, fleet.dir + "/w2.key_secret");
    auto w1 = client(ctx, *w1_keys, endpoint);
    auto w2 = client(ctx, *w2_keys, endpoint);
    std::map<std::string, std::string> peer_of;  // body -> routing id
    const auto round = [&](const char* tag) {
        w1.send(zmq::buffer(std::string("w1 ") + tag), zmq::send_flags::none);
        w2.send(zmq::buffer(std::string("w2 ") + tag), zmq::send_flags::none);
        std::map<std::string, bool> admitted;
        for (int i = 0; i < 2; ++i) {
            auto got = receive(server, 3000ms);
            REQUIRE(got);
            const auto peer = (*got)[0].to_string();
            const auto body = got->back().to_string();
            peer_of[body.substr(0, 2)] = peer;
            admitted[body.substr(0, 2)] = guard.admit(peer, got->back());
        }
        return admitted;
    };
    auto admitted = round("before");
    CHECK(admitted["w1"]);
    CHECK(admitted["w2"]);
    CHECK(guard.revoked().empty());

    fs::remove(allow + "/w1.key");
    broker->reload();
    CHECK(guard.revoked() == std::vector<std::string>{peer_of["w1"]});
    CHECK(guard.revoked().empty());  // once
    admitted = round("after");
    CHECK_FALSE(admitted["w1"]);
    CHECK(admitted["w2"]);
}

TEST_CASE("a sink's PeerGuard drops results from a worker key removed from the allow-list", "[integration]") {
    Fleet fleet;
    const auto allow = fleet.dir + "/allow/workers";
    write_key_pair(fleet.dir, "w1", generate_key_pair());
    fs::copy_file(fleet.dir + "/w1.key", allow + "/w1.key");
    zmq::context_t ctx;
    auto producer = fleet.load(Role::producer);
    zmq::socket_t sink(ctx, zmq::socket_type::pull);
    sink.set(zmq::sockopt::linger, 0);
    bind_server(ctx, sink, producer.get(), Domain::sink, "tcp://127.0.0.1:*");
    const auto endpoint = keyed_endpoint(last_endpoint(sink), producer->keys().public_key);
    PeerGuard guard(producer.get(), Domain::sink, null_logger());

    auto w1_keys = fleet.load(Role::worker, fleet.dir + "/w1.key_secret");
    auto w2_keys = fleet.load(Role::worker);  // "worker", on the list from the start
    zmq::socket_t w1(ctx, zmq::socket_type::push), w2(ctx, zmq::socket_type::push);
    for (auto* s : {&w1, &w2}) s->set(zmq::sockopt::linger, 0);
    connect_client(w1, w1_keys.get(), endpoint);
    connect_client(w2, w2_keys.get(), endpoint);
    const auto admitted_from = [&](zmq::socket_t& s) {
        s.send(zmq::str_buffer("result"), zmq::send_flags::none);
        auto got = receive(sink, 3000ms);
        REQUIRE(got);
        return guard.admit(got->back());
    };
    CHECK(admitted_from(w1));
    CHECK(admitted_from(w2));
    fs::remove(allow + "/w1.key");
    producer->reload();
    CHECK_FALSE(admitted_from(w1));
    CHECK(admitted_from(w2));
}
