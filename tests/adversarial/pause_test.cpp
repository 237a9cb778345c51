// Paused processes: SIGSTOP one process (broker, worker, producer, sink) for
// several liveness windows, then SIGCONT. Nothing may be lost, nothing of a
// live peer cancelled, and every task ends exactly once at its sink.
#include <catch2/catch.hpp>

#include <csignal>
#include <map>
#include <set>
#include <thread>

#include <zmq.hpp>

#include "../e2e/process.hpp"
#include "drover/broker/broker.hpp"
#include "drover/client/status.hpp"

using namespace drover::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Short heartbeats: a liveness window of 600 ms, so a 4 s pause spans more
// than six of them (and the broker's 3 s floor for producers).
const std::vector<std::string> k_fast = {"--heartbeat-ms", "200", "--liveness", "3"};
constexpr auto k_pause = 4s;

std::vector<std::string> cat(std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// Every id exactly once with status ok, and nothing else.
void every_task_ok_once(const std::vector<json>& lines, const std::set<std::string>& ids) {
    std::map<std::string, int> seen;
    std::map<std::string, int> by_status;
    for (const auto& l : lines) {
        INFO(l.dump());
        const auto id = l["id"].get<std::string>();
        CHECK(ids.count(id) == 1);
        ++seen[id];
        ++by_status[l["status"].get<std::string>()];
    }
    INFO("statuses: " << json(by_status).dump());
    CHECK(by_status["ok"] == static_cast<int>(ids.size()));
    CHECK(seen.size() == ids.size());
    for (const auto& [id, n] : seen) {
        INFO(id);
        CHECK(n == 1);
    }
}

// Waits until the broker has tasks running, so the pause catches work in flight.
void wait_in_flight(const std::string& frontend) {
    const auto busy = [](const json& st) { return st["in_flight"].get<int>() > 0; };
    const auto status = wait_status(frontend, busy, 20s);
    REQUIRE(status);
    REQUIRE(busy(*status));
}

int broker_total(const std::string& frontend, const char* what) {
    zmq::context_t ctx;
    auto status = drover::fetch_status(ctx, frontend, 5000ms);
    REQUIRE(status);
    return (*status)["totals"][what].get<int>();
}

}  // namespace

TEST_CASE("a broker stopped for several liveness windows cancels nothing of its live producer", "[adversarial]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    Process w1(cat({DROVER_WORKER_EXE, "--broker", broker.backend, "--pool", "threads", "-c", "2"}, k_fast),
               dir.file("w1.log"));
    Process w2(cat({DROVER_WORKER_EXE, "--broker", broker.backend, "--pool", "threads", "-c", "2"}, k_fast),
               dir.file("w2.log"));
    REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 100, "sleep_ms", {100});
    Process producer(cat({DROVER_PRODUCER_EXE, "--broker", broker.frontend}, cat(k_fast, {"submit"})),
                     dir.file("out.jsonl"), dir.file("tasks.jsonl"));
    wait_in_flight(broker.frontend);
    broker.process->signal(SIGSTOP);
    std::this_thread::sleep_for(k_pause);
    broker.process->signal(SIGCONT);
    REQUIRE(producer.wait(90s).has_value());
    every_task_ok_once(read_json_lines(dir.file("out.jsonl")), ids);
    CHECK(broker_total(broker.frontend, "cancelled") == 0);
    CHECK(read_file(dir.file("broker.log.err")).find("producer.gone") == std::string::npos);
}

TEST_CASE("a worker stopped for several liveness windows: its tasks run elsewhere and each ends once",
          "[adversarial]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    Process frozen(
        cat({DROVER_WORKER_EXE, "--broker", broker.backend, "--pool", "threads", "-c", "2", "--id", "frozen"}, k_fast),
        dir.file("frozen.log"));
    Process other(
        cat({DROVER_WORKER_EXE, "--broker", broker.backend, "--pool", "threads", "-c", "2", "--id", "other"}, k_fast),
        dir.file("other.log"));
    REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 100, "sleep_ms", {100});
    Process producer(cat({DROVER_PRODUCER_EXE, "--broker", broker.frontend}, cat(k_fast, {"submit"})),
                     dir.file("out.jsonl"), dir.file("tasks.jsonl"));
    wait_in_flight(broker.frontend);
    frozen.signal(SIGSTOP);
    std::this_thread::sleep_for(k_pause);
    frozen.signal(SIGCONT);
    REQUIRE(producer.wait(90s).has_value());
    every_task_ok_once(read_json_lines(dir.file("out.jsonl")), ids);
    CHECK(broker_total(broker.frontend, "cancelled") == 0);
    CHECK(wait_for_workers(broker.frontend, 2, 10s));  // it registered again
}

TEST_CASE("a producer stopped past its liveness window loses nothing: what the broker cancelled goes again",
          "[adversarial]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    // One slot: most of the 10 s of work still waits at the broker when it takes the producer for gone.
    Process worker(cat({DROVER_WORKER_EXE, "--broker", broker.backend, "--pool", "solo"}, k_fast),
                   dir.file("worker.log"));
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 100, "sleep_ms", {100});
    Process producer(cat({DROVER_PRODUCER_EXE, "--broker", broker.frontend}, cat(k_fast, {"submit"})),
                     dir.file("out.jsonl"), dir.file("tasks.jsonl"));
    wait_in_flight(broker.frontend);
    producer.signal(SIGSTOP);
    std::this_thread::sleep_for(k_pause);
    producer.signal(SIGCONT);
    REQUIRE(producer.wait(90s).has_value());
    every_task_ok_once(read_json_lines(dir.file("out.jsonl")), ids);
}

TEST_CASE("a sink stopped for several liveness windows gets every detached task once", "[adversarial]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    Process w1(cat({DROVER_WORKER_EXE, "--broker", broker.backend, "--pool", "threads", "-c", "2"}, k_fast),
               dir.file("w1.log"));
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    Process sink({DROVER_SINK_EXE, "--bind", "tcp://127.0.0.1:*", "--broker", broker.frontend, "--expect", "100",
                  "--endpoint-file", dir.file("sink.ep")},
                 dir.file("sink.jsonl"));
    const auto sink_ep = wait_line_file(dir.file("sink.ep"), 5s);
    REQUIRE(!sink_ep.empty());
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 100, "sleep_ms", {100});
    Process producer(
        cat({DROVER_PRODUCER_EXE, "--broker", broker.frontend}, cat(k_fast, {"submit", "--reply-to", sink_ep})),
        dir.file("accepted.jsonl"), dir.file("tasks.jsonl"));
    REQUIRE(producer.wait(30s) == 0);  // all accepted
    wait_in_flight(broker.frontend);
    sink.signal(SIGSTOP);
    std::this_thread::sleep_for(k_pause);
    sink.signal(SIGCONT);
    REQUIRE(sink.wait(90s) == 0);
    every_task_ok_once(read_json_lines(dir.file("sink.jsonl")), ids);
    CHECK(broker_total(broker.frontend, "cancelled") == 0);
}
