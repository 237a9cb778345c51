// Paused processes: SIGSTOP one process (broker, worker, producer, sink) for
// several liveness windows, then SIGCONT. Nothing may be lost, nothing of a
// live peer cancelled, and every task ends exactly once at its sink.
#include <catch2/catch.hpp>

#include <csignal>
#include <set>
#include <thread>

#include "../e2e/cluster_fixture.hpp"

using namespace drover::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Short heartbeats: a liveness window of 600 ms, so a 4 s pause spans more
// than six of them (and the broker's 3 s floor for producers).
const auto& k_fast = k_fast_heartbeats;
constexpr auto k_pause = 4s;

const std::vector<std::string> k_two_threads = {"--pool", "threads", "-c", "2"};

// Waits until the broker has tasks running, so the pause catches work in flight.
void wait_in_flight(const std::string& frontend) {
    const auto busy = [](const json& st) { return st["in_flight"].get<int>() > 0; };
    const auto status = wait_status(frontend, busy, 20s);
    REQUIRE(status);
    REQUIRE(busy(*status));
}

int broker_total(const std::string& frontend, const char* what) {
    return require_status(frontend, 5000ms)["totals"][what].get<int>();
}

// A broker and workers with short heartbeats, all registered, and 100 tasks
// of 100 ms in tasks.jsonl.
struct PauseRun {
    // One worker per entry: its log file and its arguments (short heartbeats added).
    explicit PauseRun(const std::vector<std::pair<std::string, std::vector<std::string>>>& worker_specs)
        : broker(dir, k_fast) {
        for (const auto& [log, args] : worker_specs)
            workers.push_back(start_worker(dir, broker.backend, log, concat(args, k_fast)));
        REQUIRE(wait_for_workers(broker.frontend, workers.size(), 10s));
        ids = write_tasks(dir.file("tasks.jsonl"), 100, "sleep_ms", {100});
    }
    // drover-producer with short heartbeats, submit `args`: the tasks in, its stdout to dir/`out`.
    [[nodiscard]] Process submit(const std::vector<std::string>& args = {},
                                 const std::string& out = "out.jsonl") const {
        return start_producer(dir, broker.frontend, concat(k_fast, concat({"submit"}, args)), out, "tasks.jsonl");
    }
    // Stops `p` for k_pause once tasks are running, then lets it go on.
    void pause(const Process& p) const {
        wait_in_flight(broker.frontend);
        p.signal(SIGSTOP);
        std::this_thread::sleep_for(k_pause);
        p.signal(SIGCONT);
    }
    // Waits for the producer that submitted the tasks and checks every task ended ok, once.
    void finish(Process& producer) const {
        REQUIRE(producer.wait(90s).has_value());
        ok_ledger(dir.file("out.jsonl"), ids);
    }

    TempDir dir;
    BrokerProcess broker;
    std::vector<Process> workers;
    std::set<std::string> ids;
};

}  // namespace

TEST_CASE("a broker stopped for several liveness windows cancels nothing of its live producer", "[adversarial]") {
    PauseRun run({{"w1.log", k_two_threads}, {"w2.log", k_two_threads}});
    Process producer = run.submit();
    run.pause(*run.broker.process);
    run.finish(producer);
    CHECK(broker_total(run.broker.frontend, "cancelled") == 0);
    CHECK(read_file(run.dir.file("broker.log.err")).find("producer.gone") == std::string::npos);
}

TEST_CASE("a worker stopped for several liveness windows: its tasks run elsewhere and each ends once",
          "[adversarial]") {
    PauseRun run({{"frozen.log", concat(k_two_threads, {"--id", "frozen"})},
                  {"other.log", concat(k_two_threads, {"--id", "other"})}});
    Process producer = run.submit();
    run.pause(run.workers[0]);
    run.finish(producer);
    CHECK(broker_total(run.broker.frontend, "cancelled") == 0);
    CHECK(wait_for_workers(run.broker.frontend, 2, 10s));  // it registered again
}

TEST_CASE("a producer stopped past its liveness window loses nothing: what the broker cancelled goes again",
          "[adversarial]") {
    // One slot: most of the 10 s of work still waits at the broker when it takes the producer for gone.
    PauseRun run({{"worker.log", {"--pool", "solo"}}});
    Process producer = run.submit();
    run.pause(producer);
    run.finish(producer);
}

TEST_CASE("a sink stopped for several liveness windows gets every detached task once", "[adversarial]") {
    PauseRun run({{"w1.log", k_two_threads}});
    SinkProcess sink(run.dir, run.broker.frontend, {"--expect", "100"});
    REQUIRE(run.submit({"--reply-to", sink.address()}, "accepted.jsonl").wait(30s) == 0);  // all accepted
    run.pause(sink);
    REQUIRE(sink.wait(90s) == 0);
    ok_ledger(sink.out_path(), run.ids);
    CHECK(broker_total(run.broker.frontend, "cancelled") == 0);
}
