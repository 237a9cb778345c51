// Fixtures for the tests over the real programs: a broker's peers, a sink, STATUS, the ledger.
#include "cluster_fixture.hpp"

#include <catch2/catch.hpp>
#include <zmq.hpp>

#include "drover/client/status.hpp"

namespace drover::test {

Process start_worker(const TempDir& dir, const std::string& backend, const std::string& log,
                     const std::vector<std::string>& args) {
    return Process(concat({DROVER_WORKER_EXE, "--broker", backend}, args), dir.file(log));
}

std::vector<Process> start_workers(const TempDir& dir, const std::string& backend, int count,
                                   const std::vector<std::string>& args, const std::string& log_prefix, int first) {
    std::vector<Process> workers;
    workers.reserve(static_cast<std::size_t>(count));
    for (int i = first; i < first + count; ++i)
        workers.push_back(start_worker(dir, backend, log_prefix + std::to_string(i) + ".log", args));
    return workers;
}

Process start_producer(const TempDir& dir, const std::string& frontend, const std::vector<std::string>& args,
                       const std::string& out, const std::string& in) {
    return Process(concat({DROVER_PRODUCER_EXE, "--broker", frontend}, args), dir.file(out),
                   in.empty() ? std::string() : dir.file(in));
}

SinkProcess::SinkProcess(const TempDir& dir, const std::string& frontend, const std::vector<std::string>& args,
                         const std::string& name)
    : Process(concat({DROVER_SINK_EXE, "--bind", "tcp://127.0.0.1:*", "--broker", frontend, "--endpoint-file",
                      dir.file(name + ".ep")},
                     args),
              dir.file(name + ".jsonl")),
      out_path_(dir.file(name + ".jsonl")),
      endpoint_path_(dir.file(name + ".ep")) {}

std::string SinkProcess::address(std::chrono::milliseconds timeout) const {
    auto address = wait_line_file(endpoint_path_, timeout);
    REQUIRE(!address.empty());
    return address;
}

BrokerAndWorker::BrokerAndWorker() : broker(dir), worker(start_worker(dir, broker.backend, "worker.log")) {
    REQUIRE(wait_for_workers(broker.frontend, 1, std::chrono::seconds(10)));
}

nlohmann::json require_status(const std::string& frontend, std::chrono::milliseconds timeout) {
    zmq::context_t ctx;
    auto status = fetch_status(ctx, frontend, timeout);
    REQUIRE(status);
    return *status;
}

std::uint64_t dropped_total(const nlohmann::json& status) {
    std::uint64_t total = 0;
    for (auto& [reason, n] : status["dropped"].items()) total += n.get<std::uint64_t>();
    return total;
}

std::uint64_t dropped_count(const nlohmann::json& status, const std::string& reason) {
    const auto& dropped = status["dropped"];
    return dropped.contains(reason) ? dropped[reason].get<std::uint64_t>() : 0;
}

namespace {

std::map<std::string, nlohmann::json> check_ledger(const std::string& path, const std::set<std::string>& ids,
                                                   bool all_ok) {
    std::map<std::string, nlohmann::json> by_id;
    std::map<std::string, int> by_status;
    for (auto& l : read_json_lines(path)) {
        INFO(l.dump());
        if (all_ok) CHECK(l["status"] == "ok");
        const auto id = l["id"].get<std::string>();
        CHECK(ids.count(id) == 1);
        CHECK(by_id.count(id) == 0);
        ++by_status[l["status"].dump()];
        by_id[id] = l;
    }
    INFO("statuses: " << nlohmann::json(by_status).dump());
    CHECK(by_id.size() == ids.size());
    return by_id;
}

}  // namespace

std::map<std::string, nlohmann::json> ledger(const std::string& path, const std::set<std::string>& ids) {
    return check_ledger(path, ids, false);
}

std::map<std::string, nlohmann::json> ok_ledger(const std::string& path, const std::set<std::string>& ids) {
    return check_ledger(path, ids, true);
}

std::set<std::string> ok_ids(const std::string& path) {
    std::set<std::string> ids;
    for (const auto& l : read_json_lines(path)) {
        INFO(l.dump());
        CHECK(l["status"] == "ok");
        ids.insert(l["id"].get<std::string>());
    }
    return ids;
}

}  // namespace drover::test
