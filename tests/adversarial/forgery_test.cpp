// Adversarial tests of who may end a task and who owns it: forged RESULTs
// (raw frames to the broker's backend and straight at sinks), SETTLE and
// CANCEL from a producer that did not submit the tasks, colliding detached
// ids, and a SUBMIT batch with malformed tasks among good ones.
#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "../e2e/cluster_fixture.hpp"
#include "drover/common/protocol.hpp"
#include "internal/proof.hpp"
#include "raw_peer.hpp"

using namespace std::chrono_literals;
using drover::proto::Command;
using nlohmann::json;
namespace proto = drover::proto;
using namespace drover::test;

namespace {

// `n` RESULTs a forger makes up for ids prefix0..: status ok, worker "evil",
// a token it cannot know (0, then a guess).
std::string forged_results(const std::string& prefix, int n, const std::string& task) {
    proto::Results r;
    for (int i = 0; i < n; ++i) {
        proto::Outcome o;
        o.id = prefix + std::to_string(i);
        o.task = task;
        o.status = proto::Status::ok;
        msgpack::sbuffer b;
        msgpack::pack(b, std::string("evil"));
        o.result.assign(b.data(), b.size());
        o.attempt = 1;
        o.worker = "evil";
        o.token = static_cast<std::uint64_t>(i) * 0x9e3779b97f4a7c15ULL;
        r.results.push_back(std::move(o));
    }
    return proto::encode(r);
}

// Waits until the broker has accepted `n` tasks in all.
void wait_submitted(const std::string& frontend, std::uint64_t n) {
    REQUIRE(wait_status(
        frontend, [&](const json& s) { return s["totals"]["accepted"].get<std::uint64_t>() >= n; }, 20s));
}

}  // namespace

TEST_CASE_METHOD(BrokerAndWorker,
                 "a RESULT for an attempt its sender was never given ends nothing, at the broker or at a sink",
                 "[adversarial][forgery]") {
    SinkProcess sink(dir, broker.frontend, {"--expect", "30"});
    const auto sink_address = sink.address();
    // 30 detached tasks of 100 ms on one solo worker: most wait in the queue.
    write_tasks(dir.file("tasks.jsonl"), 30, "sleep_ms", json::array({100}), "job-");
    Process producer =
        start_producer(dir, broker.frontend, {"submit", "--reply-to", sink_address}, "accepted.jsonl", "tasks.jsonl");
    REQUIRE(producer.wait(30s) == 0);

    const auto body = forged_results("job-", 30, "sleep_ms");
    zmq::context_t ctx;
    // A peer that never said HELLO, straight to the backend.
    RawPeer stranger(ctx, zmq::socket_type::dealer, broker.backend);
    REQUIRE(stranger.send(Command::result, body));
    // A registered worker for the same task name that was dispatched none of them.
    RawPeer registered(ctx, zmq::socket_type::dealer, broker.backend);
    REQUIRE(registered.send(Command::hello, proto::encode(solo_hello("evil", "evil", {"sleep_ms"}))));
    REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
    REQUIRE(registered.send(Command::result, body));
    // And pushed straight at the sink's PULL socket.
    RawPeer push(ctx, zmq::socket_type::push, drover::split_sink_address(sink_address).reply_to);
    REQUIRE(push.send(Command::result, body));

    REQUIRE(sink.wait(60s) == 0);
    const auto lines = read_json_lines(sink.out_path());
    REQUIRE(lines.size() == 30);
    std::set<std::string> ids;
    for (const auto& l : lines) {
        INFO(l.dump());
        CHECK(l["status"] == "ok");
        CHECK(l["worker"] != "evil");
        CHECK(l["result"] != "evil");
        ids.insert(l["id"].get<std::string>());
    }
    CHECK(ids.size() == 30);
    const auto status = require_status(broker.frontend, 3000ms);
    INFO(status.dump());
    CHECK(dropped_count(status, "forged_result") >= 60);  // both backend peers, 30 each
    const auto sink_log = sink.log();
    INFO(sink_log);
    CHECK(sink_log.find("sink.dropped reason=forged") != std::string::npos);
    CHECK(sink_log.find("forged=30") != std::string::npos);
}

TEST_CASE_METHOD(BrokerAndWorker,
                 "a live producer's tasks cannot be ended by a forged RESULT at the broker or at its own sink",
                 "[adversarial][forgery]") {
    const auto sink_ep = "tcp://127.0.0.1:" + std::to_string(free_tcp_port());
    write_tasks(dir.file("tasks.jsonl"), 30, "sleep_ms", json::array({100}), "t");
    Process producer = start_producer(dir, broker.frontend, {"--sink", sink_ep, "submit"}, "out.jsonl", "tasks.jsonl");
    wait_submitted(broker.frontend, 30);

    const auto body = forged_results("t", 30, "sleep_ms");
    zmq::context_t ctx;
    RawPeer stranger(ctx, zmq::socket_type::dealer, broker.backend);
    REQUIRE(stranger.send(Command::result, body));
    RawPeer push(ctx, zmq::socket_type::push, sink_ep);
    REQUIRE(push.send(Command::result, body));

    REQUIRE(producer.wait(60s) == 0);
    const auto lines = read_json_lines(dir.file("out.jsonl"));
    REQUIRE(lines.size() == 30);
    for (const auto& l : lines) {
        INFO(l.dump());
        CHECK(l["status"] == "ok");
        CHECK(l["worker"] != "evil");
    }
    const auto err = read_file(dir.file("out.jsonl.err"));
    INFO(err);
    CHECK(err.find("forged outcomes") != std::string::npos);
    CHECK(dropped_count(require_status(broker.frontend, 3000ms), "forged_result") >= 30);
}

TEST_CASE_METHOD(
    BrokerAndWorker,
    "SETTLE and CANCEL from a producer that did not submit the tasks are refused, and colliding ids rejected",
    "[adversarial][ownership]") {
    SinkProcess sink_a(dir, broker.frontend, {"--expect", "30"}, "a");
    SinkProcess sink_b(dir, broker.frontend, {}, "b");
    const auto a = sink_a.address(), b = sink_b.address();
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 30, "sleep_ms", json::array({100}), "job-");
    Process first = start_producer(dir, broker.frontend, {"submit", "--reply-to", a}, "first.jsonl", "tasks.jsonl");
    REQUIRE(first.wait(30s) == 0);

    // Another producer submits the same ids for its own sink while A's run.
    Process second = start_producer(dir, broker.frontend, {"submit", "--reply-to", b}, "second.jsonl", "tasks.jsonl");
    REQUIRE(second.wait(30s).has_value());
    const auto second_lines = read_json_lines(dir.file("second.jsonl"));
    CHECK(second_lines.size() == 30);
    std::size_t duplicates = 0, accepted = 0;
    for (const auto& l : second_lines) {
        if (l["status"] == "rejected" && l.value("error", "").find("duplicate_id") != std::string::npos) ++duplicates;
        if (l["status"] == "accepted") ++accepted;
    }
    // Every id is told apart: rejected while A's task is held, or accepted
    // (and then run for B) once A's has ended and settled.
    CHECK(duplicates + accepted == 30);
    CHECK(duplicates >= 1);

    // A third peer on the frontend settles and cancels A's tasks.
    zmq::context_t ctx;
    RawPeer thief(ctx, zmq::socket_type::dealer, broker.frontend);
    const std::vector<std::string> id_list(ids.begin(), ids.end());
    proto::Settle settle{id_list, 0, {}};
    REQUIRE(thief.send(Command::settle, proto::encode(settle)));
    proto::Settle with_proofs{id_list, 0, std::vector<std::uint64_t>(id_list.size(), 42)};
    REQUIRE(thief.send(Command::settle, proto::encode(with_proofs)));
    REQUIRE(thief.send(Command::cancel, proto::encode(proto::Ids{id_list})));

    REQUIRE(sink_a.wait(60s) == 0);
    CHECK(ok_ids(sink_a.out_path()) == ids);
    const auto status = require_status(broker.frontend, 3000ms);
    INFO(status.dump());
    CHECK(dropped_count(status, "not_owner") >= 1);
    // B's accepted ones (if any) reach B; none is lost.
    if (accepted > 0) {
        REQUIRE(wait_status(
            broker.frontend, [](const json& s) { return s["held"].get<std::uint64_t>() == 0; }, 30s));
        std::this_thread::sleep_for(300ms);
        CHECK(read_json_lines(sink_b.out_path()).size() == accepted);
    }
}

TEST_CASE_METHOD(BrokerAndWorker,
                 "a SUBMIT with malformed tasks rejects each alone, naming its field, and accepts the rest",
                 "[adversarial][submit]") {
    SinkProcess sink(dir, broker.frontend, {"--expect", "2"});
    const auto address = drover::split_sink_address(sink.address());
    REQUIRE(address.key.size() == drover::k_secret_bytes);

    // Written by hand: the project's encoder cannot make these mistakes.
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    const auto args = [] {
        msgpack::sbuffer a;
        msgpack::pack(a, std::vector<std::string>{"x"});
        return std::string(a.data(), a.size());
    }();
    const auto bin = [&](const std::string& s) {
        pk.pack_bin(static_cast<std::uint32_t>(s.size()));
        pk.pack_bin_body(s.data(), static_cast<std::uint32_t>(s.size()));
    };
    // {id, name: echo, args, secret, detached: true} + one extra field
    const auto task = [&](auto&& id, const char* extra_key, auto&& extra_value, bool has_extra) {
        pk.pack_map(has_extra ? 6 : 5);
        pk.pack(std::string("id"));
        pk.pack(id);
        pk.pack(std::string("name"));
        pk.pack(std::string("echo"));
        pk.pack(std::string("args"));
        bin(args);
        pk.pack(std::string("secret"));
        std::string id_text;
        if constexpr (std::is_convertible_v<decltype(id), std::string>) id_text = id;
        bin(drover::task_secret(address.key, id_text));
        pk.pack(std::string("detached"));
        pk.pack(true);
        if (has_extra) {
            pk.pack(std::string(extra_key));
            pk.pack(extra_value);
        }
    };
    pk.pack_map(2);
    pk.pack(std::string("reply_to"));
    pk.pack(address.reply_to);
    pk.pack(std::string("tasks"));
    pk.pack_array(6);
    task(std::string("good-1"), "", 0, false);
    task(42, "", 0, false);                                  // an integer id
    task(std::string(""), "", 0, false);                     // an empty id
    task(std::string("bad-ma"), "max_attempts", 2.5, true);  // a float
    task(std::string("bad-to"), "timeout_ms", -5, true);     // negative
    task(std::string("good-2"), "", 0, false);

    zmq::context_t ctx;
    RawPeer producer(ctx, zmq::socket_type::dealer, broker.frontend, "P" + std::string("advsub01"));
    REQUIRE(producer.send(Command::submit, std::string(buf.data(), buf.size())));

    std::set<std::string> accepted;
    std::map<std::string, std::string> rejected;  // id -> reason
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while ((accepted.size() < 2 || rejected.size() < 4) && std::chrono::steady_clock::now() < deadline) {
        auto m = producer.receive(500ms);
        if (!m) continue;
        if (m->first == Command::accepted) {
            auto ids = proto::decode_ids(m->second);
            REQUIRE(ids);
            accepted.insert(ids->ids.begin(), ids->ids.end());
        } else if (m->first == Command::rejected) {
            auto r = proto::decode_rejected(m->second);
            REQUIRE(r);
            for (const auto& id : r->ids) rejected[id] = r->reason;
        }
    }
    CHECK(accepted == std::set<std::string>{"good-1", "good-2"});
    INFO(json(rejected).dump());
    REQUIRE(rejected.size() == 4);
    CHECK(rejected["42"].find("field 'id': expected a string, got") != std::string::npos);
    CHECK(rejected[""].find("field 'id'") != std::string::npos);
    CHECK(rejected["bad-ma"].find("field 'max_attempts'") != std::string::npos);
    CHECK(rejected["bad-ma"].find("got a float") != std::string::npos);
    CHECK(rejected["bad-to"].find("field 'timeout_ms'") != std::string::npos);
    for (const auto& [id, reason] : rejected) CHECK(reason.rfind("invalid: ", 0) == 0);

    REQUIRE(sink.wait(30s) == 0);
    CHECK(ok_ids(sink.out_path()) == std::set<std::string>{"good-1", "good-2"});
    CHECK(broker.process->running());
}

TEST_CASE("a LOST from a worker key holder that is not the pool's supervisor evicts no one",
          "[adversarial][ownership]") {
    TempDir dir;
    // A 30 s liveness window: a task that ends lost sooner was ended by its supervisor's LOST.
    BrokerProcess broker(dir, {"--heartbeat-ms", "1000", "--liveness", "30"});
    Process pool = start_worker(dir, broker.backend, "pool.log",
                                {"--pool", "processes", "-c", "1", "--heartbeat-ms", "1000", "--liveness", "30"});
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    const auto status = require_status(broker.frontend, 3000ms);
    const auto id = status["workers"][0]["id"].get<std::string>();
    const auto child = status["workers"][0]["pid"].get<pid_t>();
    write_tasks(dir.file("one.jsonl"), 1, "sleep_ms", json::array({1500}), "slow-");
    Process producer = start_producer(dir, broker.frontend, {"--max-attempts", "1", "submit"}, "one.out", "one.jsonl");
    REQUIRE(wait_status(
        broker.frontend, [](const json& s) { return s["workers"][0]["held"].get<std::uint64_t>() == 1; }, 10s));

    zmq::context_t ctx;
    RawPeer rogue(ctx, zmq::socket_type::dealer, broker.backend);
    REQUIRE(rogue.send(Command::lost, proto::encode(proto::Lost{id, ""})));
    REQUIRE(rogue.send(Command::lost, proto::encode(proto::Lost{id, std::string(16, 'x')})));
    REQUIRE(producer.wait(20s) == 0);  // the task ran to its end on the worker the rogue named
    auto after = require_status(broker.frontend, 3000ms);
    CHECK(after["workers"].size() == 1);
    CHECK(dropped_count(after, "lost_refused") >= 2);

    // The pool's own supervisor is believed: a child killed mid-task is reported at once.
    write_tasks(dir.file("two.jsonl"), 1, "sleep_ms", json::array({20000}), "long-");
    Process second = start_producer(dir, broker.frontend, {"--max-attempts", "1", "submit"}, "two.out", "two.jsonl");
    REQUIRE(wait_status(
        broker.frontend, [](const json& s) { return s["workers"][0]["held"].get<std::uint64_t>() == 1; }, 10s));
    ::kill(child, SIGKILL);
    REQUIRE(second.wait(15s) == 1);
    const auto lines = read_json_lines(dir.file("two.out"));
    REQUIRE(lines.size() == 1);
    CHECK(lines[0]["status"] == "lost");
}
