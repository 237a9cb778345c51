// The Scheduler's worker table: the scans over every worker.
#include "worker_table.hpp"

#include "internal/stall.hpp"

namespace drover::scheduling {

std::vector<std::string> WorkerTable::identities() const {
    std::vector<std::string> out;
    out.reserve(ids_.size());
    for (const auto& [identity, wslot] : ids_) out.push_back(identity);
    return out;
}

std::vector<std::string> WorkerTable::silent(Clock::duration window, Clock::time_point now) const {
    std::vector<std::string> out;
    for (const auto& [identity, wslot] : ids_)
        if (now - slots_[wslot].last_seen > window) out.push_back(identity);
    return out;
}

void WorkerTable::stalled(Clock::duration stall, Clock::time_point now) {
    for (const auto& [identity, wslot] : ids_) {
        WorkerState& w = slots_[wslot];
        w.last_seen = StallMeter::shifted(w.last_seen, stall, now);
        if (w.idle_upto != 0) w.idle_since = StallMeter::shifted(w.idle_since, stall, now);
    }
}

}  // namespace drover::scheduling
