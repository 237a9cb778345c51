// Integration: broker, worker and client in one process over inproc://.
#include <catch2/catch.hpp>

#include <set>
#include <thread>

#include "drover/broker.hpp"
#include "drover/client.hpp"
#include "drover/local_cluster.hpp"
#include "drover/worker.hpp"

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
    drover::StopSource broker_stop, worker_stop;
    drover::BrokerConfig bc;
    bc.frontend = "inproc://front-wait";
    bc.backend = "inproc://back-wait";
    drover::Broker broker(ctx, bc, drover::null_logger());
    broker.bind();
    std::thread broker_thread([&] { broker.run(broker_stop); });
    {
        drover::Client client(ctx, client_options(bc.frontend, "inproc://sink-wait"));
        auto future = client.submit("square", 3.0);
        CHECK(future.wait_for(300ms) == std::future_status::timeout);
        auto status = drover::fetch_status(ctx, bc.frontend, 1000ms);
        REQUIRE(status);
        CHECK((*status)["waiting_for_workers"] == nlohmann::json::array({"square"}));
        const auto registry = builtins();
        drover::WorkerOptions wo;
        wo.broker = bc.backend;
        drover::Worker worker(ctx, registry, wo, drover::null_logger());
        std::thread worker_thread([&] { (void)worker.run(worker_stop); });
        REQUIRE(future.wait_for(5s) == std::future_status::ready);
        CHECK(future.get().as<double>() == Approx(9.0));
        worker_stop.request();
        worker_thread.join();
    }
    broker_stop.request();
    broker_thread.join();
}

TEST_CASE("the broker rejects tasks past --max-queued with queue_full", "[integration]") {
    zmq::context_t ctx;
    drover::StopSource broker_stop;
    drover::BrokerConfig bc;
    bc.frontend = "inproc://front-full";
    bc.backend = "inproc://back-full";
    bc.max_queued = 5;
    drover::Broker broker(ctx, bc, drover::null_logger());
    broker.bind();
    std::thread broker_thread([&] { broker.run(broker_stop); });
    {
        drover::Client client(ctx, client_options(bc.frontend, "inproc://sink-full"));
        std::vector<std::future<drover::Result>> futures;
        for (int i = 0; i < 8; ++i) futures.push_back(client.submit("echo", i));
        int rejected = 0;
        for (int i = 5; i < 8; ++i) {
            REQUIRE(futures[static_cast<std::size_t>(i)].wait_for(5s) == std::future_status::ready);
            auto r = futures[static_cast<std::size_t>(i)].get();
            if (r.status == drover::proto::Status::rejected && r.error == "queue_full") ++rejected;
        }
        CHECK(rejected == 3);
        for (int i = 0; i < 5; ++i)
            CHECK(futures[static_cast<std::size_t>(i)].wait_for(10ms) == std::future_status::timeout);
    }
    broker_stop.request();
    broker_thread.join();
}
