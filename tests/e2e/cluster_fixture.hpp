// Fixtures for the tests over the real programs: a broker's peers started the
// way a user starts them, a sink and its address, STATUS, and the ledger of a run.
#pragma once

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "process.hpp"

namespace drover::test {

// 200 ms heartbeats and a liveness of 3: a peer silent for 600 ms is taken for gone.
inline const std::vector<std::string> k_fast_heartbeats = {"--heartbeat-ms", "200", "--liveness", "3"};

// drover-worker --broker `backend` `args`..., its stdout and stderr in
// dir/`log` and dir/`log`.err.
Process start_worker(const TempDir& dir, const std::string& backend, const std::string& log,
                     const std::vector<std::string>& args = {});

// `count` workers as start_worker makes them, logging to dir/`log_prefix`<i>.log
// with i from `first`.
std::vector<Process> start_workers(const TempDir& dir, const std::string& backend, int count,
                                   const std::vector<std::string>& args = {}, const std::string& log_prefix = "w",
                                   int first = 1);

// drover-producer --broker `frontend` `args`..., stdout to dir/`out` (stderr
// to dir/`out`.err), stdin from dir/`in` (or /dev/null when `in` is empty).
Process start_producer(const TempDir& dir, const std::string& frontend, const std::vector<std::string>& args,
                       const std::string& out, const std::string& in = {});

// A drover-sink bound on an ephemeral tcp port, `args` added: its outcomes go
// to dir/`name`.jsonl, its log to dir/`name`.jsonl.err, its address to dir/`name`.ep.
class SinkProcess : public Process {
public:
    SinkProcess(const TempDir& dir, const std::string& frontend, const std::vector<std::string>& args = {},
                const std::string& name = "sink");
    // The address it wrote to its endpoint file, waited for up to `timeout`;
    // REQUIREs that it came.
    std::string address(std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;
    [[nodiscard]] const std::string& out_path() const { return out_path_; }
    // What it has logged so far (its stderr).
    [[nodiscard]] std::string log() const { return read_file(out_path_ + ".err"); }

private:
    std::string out_path_, endpoint_path_;
};

// A Catch2 fixture (TEST_CASE_METHOD): a fresh directory, a broker in it and
// one drover-worker logging to worker.log; the constructor REQUIREs the
// worker registered within 10 s.
struct BrokerAndWorker {
    BrokerAndWorker();
    TempDir dir;
    BrokerProcess broker;
    Process worker;
};

// One STATUS from the broker at `frontend`, asked on a context of its own;
// REQUIREs an answer within `timeout`.
nlohmann::json require_status(const std::string& frontend, std::chrono::milliseconds timeout);

// The sum of the broker's "dropped" counters in `status`.
std::uint64_t dropped_total(const nlohmann::json& status);
// The broker's "dropped" counter for `reason` in `status` (0 if absent).
std::uint64_t dropped_count(const nlohmann::json& status, const std::string& reason);

// The ledger of the JSON-lines outcomes at `path`: each line's id is one of
// `ids`, none comes twice, and every id is there (CHECKed). Returns the lines by id.
std::map<std::string, nlohmann::json> ledger(const std::string& path, const std::set<std::string>& ids);
// The ledger, and every outcome ok.
std::map<std::string, nlohmann::json> ok_ledger(const std::string& path, const std::set<std::string>& ids);
// The ids of the outcomes at `path`, each CHECKed ok (without the ledger's
// checks of repeats and of ids).
std::set<std::string> ok_ids(const std::string& path);

}  // namespace drover::test
