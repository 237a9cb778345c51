// A skewed workload: a burst of quick tasks grows every worker's credits to
// a big prefetch, then a few long tasks follow. Each long task must start on
// a free slot of its own, never wait in one worker's queue behind another
// while a slot elsewhere is idle, whatever ran before.
#include <catch2/catch.hpp>

#include <map>
#include <set>

#include "../e2e/cluster_fixture.hpp"

using namespace drover::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr int k_workers = 4;
constexpr int k_burst = 20000;

struct Run {
    std::map<std::string, std::string> worker_of;  // id -> the worker that ran it
    std::size_t lines = 0;
};

// Submits `tasks` with drover-producer and reads its outcomes; every one must be ok.
Run submit(const TempDir& dir, const BrokerProcess& broker, const std::string& name) {
    Process producer = start_producer(dir, broker.frontend, {"submit"}, name + ".out", name + ".jsonl");
    const auto rc = producer.wait(120s);
    INFO(read_file(dir.file(name + ".out.err")));
    REQUIRE(rc == 0);
    Run run;
    for (const auto& l : read_json_lines(dir.file(name + ".out"))) {
        INFO(l.dump());
        REQUIRE(l["status"] == "ok");
        run.worker_of[l["id"].get<std::string>()] = l["worker"].get<std::string>();
        ++run.lines;
    }
    return run;
}

// The workers that ran `run`'s tasks; CHECKs that each task is one of `ids`.
std::set<std::string> workers_used(const Run& run, const std::set<std::string>& ids) {
    std::set<std::string> used;
    for (const auto& [id, worker] : run.worker_of) {
        INFO(id << " ran on " << worker);
        CHECK(ids.count(id) == 1);
        used.insert(worker);
    }
    return used;
}

}  // namespace

// Four solo workers, registered and ready.
std::vector<Process> start_solo_workers(const TempDir& dir, const BrokerProcess& broker) {
    std::vector<Process> workers;
    for (int i = 0; i < k_workers; ++i)
        workers.push_back(start_worker(dir, broker.backend, "worker" + std::to_string(i) + ".log",
                                       {"--pool", "solo", "--id", "w" + std::to_string(i)}));
    REQUIRE(wait_for_workers(broker.frontend, k_workers, 20s));
    return workers;
}

TEST_CASE("long tasks after a burst of quick ones each start on a worker of their own", "[adversarial]") {
    TempDir dir;
    BrokerProcess broker(dir);
    const auto workers = start_solo_workers(dir, broker);

    const auto echo_ids = write_tasks(dir.file("burst.jsonl"), k_burst, "echo", json::array({1}), "e");
    const auto burst = submit(dir, broker, "burst");
    REQUIRE(burst.lines == echo_ids.size());
    REQUIRE(burst.worker_of.size() == echo_ids.size());

    // Twice: the second run of long tasks must not be served by what the
    // first taught the workers either.
    for (int round = 0; round < 2; ++round) {
        const auto prefix = "s" + std::to_string(round) + "-";
        const auto ids = write_tasks(dir.file("long" + std::to_string(round) + ".jsonl"), k_workers, "sleep_ms",
                                     json::array({500}), prefix);
        const auto run = submit(dir, broker, "long" + std::to_string(round));
        REQUIRE(run.lines == ids.size());
        const auto used = workers_used(run, ids);
        INFO("round " << round);
        CHECK(used.size() == static_cast<std::size_t>(k_workers));
    }
}

TEST_CASE("long calls of a task known for quick ones do not stay queued on one worker", "[adversarial]") {
    TempDir dir;
    BrokerProcess broker(dir);
    const auto workers = start_solo_workers(dir, broker);
    // Long calls first (each worker learns the name as long), then quick
    // ones: the broker takes it for short again and fills the workers'
    // prefetch with it.
    write_tasks(dir.file("first.jsonl"), k_workers, "sleep_ms", json::array({300}), "f");
    REQUIRE(submit(dir, broker, "first").lines == static_cast<std::size_t>(k_workers));
    write_tasks(dir.file("burst.jsonl"), k_burst, "sleep_ms", json::array({0}), "z");
    REQUIRE(submit(dir, broker, "burst").lines == static_cast<std::size_t>(k_burst));
    const auto ids = write_tasks(dir.file("long.jsonl"), k_workers, "sleep_ms", json::array({1000}), "s");
    const auto run = submit(dir, broker, "long");
    REQUIRE(run.lines == ids.size());
    const auto used = workers_used(run, ids);
    // The first may queue them on one worker; that worker gives back what it
    // has not started once its task has run a while, and they run elsewhere.
    CHECK(used.size() == static_cast<std::size_t>(k_workers));
}
