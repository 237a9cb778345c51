// Adversarial: one frontend client tries to grow the broker's memory without
// bound (unique names, repeated ids, unread replies), and a producer's window
// against --max-queued (issue 18, items 6 and 7).
#include <atomic>
#include <chrono>
#include <fstream>
#include <set>
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

// The broker's resident memory in KiB (VmRSS), 0 if it cannot be read.
std::size_t rss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string key;
    while (in >> key) {
        if (key == "VmRSS:") {
            std::size_t kib = 0;
            in >> kib;
            return kib;
        }
        std::getline(in, key);
    }
    return 0;
}

const std::string k_secret(proto::k_task_secret_bytes, 's');

// SUBMITs `tasks` from `peer` in batches of 1,000, each to `reply_to`.
void submit_all(RawPeer& peer, const std::vector<proto::Task>& tasks, const std::string& reply_to) {
    for (std::size_t i = 0; i < tasks.size(); i += 1000) {
        std::vector<proto::TaskRef> batch;
        for (std::size_t j = i; j < std::min(tasks.size(), i + 1000); ++j) {
            const auto& t = tasks[j];
            batch.push_back(proto::TaskRef{t.id, t.name, t.args, reply_to, 0, 1, 0, t.detached, false, k_secret, 0});
        }
        REQUIRE(peer.send(proto::Command::submit, proto::encode(batch.data(), batch.size())));
    }
}

// A sink that reads and discards what the broker pushes to it.
class DrainingSink {
public:
    explicit DrainingSink(zmq::context_t& ctx) : socket_(ctx, zmq::socket_type::pull) {
        socket_.set(zmq::sockopt::linger, 0);
        socket_.bind("tcp://127.0.0.1:*");
        endpoint = socket_.get(zmq::sockopt::last_endpoint);
        thread_ = std::thread([this] {
            zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
            while (!stop_) {
                if (zmq::poll(&item, 1, 50ms) <= 0) continue;
                zmq::message_t m;
                while (socket_.recv(m, zmq::recv_flags::dontwait)) {}
            }
        });
    }
    ~DrainingSink() {
        stop_ = true;
        thread_.join();
    }
    std::string endpoint;

private:
    zmq::socket_t socket_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// Waits until the broker holds no task, then a few heartbeats for it to give
// its memory back; returns its RSS then.
std::size_t idle_rss_kib(const BrokerProcess& broker) {
    const auto idle = wait_status(
        broker.frontend, [](const nlohmann::json& s) { return s["held"] == 0; }, 60s);
    REQUIRE(idle);
    REQUIRE((*idle)["held"] == 0);
    std::this_thread::sleep_for(1500ms);  // 3 ticks of 200 ms: the idle broker trims its heap at a tick
    return rss_kib(broker.process->pid());
}

const std::vector<std::string> k_fast = {"--heartbeat-ms", "200"};

}  // namespace

TEST_CASE("200,000 tasks with unique names, all settled, leave the idle broker's memory where it began",
          "[adversarial]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    zmq::context_t ctx;
    DrainingSink sink(ctx);
    const auto before = idle_rss_kib(broker);
    REQUIRE(before > 0);

    // No worker: the tasks wait in one queue each. The client then cancels
    // them (each ends `cancelled`, to its sink) and settles them: the broker
    // holds nothing.
    RawPeer producer(ctx, zmq::socket_type::dealer, broker.frontend);
    constexpr int n = 200'000;
    std::vector<proto::Task> tasks(n);
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
        tasks[static_cast<std::size_t>(i)].id = "u" + std::to_string(i);
        tasks[static_cast<std::size_t>(i)].name = "unique-name-" + std::to_string(i);
        tasks[static_cast<std::size_t>(i)].args = std::string("\x91\x01", 2);
        tasks[static_cast<std::size_t>(i)].detached = true;  // they outlive a producer taken for gone
        ids.push_back(tasks[static_cast<std::size_t>(i)].id);
    }
    submit_all(producer, tasks, sink.endpoint);
    const auto full = wait_status(
        broker.frontend, [&](const nlohmann::json& s) { return s["queued"] == n; }, 60s);
    REQUIRE(full);
    REQUIRE((*full)["queued"] == n);
    const auto loaded = rss_kib(broker.process->pid());
    for (std::size_t i = 0; i < ids.size(); i += 4096) {
        const std::vector<std::string> some(ids.begin() + static_cast<std::ptrdiff_t>(i),
                                            ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), i + 4096)));
        REQUIRE(producer.send(proto::Command::cancel, proto::encode(proto::Ids{some})));
        REQUIRE(producer.send(proto::Command::settle, proto::encode(proto::Settle{some, 0, {}})));
    }
    const auto after = idle_rss_kib(broker);
    INFO("broker RSS KiB: idle at start " << before << ", 200,000 names queued " << loaded << ", idle after " << after);
    // Each name cost about 800 bytes for as long as the broker ran (160 MiB here).
    CHECK(after < before + 24 * 1024);
}

TEST_CASE("a client that never reads cannot grow the broker by submitting the same ended detached ids again",
          "[adversarial]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    // A live worker, so that a task whose name it does not run ends at once
    // ("unknown task"): its outcome waits at the broker for a SETTLE that
    // never comes, and each submit of its id again is answered.
    Process worker = start_worker(dir, broker.backend, "worker.log", {"--pool", "solo", "--heartbeat-ms", "200"});
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    const auto before = idle_rss_kib(broker);
    REQUIRE(before > 0);

    zmq::context_t ctx;
    RawPeer producer(ctx, zmq::socket_type::dealer, broker.frontend);
    producer.socket.set(zmq::sockopt::rcvhwm, 1);  // it never reads: what the broker sends it stays queued there
    std::vector<proto::Task> tasks(1000);
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        tasks[i].id = "ended-" + std::to_string(i);
        tasks[i].name = "no-such-task";
        tasks[i].detached = true;
    }
    // A standalone sink that is not there: outcomes for it cannot leave either.
    const std::string nowhere = "tcp://127.0.0.1:" + std::to_string(free_tcp_port());
    constexpr int k_repeats = 2000;  // 2,000,000 submits of 1,000 ids
    for (int r = 0; r < k_repeats; ++r) {
        submit_all(producer, tasks, nowhere);
        if (r % 100 == 99) (void)producer.send(proto::Command::heartbeat);
    }
    // Every submit has been read once the broker counts them all.
    const auto read = wait_status(
        broker.frontend,
        [&](const nlohmann::json& s) { return dropped_count(s, "unread_replies") > 0 && s["held"] == 1000; }, 60s);
    REQUIRE(read);
    std::this_thread::sleep_for(1500ms);  // ticks of 200 ms: the burst is over, and the broker trims its heap
    const auto after = rss_kib(broker.process->pid());
    INFO("broker RSS KiB: idle at start " << before << ", after " << k_repeats << " x 1,000 repeated submits " << after
                                          << "; status " << read->dump());
    CHECK(dropped_count(*read, "unread_replies") > 0);
    CHECK(after < before + 48 * 1024);
}

TEST_CASE("100,000 STATUS requests from a client that never reads hold a bounded reply queue, counted",
          "[adversarial]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    const auto before = idle_rss_kib(broker);
    REQUIRE(before > 0);
    zmq::context_t ctx;
    RawPeer asker(ctx, zmq::socket_type::dealer, broker.frontend);
    asker.socket.set(zmq::sockopt::rcvhwm, 1);
    constexpr int n = 100'000;
    for (int i = 0; i < n; ++i) REQUIRE(asker.send(proto::Command::status));
    // Read them all: the count of dropped replies stops growing (what the
    // kernel's buffers and the client's queue took is not counted).
    std::uint64_t last = 0;
    const auto seen = wait_status(
        broker.frontend,
        [&](const nlohmann::json& s) {
            const auto now = dropped_count(s, "unread_replies");
            const bool still = now > 0 && now == last;
            last = now;
            if (!still) std::this_thread::sleep_for(300ms);
            return still;
        },
        60s);
    REQUIRE(seen);
    const auto after = rss_kib(broker.process->pid());
    INFO("broker RSS KiB: idle at start " << before << ", after " << n << " unread STATUS replies " << after
                                          << "; dropped " << (*seen)["dropped"].dump());
    CHECK(dropped_count(*seen, "unread_replies") > n / 4);
    CHECK(after < before + 16 * 1024);
}

namespace {

// Runs `count` echo tasks through drover-producer with `window` against a
// broker with --max-queued `max_queued` and two workers; CHECKs that every
// one ended ok, none rejected. Returns the broker's totals after.
nlohmann::json run_window(int count, int window, int max_queued) {
    TempDir dir;
    BrokerProcess broker(dir, {"--max-queued", std::to_string(max_queued)});
    const auto workers = start_workers(dir, broker.backend, 2, {"--pool", "threads", "-c", "2"});
    REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
    (void)write_tasks(dir.file("tasks.jsonl"), count, "echo", {1});
    Process producer = start_producer(dir, broker.frontend, {"--window", std::to_string(window), "submit"}, "out.jsonl",
                                      "tasks.jsonl");
    const auto code = producer.wait(120s);
    REQUIRE(code.has_value());
    CHECK(*code == 0);
    const auto totals = require_status(broker.frontend, 5000ms)["totals"];
    std::size_t ok = 0, rejected = 0;
    for (const auto& l : read_json_lines(dir.file("out.jsonl"))) {
        ok += l["status"] == "ok";
        rejected += l["status"] == "rejected";
    }
    INFO("ok " << ok << " rejected " << rejected << " broker totals " << totals.dump());
    CHECK(rejected == 0);
    CHECK(ok == static_cast<std::size_t>(count));
    return totals;
}

}  // namespace

TEST_CASE("a producer whose window fits under --max-queued is never rejected for queue_full", "[adversarial]") {
    const auto totals = run_window(20'000, 500, 1000);
    INFO("broker totals " << totals.dump());
    CHECK(totals["rejected"] == 0);
}

TEST_CASE("a producer whose window does not fit backs off instead of being rejected thousands of times",
          "[adversarial]") {
    const auto totals = run_window(20'000, 5000, 1000);
    INFO("broker totals " << totals.dump());
    // The broker refuses the first window that does not fit (up to 4,000);
    // then the client keeps to what it took. Without the back-off each
    // refusal made room for more, refused in turn: about half of all tasks.
    CHECK(totals["rejected"].get<std::uint64_t>() < 5000);
}
