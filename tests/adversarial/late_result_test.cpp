// A paused worker: a task that finished past its timeout_ms must end as
// timeout, never ok, whichever of the worker's threads runs first on SIGCONT.
#include <catch2/catch.hpp>

#include <csignal>
#include <map>
#include <thread>

#include "../e2e/cluster_fixture.hpp"

using namespace drover::test;
using nlohmann::json;
using namespace std::chrono_literals;

TEST_CASE("a task that finished past its timeout_ms while its worker was paused ends as timeout and never ok",
          "[adversarial]") {
    TempDir dir;
    BrokerProcess broker(dir);  // 1 s heartbeats x 3: the pause below stays within the liveness window
    constexpr int k_tasks = 16;
    Process worker =
        start_worker(dir, broker.backend, "worker.log", {"--pool", "threads", "-c", std::to_string(k_tasks)});
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    std::string lines;
    for (int i = 0; i < k_tasks; ++i)
        lines += json({{"id", "t" + std::to_string(i)},
                       {"task", "sleep_ms"},
                       {"args", {400}},
                       {"timeout_ms", 1500},
                       {"max_attempts", 1}})
                     .dump() +
                 "\n";
    write_file(dir.file("tasks.jsonl"), lines);
    Process producer = start_producer(dir, broker.frontend, {"submit"}, "out.jsonl", "tasks.jsonl");
    REQUIRE(wait_status(
        broker.frontend, [](const json& s) { return s.value("in_flight", 0) == k_tasks; }, 10s));
    std::this_thread::sleep_for(100ms);  // every executor has started its task
    // Paused past both the tasks' end (400 ms) and their deadline (1500 ms):
    // on SIGCONT the executors, whose sleeps are over, race the I/O thread,
    // whose wait for the deadline is over too.
    worker.signal(SIGSTOP);
    std::this_thread::sleep_for(2200ms);
    worker.signal(SIGCONT);
    REQUIRE(producer.wait(30s).has_value());

    std::map<std::string, json> by_id;
    for (auto& l : read_json_lines(dir.file("out.jsonl"))) {
        INFO(l.dump());
        const auto id = l["id"].get<std::string>();
        CHECK(by_id.count(id) == 0);
        by_id[id] = l;
        // The honest outcomes: the deadline passed before the result
        // (timeout), or the run ended in time (ok within 1500 ms); or, on a
        // machine so loaded that the pause outlasted the liveness window,
        // the worker was taken for dead (lost).
        if (l["status"] == "ok") CHECK(l["elapsed_ms"].get<double>() <= 1500.0);
        else CHECK((l["status"] == "timeout" || l["status"] == "lost"));
    }
    CHECK(by_id.size() == static_cast<std::size_t>(k_tasks));
}
