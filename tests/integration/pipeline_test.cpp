// Integration: broker, worker and client in one process over inproc://.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <spdlog/sinks/base_sink.h>

#include "drover/broker/broker.hpp"
#include "drover/client/client.hpp"
#include "drover/client/status.hpp"
#include "drover/cluster/local_cluster.hpp"
#include "drover/worker/worker.hpp"
#include "internal/net.hpp"

using namespace std::chrono_literals;

namespace {

drover::Registry builtins() {
    drover::Registry r;
    drover::add_builtin_tasks(r);
    r.add("square", [](double x) { return x * x; });
    return r;
}

drover::ClientOptions client_options(const std::string& broker, const std::string& sink) {
    drover::ClientOptions o;
    o.broker = broker;
    o.sink = sink;
    return o;
}

drover::BrokerConfig broker_config(std::string frontend, std::string backend) {
    drover::BrokerConfig bc;
    bc.frontend = std::move(frontend);
    bc.backend = std::move(backend);
    return bc;
}

// A broker or a worker on a thread of the test, stopped and joined when it
// goes (also when a failed REQUIRE ends the test early).
void prepare(drover::Broker& broker) { broker.bind(); }
void prepare(drover::Worker&) {}

template <class Daemon>
class OnThread {
public:
    template <class... Args>
    explicit OnThread(Args&&... args) : daemon_(std::forward<Args>(args)..., drover::null_logger()) {
        prepare(daemon_);
        thread_ = std::thread([this] { (void)daemon_.run(stop_); });
    }
    ~OnThread() {
        stop_.request();
        thread_.join();
    }
    OnThread(const OnThread&) = delete;
    OnThread& operator=(const OnThread&) = delete;
    const Daemon& get() const { return daemon_; }

private:
    drover::StopSource stop_;
    Daemon daemon_;
    std::thread thread_;
};
using BrokerThread = OnThread<drover::Broker>;
using WorkerThread = OnThread<drover::Worker>;

// A worker's options for the broker on a test's thread.
drover::WorkerOptions worker_options(const BrokerThread& broker) {
    drover::WorkerOptions wo;
    wo.broker = broker.get().backend_endpoint();
    return wo;
}

}  // namespace

TEST_CASE("a local threads cluster maps sum_random over 1,000 tasks in order", "[integration]") {
    zmq::context_t ctx;
    const auto registry = builtins();
    drover::LocalCluster cluster(ctx, registry, {2, "threads", {}, 1}, drover::null_logger());
    drover::Client client(ctx, client_options(cluster.frontend(), cluster.sink_endpoint()));
    std::vector<std::int64_t> args(1000, 10000);
    const auto results = client.map("sum_random", args);
    REQUIRE(results.size() == 1000);
    std::set<std::string> ids;
    for (const auto& r : results) {
        REQUIRE(r.ok());
        const auto sum = r.as<std::int64_t>();
        CHECK(sum >= 10000);
        CHECK(sum <= 1000000);
        ids.insert(r.id);
    }
    CHECK(ids.size() == 1000);
    CHECK(client.duplicates_dropped() == 0);
}

TEST_CASE("tasks with caller-chosen ids, one the id of a finished task, end once each next to numbered ones",
          "[integration]") {
    zmq::context_t ctx;
    const auto registry = builtins();
    drover::LocalCluster cluster(ctx, registry, {2, "threads", {}, 1}, drover::null_logger());
    drover::Client client(ctx, client_options(cluster.frontend(), cluster.sink_endpoint()));
    // Callbacks run on the client's I/O thread, and Catch's assertions are
    // for the test's own thread only: they record, the test checks.
    std::mutex m;
    std::map<std::string, drover::Result> got;
    int twice = 0;  // outcomes for an id that already had one
    const auto keep = [&](drover::Result&& r) {
        std::lock_guard lock(m);
        if (!got.emplace(r.id, std::move(r)).second) ++twice;
    };
    // The client's own id of a finished task, given again by the caller (a
    // resubmission): it must not be confused with the client's numbered tasks.
    const auto first = client.submit_packed("echo", drover::pack_args(0), keep);
    client.wait_all();
    const auto dot = first.rfind('.');
    REQUIRE(dot != std::string::npos);
    const std::string prefix = first.substr(0, dot + 1);
    {
        std::lock_guard lock(m);
        REQUIRE(got.count(first) == 1);
        got.erase(first);  // before its resubmission, whose result may come at once
    }
    drover::TaskOptions again;
    again.id = first;
    std::vector<std::string> ids{first};
    ids.push_back(client.submit_packed("echo", drover::pack_args(-1), keep, again));
    CHECK(ids.back() == first);
    // Ids in the client's own form that it has not given yet, and plain ones.
    for (int i = 2; i <= 6; ++i) {
        drover::TaskOptions o;
        o.id = prefix + std::to_string(i);
        ids.push_back(client.submit_packed("echo", drover::pack_args(1000 + i), keep, o));
    }
    // The largest number of ten digits: the numbering goes on past it, with eleven.
    drover::TaskOptions far;
    far.id = prefix + "~~~~~~~~~~";
    ids.push_back(client.submit_packed("echo", drover::pack_args(99), keep, far));
    drover::TaskOptions plain;
    plain.id = "job-7";  // still running when its id is given again
    ids.push_back(client.submit_packed("sleep_ms", drover::pack_args(300), keep, plain));
    CHECK_THROWS_WITH(client.submit_packed("echo", drover::pack_args(8), keep, plain),
                      Catch::Contains("duplicate id 'job-7'"));
    for (int i = 0; i < 50; ++i) ids.push_back(client.submit_packed("echo", drover::pack_args(i), keep));
    client.wait_all();
    std::lock_guard lock(m);
    CHECK(twice == 0);
    CHECK(got.size() == ids.size() - 1);  // `first` twice
    std::set<std::string> unique(ids.begin(), ids.end());
    CHECK(unique.size() == ids.size() - 1);
    for (const auto& [id, r] : got) REQUIRE(r.ok());
    CHECK(got.at(first).as<int>() == -1);
    for (int i = 2; i <= 6; ++i) CHECK(got.at(prefix + std::to_string(i)).as<int>() == 1000 + i);
    CHECK(got.at("job-7").as<int>() == 300);
    CHECK(got.at(prefix + "~~~~~~~~~~").as<int>() == 99);
    CHECK(ids.back().size() == prefix.size() + 11);  // numbered past the caller's id
    CHECK(client.duplicates_dropped() == 0);
}

TEST_CASE("a task retried after a timeout onto the same worker keeps its own deadline, and late results go nowhere",
          "[integration]") {
    zmq::context_t ctx;
    auto registry = builtins();
    // The first run outlives its deadline but ends while the second runs.
    std::atomic<int> runs{0};
    registry.add("slow_first", [&runs](int x) {
        std::this_thread::sleep_for(runs++ == 0 ? 700ms : 2500ms);
        return x;
    });
    // One worker with two executors: the retry lands next to the first run.
    drover::LocalCluster cluster(ctx, registry, {2, "threads", {}, 1}, drover::null_logger());
    drover::Client client(ctx, client_options(cluster.frontend(), cluster.sink_endpoint()));
    drover::TaskOptions o;
    o.timeout_ms = 400;
    o.max_attempts = 2;
    std::promise<drover::Result> promise;
    auto future = promise.get_future();
    client.submit_packed(
        "slow_first", drover::pack_args(5), [&](drover::Result&& r) { promise.set_value(std::move(r)); }, o);
    REQUIRE(future.wait_for(10s) == std::future_status::ready);
    const auto r = future.get();
    // Both attempts timed out; the first one's late result is not an outcome.
    CHECK(r.status == drover::proto::Status::timeout);
    CHECK(r.attempts == 2);
    // The second run ends too, late: its result must not reach the sink either.
    std::this_thread::sleep_for(2500ms);
    CHECK(runs == 2);
    CHECK(client.duplicates_dropped() == 0);
}

TEST_CASE("a task registered in C++ runs through broker and worker threads", "[integration]") {
    zmq::context_t ctx;
    const auto registry = builtins();
    drover::LocalCluster cluster(ctx, registry, {2, "threads", {}, 1}, drover::null_logger());
    drover::Client client(ctx, client_options(cluster.frontend(), cluster.sink_endpoint()));
    auto r = client.submit("square", 1.5).get();
    REQUIRE(r.ok());
    CHECK(r.as<double>() == Approx(2.25));
    CHECK(r.attempts == 1);
    CHECK(!r.worker.empty());
}

TEST_CASE("wait_all_for returns false while a task runs and true once every task has its outcome", "[integration]") {
    zmq::context_t ctx;
    const auto registry = builtins();
    drover::LocalCluster cluster(ctx, registry, {1, "threads", {}, 1}, drover::null_logger());
    drover::Client client(ctx, client_options(cluster.frontend(), cluster.sink_endpoint()));
    CHECK(client.wait_all_for(0ms));  // nothing submitted
    // The callback runs on the client's I/O thread: it records, the test checks.
    std::atomic<bool> called{false}, ok{false};
    client.submit_packed("sleep_ms", drover::pack_args(400), [&](drover::Result&& r) {
        ok = r.ok();
        called = true;
    });
    CHECK_FALSE(client.wait_all_for(50ms));
    REQUIRE(client.wait_all_for(20s));
    CHECK(called);  // its callback has returned
    CHECK(ok);
    CHECK(client.unfinished() == 0);
}

TEST_CASE("an unknown task and a throwing task end as errors, and the next task runs", "[integration]") {
    zmq::context_t ctx;
    const auto registry = builtins();
    drover::LocalCluster cluster(ctx, registry, {1, "threads", {}, 1}, drover::null_logger());
    drover::Client client(ctx, client_options(cluster.frontend(), cluster.sink_endpoint()));
    auto unknown = client.submit("no_such_task", 1).get();
    CHECK(unknown.status == drover::proto::Status::error);
    CHECK(unknown.error == "unknown task 'no_such_task': no worker runs it");
    auto failed = client.submit("fail", std::string("kaboom")).get();
    CHECK(failed.status == drover::proto::Status::error);
    CHECK(failed.error == "kaboom");
    auto ok = client.submit("hello", std::string("again")).get();
    REQUIRE(ok.ok());
    CHECK(ok.as<std::string>() == "Hello, again!");
}

TEST_CASE("a task whose name no worker runs waits, and runs once such a worker joins", "[integration]") {
    zmq::context_t ctx;
    auto bc = broker_config("inproc://front-wait", "inproc://back-wait");
    BrokerThread broker(ctx, bc);
    {
        drover::Client client(ctx, client_options(bc.frontend, "inproc://sink-wait"));
        auto future = client.submit("square", 3.0);
        CHECK(future.wait_for(300ms) == std::future_status::timeout);
        std::optional<nlohmann::json> status;
        for (auto deadline = std::chrono::steady_clock::now() + 5s; std::chrono::steady_clock::now() < deadline;) {
            status = drover::fetch_status(ctx, bc.frontend, 1000ms);
            if (status && !(*status)["waiting_for_workers"].empty()) break;
            std::this_thread::sleep_for(5ms);
        }
        REQUIRE(status);
        CHECK((*status)["waiting_for_workers"] == nlohmann::json::array({"square"}));
        CHECK(future.wait_for(0ms) == std::future_status::timeout);
        const auto registry = builtins();
        drover::WorkerOptions wo;
        wo.broker = bc.backend;
        WorkerThread worker(ctx, registry, wo);
        REQUIRE(future.wait_for(5s) == std::future_status::ready);
        CHECK(future.get().as<double>() == Approx(9.0));
    }
}

TEST_CASE("a client settles its results with the broker though nothing else is sent", "[integration]") {
    zmq::context_t ctx;
    const auto registry = builtins();
    drover::LocalCluster cluster(ctx, registry, {2, "threads", {}, 1}, drover::null_logger());
    drover::Client client(ctx, client_options(cluster.frontend(), cluster.sink_endpoint()));
    const auto settled = [&] {
        auto status = drover::fetch_status(ctx, cluster.frontend(), 1000ms);
        REQUIRE(status);
        return std::pair{(*status)["totals"]["settled"].get<int>(), (*status)["awaiting_settle"].get<int>()};
    };
    // One task, then three at once: each time the client goes quiet, and
    // its SETTLE must still leave (it waits for no next SUBMIT for ever).
    CHECK(client.submit("square", 2.0).get().as<double>() == Approx(4.0));
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (settled().first < 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
    CHECK(settled() == std::pair{1, 0});
    std::vector<std::future<drover::Result>> more;
    for (int i = 0; i < 3; ++i) more.push_back(client.submit("square", 3.0));
    for (auto& f : more) CHECK(f.get().as<double>() == Approx(9.0));
    deadline = std::chrono::steady_clock::now() + 5s;
    while (settled().first < 4 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
    CHECK(settled() == std::pair{4, 0});
    // A result while another task is still in flight is settled too (after
    // at most a few ms), not only once the last one ends.
    auto slow = client.submit("sleep_ms", std::int64_t{3000});
    CHECK(client.submit("square", 4.0).get().as<double>() == Approx(16.0));
    deadline = std::chrono::steady_clock::now() + 2s;
    while (settled().first < 5 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
    CHECK(settled().first == 5);
    CHECK(slow.wait_for(0s) == std::future_status::timeout);  // still running
    CHECK(slow.get().ok());
}

TEST_CASE("over tcp a client settles its last result too, after waiting for more ids", "[integration]") {
    // Over tcp and ipc the SETTLE of the last task in flight waits up to
    // 10 ms like the others (over inproc it goes at once, as above): it must
    // still leave with nothing else to send.
    zmq::context_t ctx;
    auto bc = broker_config("tcp://127.0.0.1:*", "tcp://127.0.0.1:*");
    BrokerThread broker(ctx, bc);
    const auto registry = builtins();
    auto wo = worker_options(broker);
    WorkerThread worker(ctx, registry, wo);
    {
        drover::Client client(ctx, client_options(broker.get().frontend_endpoint(), "tcp://127.0.0.1:*"));
        const auto settled = [&] {
            auto status = drover::fetch_status(ctx, broker.get().frontend_endpoint(), 1000ms);
            REQUIRE(status);
            return std::pair{(*status)["totals"]["settled"].get<int>(), (*status)["awaiting_settle"].get<int>()};
        };
        for (int round = 1; round <= 2; ++round) {
            CHECK(client.submit("square", 2.0).get().as<double>() == Approx(4.0));
            const auto deadline = std::chrono::steady_clock::now() + 5s;
            while (settled().first < round && std::chrono::steady_clock::now() < deadline)
                std::this_thread::sleep_for(5ms);
            CHECK(settled() == std::pair{round, 0});
        }
    }
}

TEST_CASE(
    "a task larger than its worker's --max-message-bytes ends with an error naming the limit, and the worker stays",
    "[integration]") {
    // Over tcp: ZeroMQ drops a peer that sends past ZMQ_MAXMSGSIZE (inproc
    // has no such limit). The broker sent it anyway; the worker's connection
    // broke at each try, and the task ended `lost` after three "deaths".
    zmq::context_t ctx;
    auto bc = broker_config("tcp://127.0.0.1:*", "tcp://127.0.0.1:*");
    BrokerThread broker(ctx, bc);
    const auto registry = builtins();
    auto wo = worker_options(broker);
    wo.max_message_bytes = 8192;
    WorkerThread worker(ctx, registry, wo);
    {
        drover::Client client(ctx, client_options(broker.get().frontend_endpoint(), "tcp://127.0.0.1:*"));
        REQUIRE(client.wait_for_workers(1, 5000ms));
        auto big = client.submit("echo", std::string(20000, 'x'));
        auto small = client.submit("echo", std::string(100, 'y'));
        REQUIRE(big.wait_for(10s) == std::future_status::ready);
        REQUIRE(small.wait_for(10s) == std::future_status::ready);
        const auto b = big.get();
        CHECK(b.status == drover::proto::Status::error);
        CHECK_THAT(b.error, Catch::Contains("too large for worker") && Catch::Contains("8192"));
        const auto s = small.get();
        CHECK(s.status == drover::proto::Status::ok);
        CHECK(s.attempts == 1);
        auto status = drover::fetch_status(ctx, broker.get().frontend_endpoint(), 1000ms);
        REQUIRE(status);
        CHECK((*status)["totals"]["too_large"] == 1);
        CHECK((*status)["totals"]["lost"] == 0);
        CHECK((*status)["totals"]["redispatched"] == 0);
        CHECK((*status)["workers"].size() == 1);
    }
}

namespace {

// The next SUBMIT a broker played by the test receives: who sent it, and its task ids.
std::pair<std::string, std::vector<std::string>> next_submit(zmq::socket_t& router) {
    while (true) {
        std::vector<zmq::message_t> frames;
        REQUIRE(zmq::recv_multipart(router, std::back_inserter(frames)));
        REQUIRE(frames.size() >= 2);
        const std::string peer = frames[0].to_string();
        auto cmd = drover::proto::parse_header(frames[1]);
        REQUIRE(cmd);
        if (*cmd == drover::proto::Command::heartbeat) {  // answered, as a broker does
            (void)drover::send_to(router, peer, drover::proto::Command::heartbeat,
                                  drover::proto::encode_heartbeat("i"));
            continue;
        }
        if (*cmd != drover::proto::Command::submit) continue;
        REQUIRE(frames.size() == 3);
        auto tasks = drover::proto::decode_tasks(drover::proto::view(frames[2]));
        REQUIRE(tasks);
        std::vector<std::string> ids;
        for (const auto& t : tasks->tasks) ids.push_back(t.id);
        return {peer, ids};
    }
}

}  // namespace

TEST_CASE("a caller sends a lone task on the client's submit connection, and the broker answers on the client's own",
          "[integration]") {
    zmq::context_t ctx;
    zmq::socket_t router(ctx, zmq::socket_type::router);
    router.set(zmq::sockopt::rcvtimeo, 5000);
    router.set(zmq::sockopt::router_mandatory, 1);
    router.bind("inproc://fake-front-direct");
    drover::Client client(ctx, client_options("inproc://fake-front-direct", "inproc://fake-sink-direct"));
    // Until the broker has answered on the client's own connection, the I/O
    // thread sends (the broker might not know where to answer yet); the
    // HEARTBEAT the client sends at once is answered in next_submit.
    auto first = client.submit("echo", 1);
    const auto [first_peer, first_ids] = next_submit(router);
    REQUIRE(first_peer.size() > 1);
    CHECK(first_peer[0] == 'P');
    const std::string own = first_peer;
    const std::string submit_peer = "S" + own.substr(1);
    // Its outcome, then a lone task: the caller sends it itself.
    REQUIRE(first_ids.size() == 1);
    (void)drover::send_to(router, own, drover::proto::Command::rejected,
                          drover::proto::encode(drover::proto::Rejected{first_ids, "test"}));
    REQUIRE(first.wait_for(5s) == std::future_status::ready);
    CHECK(first.get().status == drover::proto::Status::rejected);

    CHECK(client.submitted_directly() == 0);
    auto lone = client.submit("echo", 2);
    const auto [lone_peer, lone_ids] = next_submit(router);
    CHECK(lone_peer == submit_peer);
    CHECK(client.submitted_directly() == 1);
    // With it unfinished, the next one is not alone: the I/O thread sends it.
    auto other = client.submit("echo", 3);
    const auto [other_peer, other_ids] = next_submit(router);
    CHECK(other_peer == own);
    // The lone task's answer comes on the client's own connection, and reaches its caller.
    REQUIRE(lone_ids.size() == 1);
    (void)drover::send_to(router, own, drover::proto::Command::rejected,
                          drover::proto::encode(drover::proto::Rejected{lone_ids, "duplicate_id"}));
    REQUIRE(lone.wait_for(5s) == std::future_status::ready);
    const auto r = lone.get();
    CHECK(r.status == drover::proto::Status::rejected);
    CHECK(r.error == "duplicate_id");
    CHECK(other.wait_for(10ms) == std::future_status::timeout);
}

TEST_CASE("a broker takes tasks from a client's submit connection as the client's", "[integration]") {
    zmq::context_t ctx;
    const auto registry = builtins();
    drover::LocalCluster cluster(ctx, registry, {1, "threads", {}, 1}, drover::null_logger());
    drover::Client client(ctx, client_options(cluster.frontend(), cluster.sink_endpoint()));
    REQUIRE(client.wait_for_workers(1, 5s));  // the broker has answered: lone tasks go on the submit connection
    for (int i = 0; i < 20; ++i)
        CHECK(client.submit("square", static_cast<double>(i)).get().as<double>() == Approx(i * i));
    CHECK(client.submitted_directly() > 0);
    // One producer, not two: a second one would be the submit connection, never heard again and declared gone.
    auto status = drover::fetch_status(ctx, cluster.frontend(), 1000ms);
    REQUIRE(status);
    CHECK((*status)["producers"].get<int>() == 1);
}

TEST_CASE("the broker keeps its answer to tasks from a submit connection until the client's own connects",
          "[integration]") {
    zmq::context_t ctx;
    auto bc = broker_config("inproc://front-kept", "inproc://back-kept");
    BrokerThread broker(ctx, bc);
    {
        // The submit connection alone, as after a break that the client's own
        // connection is slower to come back from: a task with no reply_to is
        // refused, and the answer has nowhere to go yet.
        zmq::socket_t submit(ctx, zmq::socket_type::dealer);
        submit.set(zmq::sockopt::linger, 0);
        submit.set(zmq::sockopt::routing_id, "Sabcdefgh");
        submit.connect(bc.frontend);
        const std::string args("\x91\x01", 2);  // the TaskRef views it: it must outlive the encode
        const drover::proto::TaskRef task{"kept-1", "echo", args, "", 0, 1, 0, false, false, {}, 0};
        REQUIRE(drover::send_message(submit, drover::proto::Command::submit, drover::proto::encode(&task, 1)) ==
                drover::SendStatus::sent);
        // The broker has refused it (and tried to answer) before the client's own connection comes.
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        int refused = 0;
        while (refused == 0 && std::chrono::steady_clock::now() < deadline) {
            auto status = drover::fetch_status(ctx, bc.frontend, 1000ms);
            REQUIRE(status);
            refused = (*status)["totals"]["rejected"].get<int>();
            if (refused == 0) std::this_thread::sleep_for(5ms);
        }
        REQUIRE(refused == 1);

        zmq::socket_t own(ctx, zmq::socket_type::dealer);
        own.set(zmq::sockopt::linger, 0);
        own.set(zmq::sockopt::routing_id, "Pabcdefgh");
        own.set(zmq::sockopt::rcvtimeo, 5000);
        own.connect(bc.frontend);
        REQUIRE(drover::send_message(own, drover::proto::Command::heartbeat) == drover::SendStatus::sent);
        std::optional<drover::proto::Rejected> rejected;
        while (!rejected) {
            std::vector<zmq::message_t> frames;
            REQUIRE(zmq::recv_multipart(own, std::back_inserter(frames)));
            REQUIRE(!frames.empty());
            auto cmd = drover::proto::parse_header(frames[0]);
            REQUIRE(cmd);
            if (*cmd != drover::proto::Command::rejected) continue;
            REQUIRE(frames.size() == 2);
            auto m = drover::proto::decode_rejected(drover::proto::view(frames[1]));
            REQUIRE(m);
            rejected = *m;
        }
        CHECK(rejected->ids == std::vector<std::string>{"kept-1"});
        CHECK(rejected->reason.rfind("invalid", 0) == 0);
    }
}

TEST_CASE("tasks the broker refuses past --max-queued are held back by the client and run once there is room",
          "[integration]") {
    zmq::context_t ctx;
    auto bc = broker_config("inproc://front-full", "inproc://back-full");
    bc.max_queued = 5;
    BrokerThread broker(ctx, bc);
    {
        drover::Client client(ctx, client_options(bc.frontend, "inproc://sink-full"));
        std::vector<std::future<drover::Result>> futures;
        for (int i = 0; i < 8; ++i) futures.push_back(client.submit("echo", i));
        // No worker yet: the broker holds 5 and refuses what comes past them,
        // which the client keeps. How many it refuses depends on how the
        // client batched the 8: once refused, the client sends only what the
        // broker has room for, and the tasks it had not sent yet wait with it.
        std::optional<nlohmann::json> status;
        for (auto deadline = std::chrono::steady_clock::now() + 5s; std::chrono::steady_clock::now() < deadline;) {
            status = drover::fetch_status(ctx, bc.frontend, 1000ms);
            if (status && (*status)["queued"] == 5 && (*status)["totals"]["rejected"].get<int>() >= 1) break;
            std::this_thread::sleep_for(5ms);
        }
        REQUIRE(status);
        CHECK((*status)["queued"] == 5);
        CHECK((*status)["totals"]["rejected"].get<int>() >= 1);
        for (auto& f : futures) CHECK(f.wait_for(10ms) == std::future_status::timeout);
        // A worker makes room: every task runs, none is reported rejected.
        const auto registry = builtins();
        WorkerThread worker(ctx, registry, worker_options(broker));
        for (std::size_t i = 0; i < futures.size(); ++i) {
            REQUIRE(futures[i].wait_for(10s) == std::future_status::ready);
            const auto r = futures[i].get();
            CHECK(r.ok());
            CHECK(r.as<int>() == static_cast<int>(i));
        }
    }
}

TEST_CASE("a task refused with queue_full for longer than queue_full_wait ends rejected", "[integration]") {
    zmq::context_t ctx;
    auto bc = broker_config("inproc://front-full-wait", "inproc://back-full-wait");
    bc.max_queued = 2;
    BrokerThread broker(ctx, bc);
    auto options = client_options(bc.frontend, "inproc://sink-full-wait");
    options.queue_full_wait = 300ms;
    drover::Client client(ctx, options);
    std::vector<std::future<drover::Result>> futures;
    for (int i = 0; i < 4; ++i) futures.push_back(client.submit("echo", i));
    int rejected = 0;
    for (std::size_t i = 2; i < futures.size(); ++i) {
        REQUIRE(futures[i].wait_for(10s) == std::future_status::ready);
        const auto r = futures[i].get();
        rejected += r.status == drover::proto::Status::rejected && r.error == "queue_full";
    }
    CHECK(rejected == 2);
    for (std::size_t i = 0; i < 2; ++i) CHECK(futures[i].wait_for(10ms) == std::future_status::timeout);
}

namespace {

// A worker against a broker played by the test: a ROUTER that reads HELLO and
// READY and sends DISPATCH, and a PULL sink for the results.
class FakeBroker {
public:
    FakeBroker(const std::string& name, drover::WorkerOptions options, drover::Logger log = drover::null_logger())
        : sink_endpoint_("inproc://fake-sink-" + name) {
        backend_.bind("inproc://fake-backend-" + name);
        sink_.bind(sink_endpoint_);
        options.broker = "inproc://fake-backend-" + name;
        options.heartbeat = 10s;  // no reconnection while the test runs
        worker_ = std::make_unique<drover::Worker>(ctx_, registry_, options, std::move(log));
        serving_ = std::thread([this] { worker_->run(stop_); });
    }
    ~FakeBroker() {
        stop_.request();
        serving_.join();
    }

    // Reads both sides for up to `wait`, counting credits granted and results;
    // returns true at the first READY (until_ready) or result (until_result).
    bool pump(std::chrono::milliseconds wait, bool until_ready, bool until_result) {
        const auto deadline = std::chrono::steady_clock::now() + wait;
        while (std::chrono::steady_clock::now() < deadline) {
            zmq::pollitem_t items[] = {{backend_.handle(), 0, ZMQ_POLLIN, 0}, {sink_.handle(), 0, ZMQ_POLLIN, 0}};
            zmq::poll(items, 2, std::chrono::milliseconds(5));
            std::vector<zmq::message_t> frames;
            bool ready = false, result = false;
            while (zmq::recv_multipart(backend_, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
                identity_ = frames[0].to_string();
                auto cmd = drover::proto::parse_header(frames[1]);
                if (cmd && *cmd == drover::proto::Command::hello) {
                    ++hellos;
                    identities.insert(identity_);
                }
                if (cmd && *cmd == drover::proto::Command::ready) {
                    auto r = drover::proto::decode_ready(drover::proto::view(frames[2]));
                    REQUIRE(r);
                    granted += r->credits;
                    // A READY with no credit only reports task times (run_ns).
                    if (r->credits > 0 && readies++ > 0)
                        smallest_ready = std::min(smallest_ready, std::uint64_t{r->credits});
                    ready = true;
                }
                if (cmd && *cmd == drover::proto::Command::give_back) {
                    auto r = drover::proto::decode_ids(drover::proto::view(frames[2]));
                    REQUIRE(r);
                    returned.insert(returned.end(), r->ids.begin(), r->ids.end());
                }
                frames.clear();
            }
            while (zmq::recv_multipart(sink_, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
                auto m = drover::proto::decode_results(drover::proto::view(frames[1]));
                REQUIRE(m);
                results += m->results.size();
                outcomes.insert(outcomes.end(), m->results.begin(), m->results.end());
                result = true;
                frames.clear();
            }
            if ((until_ready && ready) || (until_result && result)) return true;
        }
        return false;
    }
    void read_for(std::chrono::milliseconds wait) { (void)pump(wait, false, false); }
    bool wait_ready(std::chrono::milliseconds wait) { return pump(wait, true, false); }
    // Waits (up to `wait`) until `n` results have come in all.
    void wait_results(std::uint64_t n, std::chrono::milliseconds wait) {
        for (auto deadline = std::chrono::steady_clock::now() + wait;
             results < n && std::chrono::steady_clock::now() < deadline;)
            (void)pump(100ms, false, true);
        REQUIRE(results == n);
    }
    // A fresh worker given four tasks of `ms`, one at a time: it learns they
    // are long. Its slot and prefetch (2), then a credit back after each of
    // the first three; after the fourth, its slot only: none comes back.
    void teach_long_tasks(std::int64_t ms) {
        for (std::uint64_t i = 1; i <= 4; ++i) {
            dispatch("sleep_ms", ms);
            wait_results(i, 10s);
        }
        for (auto deadline = std::chrono::steady_clock::now() + 10s;
             granted < 5 && std::chrono::steady_clock::now() < deadline;)
            read_for(100ms);
    }
    // Sends a DISPATCH whose body is not a batch of tasks.
    void dispatch_garbage() {
        backend_.send(zmq::buffer(identity_), zmq::send_flags::sndmore);
        backend_.send(drover::proto::make_header(drover::proto::Command::dispatch), zmq::send_flags::sndmore);
        backend_.send(zmq::str_buffer("\xc1 not msgpack"), zmq::send_flags::none);
    }
    // A task `name(arg)` with the next id, to this sink.
    drover::proto::Task task(const std::string& name, std::int64_t arg, bool start = false) {
        drover::proto::Task t;
        t.start = start;
        t.id = "t" + std::to_string(sent_++);
        t.name = name;
        t.args = drover::pack_args(arg);
        t.attempt = 1;
        t.reply_to = sink_endpoint_;
        return t;
    }
    // Sends one DISPATCH of `n` tasks `name(arg)`; `start`: sent on start
    // credits (an early credit is one), as a broker marks them.
    void dispatch(const std::string& name, std::int64_t arg, int n = 1, bool start = false) {
        drover::proto::Tasks m;
        for (int i = 0; i < n; ++i) m.tasks.push_back(task(name, arg, start));
        send(m);
    }
    void send(const drover::proto::Tasks& m) {
        backend_.send(zmq::buffer(identity_), zmq::send_flags::sndmore);
        backend_.send(drover::proto::make_header(drover::proto::Command::dispatch), zmq::send_flags::sndmore);
        backend_.send(zmq::buffer(drover::proto::encode(m)), zmq::send_flags::none);
    }
    // The worker's credits now: what it granted less what it has finished
    // (a task it holds still uses its credit).
    [[nodiscard]] std::uint64_t credits() const { return granted - results; }
    [[nodiscard]] bool registered() const { return !identity_.empty(); }

    std::uint64_t granted = 0;                     // every credit the worker has granted
    std::uint64_t readies = 0;                     // READY messages granting credits
    std::uint64_t hellos = 0;                      // HELLO messages
    std::set<std::string> identities;              // the worker's connections that said HELLO
    std::uint64_t smallest_ready = UINT64_MAX;     // the fewest credits in one READY after the first
    std::uint64_t results = 0;                     // every result at the sink
    std::vector<drover::proto::Outcome> outcomes;  // in the order they came
    std::vector<std::string> returned;             // ids the worker gave back (RETURN)

private:
    zmq::context_t ctx_;
    zmq::socket_t backend_{ctx_, zmq::socket_type::router};
    zmq::socket_t sink_{ctx_, zmq::socket_type::pull};
    std::string sink_endpoint_;
    drover::Registry registry_ = builtins();
    drover::StopSource stop_;
    std::unique_ptr<drover::Worker> worker_;
    std::thread serving_;
    std::string identity_;
    std::uint64_t sent_ = 0;
};

// Counts the log lines that contain a text.
class CountingSink : public spdlog::sinks::base_sink<std::mutex> {
public:
    explicit CountingSink(std::string text) : text_(std::move(text)) {}
    std::size_t count() {
        std::lock_guard lock(mutex_);
        return n_;
    }

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        if (std::string_view(msg.payload.data(), msg.payload.size()).find(text_) != std::string_view::npos) ++n_;
    }
    void flush_() override {}

private:
    std::string text_;
    std::size_t n_ = 0;
};

// A worker that grants its slot and `prefetch` credits more, whatever its tasks take.
drover::WorkerOptions fixed_prefetch(std::uint32_t prefetch) {
    drover::WorkerOptions options;
    options.auto_prefetch = false;
    options.prefetch = prefetch;
    return options;
}

}  // namespace

TEST_CASE("a worker of long tasks grants its slot's next credit shortly before the running task's expected end",
          "[integration]") {
    drover::WorkerOptions options;
    options.early_credit_lead = 100ms;
    FakeBroker broker("long", options);
    REQUIRE(broker.wait_ready(2s));  // HELLO, then its slot and a prefetch of 1
    broker.teach_long_tasks(250);
    CHECK(broker.credits() == 1);  // no task is queued here ahead of time

    // A task of 2 s: its slot's next credit is due 150 ms after it starts
    // (the mean less the lead), long before it ends, and never earlier.
    const auto dispatched = std::chrono::steady_clock::now();
    broker.dispatch("sleep_ms", 2000);
    REQUIRE(broker.wait_ready(10s));
    CHECK(std::chrono::steady_clock::now() - dispatched >= 100ms);
    CHECK(broker.results == 4);  // still running
    CHECK(broker.credits() == 2);
    // The task sent against it (on that early credit, a start credit) waits
    // for the slot; no more credit for the same run.
    broker.dispatch("sleep_ms", 50, 1, true);
    CHECK_FALSE(broker.wait_ready(300ms));
    CHECK(broker.credits() == 2);
    broker.wait_results(6, 20s);
    CHECK(broker.returned.empty());
}

TEST_CASE("a worker gives back the tasks sent on plain credits that wait behind a task running long", "[integration]") {
    FakeBroker broker("give-back", fixed_prefetch(10));
    REQUIRE(broker.wait_ready(2s));
    // One DISPATCH: a long task, then quick ones on plain credits (a broker
    // that took the name for short).
    drover::proto::Tasks m;
    m.tasks.push_back(broker.task("sleep_ms", 1500));
    for (int i = 0; i < 3; ++i) m.tasks.push_back(broker.task("sleep_ms", 1));
    broker.send(m);
    // 200 ms into the long one they go back (RETURN), in order, and never run here.
    for (auto deadline = std::chrono::steady_clock::now() + 10s;
         broker.returned.size() < 3 && std::chrono::steady_clock::now() < deadline;)
        broker.read_for(50ms);
    REQUIRE(broker.returned == std::vector<std::string>{"t1", "t2", "t3"});
    CHECK(broker.results == 0);
    broker.wait_results(1, 10s);
    broker.read_for(300ms);
    CHECK(broker.results == 1);
    CHECK(broker.outcomes[0].id == "t0");
}

TEST_CASE("a worker of long tasks run back to back has each next task sent before the running one ends",
          "[integration]") {
    drover::WorkerOptions options;
    options.early_credit_lead = 250ms;  // half the task: as long as it can be
    FakeBroker broker("back-to-back", options);
    REQUIRE(broker.wait_ready(2s));
    broker.teach_long_tasks(500);
    REQUIRE(broker.credits() == 1);
    // Six more, each sent as soon as a credit is free, as a broker with a
    // queue does. Each next credit is due 250 ms into the running task, 250 ms
    // before its end (time enough on a busy machine): every task after the
    // first is sent while the one before it still runs, and starts as it ends.
    std::vector<std::uint64_t> results_when_sent;
    for (auto deadline = std::chrono::steady_clock::now() + 20s;
         results_when_sent.size() < 6 && std::chrono::steady_clock::now() < deadline;) {
        const auto held = results_when_sent.size() - (broker.results - 4);
        if (broker.credits() > held) {
            results_when_sent.push_back(broker.results);
            broker.dispatch("sleep_ms", 500, 1, true);  // on the early credit
        } else {
            (void)broker.pump(100ms, true, true);
        }
    }
    REQUIRE(results_when_sent.size() == 6);
    for (std::size_t i = 1; i < results_when_sent.size(); ++i) {
        INFO("task " << i << " of the run was sent after " << results_when_sent[i] - 4 << " results");
        CHECK(results_when_sent[i] == 4 + i - 1);  // task i - 1 still running
    }
    broker.wait_results(10, 10s);
}

TEST_CASE("a threads pool runs every task of its batches once, and none waits behind a long one", "[integration]") {
    drover::WorkerOptions options;
    options.pool = "threads";
    options.concurrency = 2;
    FakeBroker broker("claims", options);
    REQUIRE(broker.wait_ready(2s));
    // One DISPATCH: a long task first, then quick ones. One executor runs the
    // long task; the other runs every quick one meanwhile.
    drover::proto::Tasks m;
    m.tasks.push_back(broker.task("sleep_ms", 3000));
    for (int i = 0; i < 6; ++i) m.tasks.push_back(broker.task("echo", i));
    broker.send(m);
    broker.wait_results(6, 2000ms);
    CHECK(std::none_of(broker.outcomes.begin(), broker.outcomes.end(),
                       [](const auto& o) { return o.task == "sleep_ms"; }));
    broker.wait_results(7, 10s);
    // Batches of quick tasks, each task claimed by whichever executor is
    // free: each ends exactly once.
    for (int b = 0; b < 3; ++b) broker.dispatch("echo", b, 500);
    broker.wait_results(1507, 20s);
    broker.read_for(200ms);
    std::set<std::string> ids;
    for (const auto& o : broker.outcomes) {
        CHECK(o.status == drover::proto::Status::ok);
        ids.insert(o.id);
    }
    CHECK(broker.results == 1507);
    CHECK(ids.size() == 1507);
}

TEST_CASE(
    "a solo worker's I/O thread runs lone quick tasks itself, and leaves slow, timed and detached ones to its executor",
    "[integration]") {
    auto on_io = std::make_shared<CountingSink>("on=io");
    auto log = std::make_shared<spdlog::logger>("inline", on_io);
    log->set_level(spdlog::level::debug);
    FakeBroker broker("inline", {}, log);
    REQUIRE(broker.wait_ready(2s));
    // Quick tasks one at a time: the first ones measure, and reach the sink,
    // on the executor; then the I/O thread runs them (but not for 16 tasks
    // after one was preempted past 1 us on a busy machine: more are sent
    // until 16 ran there).
    std::uint64_t sent = 0;
    const auto one = [&](const drover::proto::Task& t) {
        drover::proto::Tasks m;
        m.tasks.push_back(t);
        broker.send(m);
        broker.wait_results(++sent, 10s);
        CHECK(broker.outcomes.back().status == drover::proto::Status::ok);
        CHECK(broker.outcomes.back().id == t.id);
    };
    for (auto deadline = std::chrono::steady_clock::now() + 30s;
         (sent < 100 || on_io->count() < 16) && sent < 5000 && std::chrono::steady_clock::now() < deadline;)
        one(broker.task("echo", static_cast<std::int64_t>(sent)));
    const auto inline_runs = on_io->count();
    REQUIRE(inline_runs >= 16);
    // Its credits came back as tasks ended, whichever thread ran them.
    broker.read_for(200ms);
    CHECK(broker.granted > broker.results);
    // A deadline, or a detached task (another sink's), goes to the executor.
    auto timed = broker.task("echo", 1);
    timed.timeout_ms = 5000;
    one(timed);
    auto detached = broker.task("echo", 2);
    detached.detached = true;
    one(detached);
    CHECK(on_io->count() == inline_runs);
    // Slow tasks (2 ms and more) fill a sample: the next quick one goes to the executor too.
    for (int i = 0; i < 32; ++i) one(broker.task("sleep_ms", 2));
    const auto after_slow = on_io->count();
    one(broker.task("echo", 3));
    CHECK(on_io->count() == after_slow);
}

TEST_CASE("a threads pool's I/O thread runs a lone quick task itself when every executor is idle", "[integration]") {
    auto on_io = std::make_shared<CountingSink>("on=io");
    auto log = std::make_shared<spdlog::logger>("inline-threads", on_io);
    log->set_level(spdlog::level::debug);
    drover::WorkerOptions options;
    options.pool = "threads";
    options.concurrency = 2;
    FakeBroker broker("inline-threads", options, log);
    REQUIRE(broker.wait_ready(2s));
    std::uint64_t sent = 0;
    for (auto deadline = std::chrono::steady_clock::now() + 30s;
         (sent < 100 || on_io->count() < 16) && sent < 5000 && std::chrono::steady_clock::now() < deadline;) {
        broker.dispatch("echo", static_cast<std::int64_t>(sent));
        broker.wait_results(++sent, 10s);
    }
    REQUIRE(on_io->count() >= 16);
    // Its results name the I/O thread, the others their executor.
    const auto by_io = std::count_if(broker.outcomes.begin(), broker.outcomes.end(), [](const auto& o) {
        return o.worker.size() > 3 && o.worker.compare(o.worker.size() - 3, 3, "/io") == 0;
    });
    CHECK(static_cast<std::size_t>(by_io) == on_io->count());
    CHECK(std::all_of(broker.outcomes.begin(), broker.outcomes.end(),
                      [](const auto& o) { return o.status == drover::proto::Status::ok; }));
}

TEST_CASE("a worker grows its prefetch from its measured task times, at most 4 times the tasks it ran",
          "[integration]") {
    FakeBroker broker("prefetch", {});
    // HELLO, then its slot and a prefetch of 1: nothing measured yet.
    broker.read_for(500ms);
    REQUIRE(broker.registered());
    CHECK(broker.credits() == 2);
    // Four quick tasks: the first measure. echo takes microseconds, worth a
    // prefetch of hundreds for 2 ms of work, but four tasks allow 16.
    broker.dispatch("echo", 1, 4);
    broker.wait_results(4, 10s);
    broker.read_for(300ms);
    CHECK(broker.credits() > 2);
    CHECK(broker.credits() <= 1 + 4 * 4);
    // Twenty tasks in all: at most 80.
    broker.dispatch("echo", 1, 16);
    broker.wait_results(20, 10s);
    broker.read_for(300ms);
    CHECK(broker.credits() <= 1 + 4 * 20);
    // A thousand more: past the slow start, up to 1,000 a slot. The prefetch
    // follows each batch's measured time, and one batch preempted on a busy
    // machine lowers it again: the most it reached is what is checked.
    std::uint64_t most = 0;
    for (int i = 0; i < 10; ++i) {
        broker.dispatch("echo", 1, 100);
        broker.wait_results(20 + 100 * static_cast<std::uint64_t>(i + 1), 10s);
        broker.read_for(100ms);
        most = std::max(most, broker.credits());
        CHECK(broker.credits() <= 1 + 1000);
    }
    CHECK(most > 1 + 4 * 20);
}

TEST_CASE("a worker gives its credits back in batches of half its prefetch", "[integration]") {
    FakeBroker broker("batches", fixed_prefetch(20));
    REQUIRE(broker.wait_ready(2s));
    broker.read_for(200ms);
    CHECK(broker.credits() == 21);  // its slot and the prefetch, in one READY
    CHECK(broker.readies == 1);
    // Nine tasks done: one short of a batch, so no READY yet.
    broker.dispatch("echo", 1, 9);
    broker.wait_results(9, 10s);
    broker.read_for(300ms);
    CHECK(broker.readies == 1);
    CHECK(broker.credits() == 12);
    // The tenth: ten credits in one READY.
    broker.dispatch("echo", 1);
    broker.wait_results(10, 10s);
    for (auto deadline = std::chrono::steady_clock::now() + 5s;
         broker.readies < 2 && std::chrono::steady_clock::now() < deadline;)
        broker.read_for(50ms);
    CHECK(broker.readies == 2);
    CHECK(broker.credits() == 21);
    // Tasks one at a time, a hundred of them: about ten READY messages (a
    // batch may grow with tasks finished before the I/O thread got to it),
    // not a hundred; never fewer than half the prefetch in one.
    for (std::uint64_t i = 1; i <= 100; ++i) {
        broker.dispatch("echo", 1);
        broker.wait_results(10 + i, 10s);
    }
    broker.read_for(300ms);
    CHECK(broker.readies >= 2 + 8);
    CHECK(broker.readies <= 2 + 10);
    CHECK(broker.smallest_ready == 10);
    // Credits out never fell to a batch short of its slot and the prefetch.
    CHECK(broker.credits() > 21 - 10);
    CHECK(broker.credits() <= 21);
}

TEST_CASE("a worker that cannot read a DISPATCH registers again, and its credits start over", "[integration]") {
    FakeBroker broker("garbage", fixed_prefetch(0));
    REQUIRE(broker.wait_ready(2s));
    CHECK(broker.hellos == 1);
    CHECK(broker.credits() == 1);
    // The broker took the worker's one credit for tasks the worker cannot
    // read: without a new registration it would never grant another.
    broker.dispatch_garbage();
    REQUIRE(broker.wait_ready(5s));
    CHECK(broker.hellos == 2);
    CHECK(broker.identities.size() == 2);  // a new connection, so the broker requeues what the old one held
    CHECK(broker.credits() == 2);          // one a registration: the new one's slot
    // It still runs tasks sent to its new connection.
    broker.dispatch("echo", 1);
    broker.wait_results(1, 10s);
}

TEST_CASE("a timed-out task sent again under the same attempt runs with its own deadline next to the first run",
          "[integration]") {
    // A restarted broker knows nothing of the first run's timeout, and may
    // send the task again as the same attempt while that run goes on.
    drover::WorkerOptions options;
    options.pool = "threads";
    options.concurrency = 2;
    FakeBroker broker("same-attempt", options);
    REQUIRE(broker.wait_ready(2s));
    auto t = broker.task("sleep_ms", 800);
    t.timeout_ms = 200;
    t.max_attempts = 1;
    drover::proto::Tasks m;
    m.tasks.push_back(t);
    broker.send(m);
    broker.wait_results(1, 5s);  // its timeout, while it sleeps on
    broker.send(m);              // the same id and attempt, on the other slot
    broker.wait_results(2, 5s);
    // Both runs end (the first at 800 ms, the second 800 ms after it
    // started), and their late results go nowhere.
    broker.read_for(1500ms);
    REQUIRE(broker.outcomes.size() == 2);
    for (const auto& o : broker.outcomes) {
        CHECK(o.id == t.id);
        CHECK(o.status == drover::proto::Status::timeout);
    }
}
