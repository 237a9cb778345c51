// The Scheduler's STATUS report: queues, workers, hosts and totals as JSON.
#include "scheduler.hpp"

#include <algorithm>

namespace drover {

using nlohmann::json;
using scheduling::NameTable;
using scheduling::TaskState;
using scheduling::TaskTable;
using scheduling::WorkerState;
using scheduling::WorkerTable;

namespace {

// STATUS lists at most this many queues (the busiest) and workers; it says
// how many it left out.
constexpr std::size_t k_status_queues = 1000;
constexpr std::size_t k_status_workers = 10'000;

struct QueuesReport {
    json queues = json::object();  // name -> its queue
    json waiting = json::array();  // names with tasks queued and no worker to run them
    std::size_t omitted = 0;
};

// The busiest k_status_queues names: a reply must not grow with every name
// a client made up.
QueuesReport report_queues(const NameTable& names, const TaskTable& tasks, const WorkerTable& workers) {
    std::vector<std::size_t> running(names.id_end(), 0), can_run(names.id_end(), 0);
    for (const auto& e : tasks.slots())
        if (e.state == TaskState::held) ++running[e.name];
    for (const auto& [identity, wslot] : workers)
        for (const auto name : workers[wslot].names) ++can_run[name];
    std::vector<std::uint32_t> shown;
    for (std::uint32_t n = 0; n < names.id_end(); ++n)
        if (names.queued(n) != 0 || running[n] != 0 || can_run[n] != 0) shown.push_back(n);
    const std::size_t listed = std::min(shown.size(), k_status_queues);
    const auto busier = [&](std::uint32_t a, std::uint32_t b) {
        return names.queued(a) + running[a] + can_run[a] > names.queued(b) + running[b] + can_run[b];
    };
    std::partial_sort(shown.begin(), shown.begin() + static_cast<std::ptrdiff_t>(listed), shown.end(), busier);
    QueuesReport out;
    for (std::size_t i = 0; i < listed; ++i) {
        const auto n = shown[i];
        const std::size_t queued = names.queued(n);
        out.queues[names[n]] = {{"queued", queued},
                                {"in_flight", running[n]},
                                {"workers", can_run[n]},
                                {"run_us", static_cast<double>(names.run_ns(n)) / 1000.0}};
        if (queued > 0 && can_run[n] == 0) out.waiting.push_back(names[n]);
    }
    out.omitted = shown.size() - listed;
    return out;
}

// At most k_status_workers, by HELLO id.
json report_workers(const WorkerTable& workers, Clock::time_point now) {
    json out = json::array();
    for (const auto& [identity, wslot] : workers) {
        if (out.size() >= k_status_workers) break;
        const WorkerState& w = workers[wslot];
        out.push_back({{"id", w.hello.worker},
                       {"host", w.hello.host},
                       {"pid", w.hello.pid},
                       {"pool", w.hello.pool},
                       {"slots", w.hello.slots},
                       {"credits", w.credits},
                       {"starts", w.starts},
                       {"held", w.held_count},
                       {"done", w.done},
                       {"restarts", w.hello.restarts},
                       {"last_heartbeat_ms", std::chrono::duration_cast<Millis>(now - w.last_seen).count()}});
    }
    std::sort(out.begin(), out.end(),
              [](const json& a, const json& b) { return a["id"].get<std::string>() < b["id"].get<std::string>(); });
    return out;
}

// The fleet by host: how many workers, slots and tasks each machine has.
json report_hosts(const json& workers) {
    json hosts = json::object();
    for (const auto& w : workers) {
        auto& h = hosts[w["host"].get<std::string>()];
        if (h.is_null()) h = {{"workers", 0}, {"slots", 0}, {"held", 0}, {"done", 0}, {"pools", json::array()}};
        h["workers"] = h["workers"].get<std::size_t>() + 1;
        h["slots"] = h["slots"].get<std::uint64_t>() + w["slots"].get<std::uint64_t>();
        h["held"] = h["held"].get<std::size_t>() + w["held"].get<std::size_t>();
        h["done"] = h["done"].get<std::uint64_t>() + w["done"].get<std::uint64_t>();
        auto& pools = h["pools"];
        if (std::find(pools.begin(), pools.end(), w["pool"]) == pools.end()) pools.push_back(w["pool"]);
    }
    return hosts;
}

json report_totals(const Scheduler::Totals& t) {
    return {{"accepted", t.accepted},
            {"rejected", t.rejected},
            {"dispatched", t.dispatched},
            {"settled", t.settled},
            {"redispatched", t.redispatched},
            {"retried", t.retried},
            {"lost", t.lost},
            {"cancelled", t.cancelled},
            {"timed_out", t.timed_out},
            {"workers_expired", t.workers_expired},
            {"reports_resent", t.reports_resent},
            {"reports_abandoned", t.reports_abandoned},
            {"results_forwarded", t.results_forwarded},
            {"dispatch_batches", t.dispatch_batches},
            {"recovered", t.recovered},
            {"too_large", t.too_large},
            {"returned", t.returned}};
}

}  // namespace

nlohmann::json Scheduler::status(Clock::time_point now) const {
    const QueuesReport queues = report_queues(names_, tasks_, workers_);
    const json workers = report_workers(workers_, now);
    return {{"queues", queues.queues},
            {"waiting_for_workers", queues.waiting},
            {"workers", workers},
            {"hosts", report_hosts(workers)},
            {"queues_omitted", queues.omitted},
            {"workers_omitted", workers_.size() - workers.size()},
            {"names", names_.size()},
            {"queued", queued_},
            {"in_flight", held_total_},
            {"retrying", retrying_},
            {"awaiting_settle", tasks_.size() - queued_ - held_total_ - retrying_},
            {"held", tasks_.size()},
            {"totals", report_totals(totals_)}};
}

}  // namespace drover
