// End-to-end failure paths: real faults injected into real processes, then
// a ledger check (every submitted id exactly one outcome, none unknown).
#include <catch2/catch.hpp>

#include <csignal>
#include <map>
#include <set>
#include <thread>

#include <zmq.hpp>

#include "drover/broker.hpp"
#include "process.hpp"

using namespace drover::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Short heartbeats keep these tests quick: 200 ms x 3.
const std::vector<std::string> k_fast = {"--heartbeat-ms", "200", "--liveness", "3"};

std::vector<std::string> cat(std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

std::set<std::string> write_tasks(const std::string& path, int count, const std::string& task, const json& args,
                                  const std::string& prefix = "t") {
    std::string text;
    std::set<std::string> ids;
    for (int i = 0; i < count; ++i) {
        const auto id = prefix + std::to_string(i);
        ids.insert(id);
        text += json{{"id", id}, {"task", task}, {"args", args}}.dump() + "\n";
    }
    std::string old = read_file(path);
    write_file(path, old + text);
    return ids;
}

// Every id exactly once, nothing else. Returns outcomes by id.
std::map<std::string, json> ledger(const std::string& path, const std::set<std::string>& ids) {
    std::map<std::string, json> by_id;
    for (auto& l : read_json_lines(path)) {
        INFO(l.dump());
        const auto id = l["id"].get<std::string>();
        CHECK(ids.count(id) == 1);
        CHECK(by_id.count(id) == 0);
        by_id[id] = l;
    }
    CHECK(by_id.size() == ids.size());
    return by_id;
}

}  // namespace

TEST_CASE("a solo or threads worker killed mid-task: its tasks run again and each result arrives once", "[e2e]") {
    for (const char* pool : {"solo", "threads"}) {
        INFO(pool);
        TempDir dir;
        BrokerProcess broker(dir, k_fast);
        auto victim = std::make_unique<Process>(
            cat({DROVER_WORKER_EXE, "--broker", broker.backend, "--pool", pool, "-c", "2"}, k_fast),
            dir.file("victim.log"));
        REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
        Process survivor(cat({DROVER_WORKER_EXE, "--broker", broker.backend}, k_fast), dir.file("survivor.log"));
        REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
        const auto ids = write_tasks(dir.file("tasks.jsonl"), 40, "sleep_ms", {50});
        Process producer(cat({DROVER_PRODUCER_EXE, "--broker", broker.frontend}, cat(k_fast, {"submit"})),
                         dir.file("out.jsonl"), dir.file("tasks.jsonl"));
        std::this_thread::sleep_for(300ms);
        victim->signal(SIGKILL);
        REQUIRE(producer.wait(60s) == 0);
        auto by_id = ledger(dir.file("out.jsonl"), ids);
        int retried = 0;
        for (auto& [id, l] : by_id) {
            CHECK(l["status"] == "ok");
            if (l["attempts"].get<int>() > 1) ++retried;
        }
        CHECK(retried >= 1);
    }
}

TEST_CASE("a processes child killed mid-task: the supervisor reports it and a new child takes over", "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir);  // default 1 s heartbeats: the supervisor's report must be faster
    Process worker({DROVER_WORKER_EXE, "--broker", broker.backend, "--pool", "processes", "-c", "2"},
                   dir.file("worker.log"));
    REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 20, "sleep_ms", {100});
    Process producer({DROVER_PRODUCER_EXE, "--broker", broker.frontend, "submit"}, dir.file("out.jsonl"),
                     dir.file("tasks.jsonl"));
    std::this_thread::sleep_for(250ms);
    // Kill one child (the supervisor's children are in their own process group).
    REQUIRE(std::system(("pkill -KILL -n -P " + std::to_string(worker.pid())).c_str()) == 0);
    REQUIRE(producer.wait(60s) == 0);
    auto by_id = ledger(dir.file("out.jsonl"), ids);
    for (auto& [id, l] : by_id) CHECK(l["status"] == "ok");
    CHECK(read_file(dir.file("worker.log.err")).find("supervisor.child_died") != std::string::npos);
    CHECK(wait_for_workers(broker.frontend, 2, 10s));  // the child was replaced
}

TEST_CASE("a poison task is reported lost after max_attempts while the other tasks complete", "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir);
    Process worker({DROVER_WORKER_EXE, "--broker", broker.backend, "--pool", "processes", "-c", "2"},
                   dir.file("worker.log"));
    REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
    auto ids = write_tasks(dir.file("tasks.jsonl"), 1, "crash", json::array(), "poison");
    auto good = write_tasks(dir.file("tasks.jsonl"), 50, "sum_random", {10000});
    ids.insert(good.begin(), good.end());
    Process producer({DROVER_PRODUCER_EXE, "--broker", broker.frontend, "submit"}, dir.file("out.jsonl"),
                     dir.file("tasks.jsonl"));
    REQUIRE(producer.wait(60s) == 1);  // one task did not end ok
    auto by_id = ledger(dir.file("out.jsonl"), ids);
    CHECK(by_id["poison0"]["status"] == "lost");
    CHECK(by_id["poison0"]["error"] == "worker died 3 times");
    for (const auto& id : good) CHECK(by_id[id]["status"] == "ok");
    CHECK(worker.running());
    CHECK(wait_for_workers(broker.frontend, 2, 10s));
}

TEST_CASE("with every worker gone, tasks wait and complete when a worker comes back", "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    {
        Process first(cat({DROVER_WORKER_EXE, "--broker", broker.backend}, k_fast), dir.file("w1.log"));
        REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    }  // killed
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 100, "sum_random", {10000});
    Process producer({DROVER_PRODUCER_EXE, "--broker", broker.frontend, "submit"}, dir.file("out.jsonl"),
                     dir.file("tasks.jsonl"));
    CHECK(!producer.wait(1500ms));  // waiting: no worker
    Process second(cat({DROVER_WORKER_EXE, "--broker", broker.backend}, k_fast), dir.file("w2.log"));
    REQUIRE(producer.wait(60s) == 0);
    for (auto& [id, l] : ledger(dir.file("out.jsonl"), ids)) CHECK(l["status"] == "ok");
}

TEST_CASE("a frozen worker is declared dead, its tasks rerun, and it registers again when it wakes", "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    Process frozen(cat({DROVER_WORKER_EXE, "--broker", broker.backend, "--id", "frozen"}, k_fast),
                   dir.file("frozen.log"));
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    Process other(cat({DROVER_WORKER_EXE, "--broker", broker.backend, "--id", "other"}, k_fast),
                  dir.file("other.log"));
    REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 30, "sleep_ms", {50});
    Process producer(cat({DROVER_PRODUCER_EXE, "--broker", broker.frontend}, cat(k_fast, {"submit"})),
                     dir.file("out.jsonl"), dir.file("tasks.jsonl"));
    std::this_thread::sleep_for(150ms);
    frozen.signal(SIGSTOP);
    std::this_thread::sleep_for(1500ms);  // well past 200 ms x 3
    frozen.signal(SIGCONT);
    REQUIRE(producer.wait(60s) == 0);
    for (auto& [id, l] : ledger(dir.file("out.jsonl"), ids)) CHECK(l["status"] == "ok");
    CHECK(wait_for_workers(broker.frontend, 2, 5s));  // HELLO again after RESET
    // It registered again: told by the broker (RESET) or on noticing the silence itself.
    const auto log = read_file(dir.file("frozen.log.err"));
    CHECK((log.find("worker.reset") != std::string::npos || log.find("worker.broker_silent") != std::string::npos));
}

TEST_CASE("a broker killed and restarted under load: every task still ends with one outcome", "[e2e]") {
    TempDir dir;
    const auto front = "ipc://" + dir.file("front"), back = "ipc://" + dir.file("back");
    const std::vector<std::string> broker_argv = cat({DROVER_BROKER_EXE, "--frontend", front, "--backend", back}, k_fast);
    auto broker = std::make_unique<Process>(broker_argv, dir.file("broker1.log"));
    Process worker(cat({DROVER_WORKER_EXE, "--broker", back, "--pool", "threads", "-c", "2"}, k_fast),
                   dir.file("worker.log"));
    REQUIRE(wait_for_workers(front, 1, 10s));
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 200, "sleep_ms", {10});
    Process producer(cat({DROVER_PRODUCER_EXE, "--broker", front}, cat(k_fast, {"submit"})), dir.file("out.jsonl"),
                     dir.file("tasks.jsonl"));
    std::this_thread::sleep_for(300ms);
    broker.reset();  // kill -9
    std::this_thread::sleep_for(500ms);
    broker = std::make_unique<Process>(broker_argv, dir.file("broker2.log"));
    REQUIRE(producer.wait(90s) == 0);
    for (auto& [id, l] : ledger(dir.file("out.jsonl"), ids)) CHECK(l["status"] == "ok");
}

TEST_CASE("a task past its timeout_ms ends as timeout at the deadline and the next task runs", "[e2e]") {
    for (const char* pool : {"solo", "threads"}) {
        INFO(pool);
        TempDir dir;
        BrokerProcess broker(dir);
        Process worker({DROVER_WORKER_EXE, "--broker", broker.backend, "--pool", pool, "-c", "1"},
                       dir.file("worker.log"));
        REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
        write_file(dir.file("tasks.jsonl"),
                   "{\"id\":\"slow\",\"task\":\"sleep_ms\",\"args\":[1500],\"timeout_ms\":200}\n"
                   "{\"id\":\"next\",\"task\":\"hello\",\"args\":[\"x\"],\"timeout_ms\":5000}\n");
        const auto start = std::chrono::steady_clock::now();
        Process producer({DROVER_PRODUCER_EXE, "--broker", broker.frontend, "submit"}, dir.file("out.jsonl"),
                         dir.file("tasks.jsonl"));
        REQUIRE(producer.wait(30s) == 1);  // one task did not end ok
        auto by_id = ledger(dir.file("out.jsonl"), {"slow", "next"});
        CHECK(by_id["slow"]["status"] == "timeout");
        CHECK(by_id["slow"]["error"] == "timed out after 200 ms");
        CHECK(by_id["next"]["status"] == "ok");
        // The one slot stays busy until the slow function returns, so "next"
        // ran after it: the run took at least the full 1.5 s.
        CHECK(std::chrono::steady_clock::now() - start >= 1400ms);
    }
}

TEST_CASE("a producer that vanishes has its queued tasks cancelled, but detached tasks live on", "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    Process worker(cat({DROVER_WORKER_EXE, "--broker", broker.backend}, k_fast), dir.file("worker.log"));
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    Process sink({DROVER_SINK_EXE, "--bind", "tcp://127.0.0.1:*", "--broker", broker.frontend, "--expect", "10",
                  "--endpoint-file", dir.file("sink.ep")},
                 dir.file("sink.jsonl"));
    const auto sink_ep = wait_line_file(dir.file("sink.ep"), 5s);
    REQUIRE(!sink_ep.empty());
    // 10 detached tasks for the standalone sink; their producer exits at once.
    write_tasks(dir.file("detached.jsonl"), 10, "sleep_ms", {100}, "d");
    Process detached({DROVER_PRODUCER_EXE, "--broker", broker.frontend, "submit", "--reply-to", sink_ep},
                     dir.file("accepted.jsonl"), dir.file("detached.jsonl"));
    REQUIRE(detached.wait(10s) == 0);
    // 100 tasks whose producer is then killed: they cannot reach anyone.
    write_tasks(dir.file("doomed.jsonl"), 100, "sleep_ms", {100}, "x");
    {
        Process doomed({DROVER_PRODUCER_EXE, "--broker", broker.frontend, "submit"}, dir.file("doomed.out"),
                       dir.file("doomed.jsonl"));
        std::this_thread::sleep_for(300ms);
    }  // kill -9
    zmq::context_t ctx;
    std::optional<json> status;
    for (int i = 0; i < 100; ++i) {  // gone after max(0.6 s, 3 s) of silence
        status = drover::fetch_status(ctx, broker.frontend, 1000ms);
        if (status && (*status)["totals"]["cancelled"].get<int>() > 0) break;
        std::this_thread::sleep_for(100ms);
    }
    REQUIRE(status);
    CHECK((*status)["totals"]["cancelled"].get<int>() >= 50);
    CHECK((*status)["queued"] == 0);
    REQUIRE(sink.wait(30s) == 0);  // every detached task reached the sink
    auto lines = read_json_lines(dir.file("sink.jsonl"));
    CHECK(lines.size() == 10);
    for (auto& l : lines) CHECK(l["status"] == "ok");
}
