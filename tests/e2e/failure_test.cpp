// End-to-end failure paths: real faults injected into real processes, then
// a ledger check (every submitted id exactly one outcome, none unknown).
#include <catch2/catch.hpp>

#include <csignal>
#include <map>
#include <set>
#include <thread>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster_fixture.hpp"

using namespace drover::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Short heartbeats keep these tests quick.
const auto& k_fast = k_fast_heartbeats;

// drover-producer `options`... submit, tasks from dir/tasks.jsonl, outcomes to dir/out.jsonl.
Process submit(const TempDir& dir, const std::string& frontend, const std::vector<std::string>& options = {}) {
    return start_producer(dir, frontend, concat(options, {"submit"}), "out.jsonl", "tasks.jsonl");
}

// A broker and a worker of one slot in `pool`, registered; then the task
// lines `tasks` submitted, the producer REQUIREd to exit with 1 (one task did
// not end ok) within `timeout`.
struct OneSlotRun {
    OneSlotRun(const std::string& pool, const std::string& tasks, std::chrono::milliseconds timeout)
        : broker(dir), worker(start_worker(dir, broker.backend, "worker.log", {"--pool", pool, "-c", "1"})) {
        REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
        write_file(dir.file("tasks.jsonl"), tasks);
        const auto start = std::chrono::steady_clock::now();
        REQUIRE(submit(dir, broker.frontend).wait(timeout) == 1);
        took = std::chrono::steady_clock::now() - start;
    }
    TempDir dir;
    BrokerProcess broker;
    Process worker;
    std::chrono::steady_clock::duration took{};  // from the producer's start to its exit
};

}  // namespace

TEST_CASE("a solo or threads worker killed mid-task: its tasks run again and each result arrives once", "[e2e]") {
    for (const char* pool : {"solo", "threads"}) {
        INFO(pool);
        TempDir dir;
        BrokerProcess broker(dir, k_fast);
        Process victim = start_worker(dir, broker.backend, "victim.log", concat({"--pool", pool, "-c", "2"}, k_fast));
        REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
        Process survivor = start_worker(dir, broker.backend, "survivor.log", k_fast);
        REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
        const auto ids = write_tasks(dir.file("tasks.jsonl"), 40, "sleep_ms", {50});
        Process producer = submit(dir, broker.frontend, k_fast);
        // Killed once it holds tasks (STATUS lists each worker with its pid).
        const auto victim_holds = [pid = victim.pid()](const json& st) {
            for (const auto& w : st["workers"])
                if (w["pid"] == pid && w["held"].get<int>() > 0) return true;
            return false;
        };
        const auto held = wait_status(broker.frontend, victim_holds, 20s);
        REQUIRE(held);
        REQUIRE(victim_holds(*held));
        victim.signal(SIGKILL);
        REQUIRE(producer.wait(60s) == 0);
        int retried = 0;
        for (auto& [id, l] : ok_ledger(dir.file("out.jsonl"), ids))
            if (l["attempts"].get<int>() > 1) ++retried;
        CHECK(retried >= 1);
    }
}

TEST_CASE("a processes child killed mid-task: the supervisor reports it and a new child takes over", "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir);  // default 1 s heartbeats: the supervisor's report must be faster
    Process worker = start_worker(dir, broker.backend, "worker.log", {"--pool", "processes", "-c", "2"});
    REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 20, "sleep_ms", {100});
    Process producer = submit(dir, broker.frontend);
    std::this_thread::sleep_for(250ms);
    // Kill one child (the supervisor's children are in their own process group).
    REQUIRE(std::system(("pkill -KILL -n -P " + std::to_string(worker.pid())).c_str()) == 0);
    REQUIRE(producer.wait(60s) == 0);
    ok_ledger(dir.file("out.jsonl"), ids);
    CHECK(read_file(dir.file("worker.log.err")).find("supervisor.child_died") != std::string::npos);
    CHECK(wait_for_workers(broker.frontend, 2, 10s));  // the child was replaced
}

TEST_CASE("a poison task is reported lost after max_attempts while the other tasks complete", "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir);
    Process worker = start_worker(dir, broker.backend, "worker.log", {"--pool", "processes", "-c", "2"});
    REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
    auto ids = write_tasks(dir.file("tasks.jsonl"), 1, "crash", json::array(), "poison");
    auto good = write_tasks(dir.file("tasks.jsonl"), 50, "sum_random", {10000});
    ids.insert(good.begin(), good.end());
    Process producer = submit(dir, broker.frontend);
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
        Process first = start_worker(dir, broker.backend, "w1.log", k_fast);
        REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    }  // killed
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 100, "sum_random", {10000});
    Process producer = submit(dir, broker.frontend);
    CHECK(!producer.wait(1500ms));  // waiting: no worker
    Process second = start_worker(dir, broker.backend, "w2.log", k_fast);
    REQUIRE(producer.wait(60s) == 0);
    ok_ledger(dir.file("out.jsonl"), ids);
}

TEST_CASE("a frozen worker is declared dead, its tasks rerun, and it registers again when it wakes", "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    Process frozen = start_worker(dir, broker.backend, "frozen.log", concat({"--id", "frozen"}, k_fast));
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    Process other = start_worker(dir, broker.backend, "other.log", concat({"--id", "other"}, k_fast));
    REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 30, "sleep_ms", {50});
    Process producer = submit(dir, broker.frontend, k_fast);
    std::this_thread::sleep_for(150ms);
    frozen.signal(SIGSTOP);
    std::this_thread::sleep_for(1500ms);  // well past 200 ms x 3
    frozen.signal(SIGCONT);
    REQUIRE(producer.wait(60s) == 0);
    ok_ledger(dir.file("out.jsonl"), ids);
    CHECK(wait_for_workers(broker.frontend, 2, 5s));  // HELLO again after RESET
    // It registered again: told by the broker (RESET) or on noticing the silence itself.
    const auto log = read_file(dir.file("frozen.log.err"));
    CHECK((log.find("worker.reset") != std::string::npos || log.find("worker.broker_silent") != std::string::npos));
}

TEST_CASE("a broker killed and restarted under load: every task still ends with one outcome", "[e2e]") {
    TempDir dir;
    const auto front = "ipc://" + dir.file("front"), back = "ipc://" + dir.file("back");
    const std::vector<std::string> broker_argv =
        concat({DROVER_BROKER_EXE, "--frontend", front, "--backend", back}, k_fast);
    auto broker = std::make_unique<Process>(broker_argv, dir.file("broker1.log"));
    Process worker = start_worker(dir, back, "worker.log", concat({"--pool", "threads", "-c", "2"}, k_fast));
    REQUIRE(wait_for_workers(front, 1, 10s));
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 200, "sleep_ms", {10});
    Process producer = submit(dir, front, k_fast);
    std::this_thread::sleep_for(300ms);
    broker.reset();  // kill -9
    std::this_thread::sleep_for(500ms);
    broker = std::make_unique<Process>(broker_argv, dir.file("broker2.log"));
    REQUIRE(producer.wait(90s) == 0);
    ok_ledger(dir.file("out.jsonl"), ids);
}

TEST_CASE("a task past its timeout_ms ends as timeout at the deadline and the next task runs", "[e2e]") {
    for (const char* pool : {"solo", "threads"}) {
        INFO(pool);
        const OneSlotRun run(
            pool,
            "{\"id\":\"slow\",\"task\":\"sleep_ms\",\"args\":[1500],\"timeout_ms\":200,\"max_attempts\":1}\n"
            "{\"id\":\"next\",\"task\":\"sleep_ms\",\"args\":[1],\"timeout_ms\":5000}\n",
            30s);
        auto by_id = ledger(run.dir.file("out.jsonl"), {"slow", "next"});
        CHECK(by_id["slow"]["status"] == "timeout");
        CHECK(by_id["slow"]["error"] == "timed out after 200 ms");
        CHECK(by_id["next"]["status"] == "ok");
        // The one slot stays busy until the slow function returns, so "next"
        // (of the same name, so queued after it) ran after it: the run took
        // at least the full 1.5 s. On failure the logs say what ran where.
        INFO("outcomes:\n"
             << read_file(run.dir.file("out.jsonl")) << "producer:\n"
             << read_file(run.dir.file("out.jsonl.err")) << "worker:\n"
             << read_file(run.dir.file("worker.log")) << read_file(run.dir.file("worker.log.err")) << "broker:\n"
             << read_file(run.dir.file("broker.log.err")));
        CHECK(std::chrono::duration_cast<std::chrono::milliseconds>(run.took).count() >= 1400);
    }
}

TEST_CASE("a producer that vanishes has its queued tasks cancelled, but detached tasks live on", "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    Process worker = start_worker(dir, broker.backend, "worker.log", k_fast);
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    SinkProcess sink(dir, broker.frontend, {"--expect", "10"});
    const auto sink_ep = sink.address();
    // 10 detached tasks for the standalone sink; their producer exits at once.
    write_tasks(dir.file("detached.jsonl"), 10, "sleep_ms", {100}, "d");
    Process detached =
        start_producer(dir, broker.frontend, {"submit", "--reply-to", sink_ep}, "accepted.jsonl", "detached.jsonl");
    REQUIRE(detached.wait(10s) == 0);
    // 100 tasks whose producer is then killed: they cannot reach anyone.
    write_tasks(dir.file("doomed.jsonl"), 100, "sleep_ms", {100}, "x");
    {
        Process doomed = start_producer(dir, broker.frontend, {"submit"}, "doomed.out", "doomed.jsonl");
        const auto taken = [](const json& st) { return st["totals"]["accepted"].get<int>() >= 110; };
        const auto st = wait_status(broker.frontend, taken, 20s);
        REQUIRE(st);
        REQUIRE(taken(*st));  // all 100 at the broker
    }                         // kill -9
    // Gone after max(0.6 s, 3 s) of silence.
    auto status = wait_status(
        broker.frontend, [](const json& st) { return st["totals"]["cancelled"].get<int>() > 0; }, 10s);
    REQUIRE(status);
    CHECK((*status)["totals"]["cancelled"].get<int>() >= 50);
    CHECK((*status)["queued"] == 0);
    REQUIRE(sink.wait(30s) == 0);  // every detached task reached the sink
    auto lines = read_json_lines(sink.out_path());
    CHECK(lines.size() == 10);
    for (auto& l : lines) CHECK(l["status"] == "ok");
}

TEST_CASE("a processes child past its timeout is replaced, and the next task runs at once", "[e2e]") {
    // Two attempts of 300 ms each, for a task that would sleep 30 s.
    OneSlotRun run("processes",
                   "{\"id\":\"slow\",\"task\":\"sleep_ms\",\"args\":[30000],\"timeout_ms\":300,\"max_attempts\":2}\n"
                   "{\"id\":\"next\",\"task\":\"hello\",\"args\":[\"x\"]}\n",
                   60s);
    // Far less than one 30 s sleep: the child running it was replaced each time.
    CHECK(run.took < 20s);
    auto by_id = ledger(run.dir.file("out.jsonl"), {"slow", "next"});
    CHECK(by_id["slow"]["status"] == "timeout");
    CHECK(by_id["slow"]["attempts"] == 2);
    CHECK(by_id["next"]["status"] == "ok");

    auto status = wait_status(  // until the second replacement registers
        run.broker.frontend,
        [](const json& st) { return st["workers"].size() == 1 && st["workers"][0]["restarts"] == 2; }, 10s);
    REQUIRE(status);
    INFO(status->dump());
    REQUIRE((*status)["workers"].size() == 1);
    CHECK((*status)["workers"][0]["restarts"] == 2);
    CHECK((*status)["totals"]["retried"] == 1);
    CHECK((*status)["totals"]["timed_out"] == 1);
    CHECK((*status)["held"] == 0);
    CHECK(run.worker.running());
}

TEST_CASE("errors are final unless retry_on_error, which retries them with back-off up to max_attempts", "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir);
    Process worker = start_worker(dir, broker.backend, "worker.log", {"--pool", "solo"});
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    write_file(dir.file("tasks.jsonl"),
               "{\"id\":\"flaky\",\"task\":\"fail_times\",\"args\":[\"a\",2],\"retry_on_error\":true}\n"
               "{\"id\":\"hopeless\",\"task\":\"fail\",\"args\":[\"no\"],\"retry_on_error\":true,\"max_attempts\":2}\n"
               "{\"id\":\"plain\",\"task\":\"fail_times\",\"args\":[\"b\",1]}\n");
    REQUIRE(submit(dir, broker.frontend).wait(30s) == 1);
    auto by_id = ledger(dir.file("out.jsonl"), {"flaky", "hopeless", "plain"});
    CHECK(by_id["flaky"]["status"] == "ok");
    CHECK(by_id["flaky"]["result"] == 3);  // failed twice, then ran
    CHECK(by_id["flaky"]["attempts"] == 3);
    CHECK(by_id["hopeless"]["status"] == "error");
    CHECK(by_id["hopeless"]["error"] == "no");
    CHECK(by_id["hopeless"]["attempts"] == 2);
    CHECK(by_id["plain"]["status"] == "error");  // an error without retry_on_error is final
    CHECK(by_id["plain"]["attempts"] == 1);
    CHECK(require_status(broker.frontend, 5000ms)["totals"]["retried"] == 3);
}

TEST_CASE("a stopped sink: workers give up waiting, the broker stays bounded, and all arrives once it reads again",
          "[e2e]") {
    TempDir dir;
    // The broker holds up to 1,000 tasks: more results than the worker's and the kernel's buffers hold.
    BrokerProcess broker(dir, concat({"--max-queued", "1000"}, k_fast));
    Process worker = start_worker(dir, broker.backend, "worker.log", concat({"--pool", "solo"}, k_fast));
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    SinkProcess sink(dir, broker.frontend);
    const auto sink_ep = sink.address();
    sink.signal(SIGSTOP);
    // 1,500 results of 32 KiB: more than the worker's and the kernel's buffers hold.
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 1500, "echo", {std::string(32 * 1024, 'x')});
    // The producer holds back what the broker refuses (queue_full), for a second, then gives up on it.
    Process producer =
        start_producer(dir, broker.frontend, {"--queue-full-wait-ms", "1000", "submit", "--reply-to", sink_ep},
                       "accepted.jsonl", "tasks.jsonl");
    REQUIRE(producer.wait(60s).has_value());
    std::set<std::string> accepted, rejected;
    for (auto& l : read_json_lines(dir.file("accepted.jsonl"))) {
        INFO(l.dump());
        if (l["status"] == "accepted") {
            accepted.insert(l["id"].get<std::string>());
        } else {
            CHECK(l["status"] == "rejected");
            CHECK(l["error"] == "queue_full");
            rejected.insert(l["id"].get<std::string>());
        }
    }
    CHECK(accepted.size() + rejected.size() == ids.size());
    CHECK(!rejected.empty());  // the broker refused what it could not hold
    CHECK(require_status(broker.frontend, 5000ms)["held"].get<int>() <= 1000);
    // Past 10 x liveness the worker stops waiting for the sink and hands its batch back.
    for (int i = 0; i < 150 && read_file(dir.file("worker.log.err")).find("worker.sink_stalled") == std::string::npos;
         ++i)
        std::this_thread::sleep_for(100ms);
    CHECK(read_file(dir.file("worker.log.err")).find("worker.sink_stalled") != std::string::npos);
    sink.signal(SIGCONT);
    std::vector<json> got;
    for (int i = 0; i < 600; ++i) {
        got = read_json_lines(sink.out_path());
        if (got.size() >= accepted.size()) break;
        std::this_thread::sleep_for(100ms);
    }
    std::map<std::string, int> seen;
    for (auto& l : got) {
        const auto id = l["id"].get<std::string>();
        INFO(id << " " << l["status"] << " rejected: " << rejected.count(id));
        CHECK(l["status"] == "ok");
        CHECK(accepted.count(id) == 1);
        ++seen[id];
    }
    CHECK(seen.size() == accepted.size());
    for (auto& [id, n] : seen) CHECK(n == 1);
}

TEST_CASE("a producer pointed where no broker answers gives up after --connect-timeout-ms, saying so", "[e2e]") {
    TempDir dir;
    const std::string nowhere = "tcp://127.0.0.1:" + std::to_string(free_tcp_port());
    for (const auto& command :
         {std::vector<std::string>{"map", "echo", "1", "2"}, std::vector<std::string>{"submit"}}) {
        CAPTURE(command[0]);
        write_tasks(dir.file("tasks.jsonl"), 3, "echo", {1});
        auto args = concat({"--connect-timeout-ms", "400"}, command);
        const auto t0 = std::chrono::steady_clock::now();
        Process producer = start_producer(dir, nowhere, args, "out.jsonl", "tasks.jsonl");
        CHECK(producer.wait(10s) == 1);
        CHECK(std::chrono::steady_clock::now() - t0 >= 400ms);
        CHECK(read_file(dir.file("out.jsonl.err")).find("no broker answered at " + nowhere + " in 400 ms") !=
              std::string::npos);
        CHECK(read_file(dir.file("out.jsonl")).empty());  // nothing printed as if it ran
    }
    // A broker that comes up within the timeout is waited for.
    const std::string later = "tcp://127.0.0.1:" + std::to_string(free_tcp_port());
    Process producer = start_producer(dir, later, {"--connect-timeout-ms", "10000", "map", "echo", "7"}, "late.jsonl");
    std::this_thread::sleep_for(500ms);
    const std::string backend = "tcp://127.0.0.1:" + std::to_string(free_tcp_port());
    Process broker({DROVER_BROKER_EXE, "--frontend", later, "--backend", backend}, dir.file("broker.log"));
    Process worker({DROVER_WORKER_EXE, "--broker", backend}, dir.file("worker.log"));
    CHECK(producer.wait(20s) == 0);
    const auto out = read_json_lines(dir.file("late.jsonl"));
    REQUIRE(out.size() == 1);
    CHECK(out[0] == "7");  // map prints each result (its words are strings)
}

TEST_CASE("Ctrl-C on a producer waiting for input exits at once", "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir);
    const auto fifo = dir.file("stdin.fifo");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    Process producer = start_producer(dir, broker.frontend, {"submit"}, "out.jsonl", "stdin.fifo");
    const int writer = ::open(fifo.c_str(), O_WRONLY);  // held open: the producer waits for a line
    REQUIRE(writer >= 0);
    std::this_thread::sleep_for(300ms);
    producer.signal(SIGINT);
    CHECK(producer.wait(5s) == 130);
    ::close(writer);
}

TEST_CASE("Ctrl-C on a producer cancels its queued tasks at the broker before it exits", "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir);  // no worker: every task stays queued
    write_tasks(dir.file("tasks.jsonl"), 100, "sleep_ms", {10});
    Process producer = submit(dir, broker.frontend);
    auto status = wait_status(
        broker.frontend, [](const json& st) { return st["queued"] == 100; }, 5s);
    REQUIRE(status);
    REQUIRE((*status)["queued"] == 100);
    producer.signal(SIGINT);
    CHECK(producer.wait(5s) == 130);
    // The CANCEL and this STATUS come over different connections: polled, for
    // less than the 3 s after which the broker would cancel them as gone.
    const auto after = wait_status(
        broker.frontend, [](const json& st) { return st["queued"] == 0; }, 2s);
    REQUIRE(after);
    CHECK((*after)["queued"] == 0);
    CHECK((*after)["totals"]["cancelled"] == 100);
}

TEST_CASE("a sink the workers cannot reach: results come through the broker, each once, and the producer says why",
          "[e2e]") {
    TempDir dir;
    BrokerProcess broker(dir, k_fast);
    Process threads =
        start_worker(dir, broker.backend, "threads.log", concat({"--pool", "threads", "-c", "2"}, k_fast));
    Process processes =
        start_worker(dir, broker.backend, "processes.log", concat({"--pool", "processes", "-c", "2"}, k_fast));
    REQUIRE(wait_for_workers(broker.frontend, 3, 10s));
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 500, "echo", {7});
    // The sink binds where the workers could reach it, but advertises a port
    // where nothing listens: as for a producer behind NAT.
    const auto nowhere = "tcp://127.0.0.1:" + std::to_string(free_tcp_port());
    REQUIRE(submit(dir, broker.frontend, concat({"--sink-advertise", nowhere}, k_fast)).wait(60s) == 0);
    ok_ledger(dir.file("out.jsonl"), ids);
    CHECK(read_file(dir.file("out.jsonl.err")).find("client.results_via_broker") != std::string::npos);
    const auto status = wait_status(
        broker.frontend, [](const json& s) { return s["held"] == 0; }, 10s);
    REQUIRE(status);
    CHECK((*status)["totals"]["results_forwarded"].get<int>() == 500);
    CHECK((*status)["totals"]["settled"].get<int>() == 500);
}
