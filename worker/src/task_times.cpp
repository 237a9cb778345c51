// Run times by task name for the broker (task_times.hpp).
#include "task_times.hpp"

#include <algorithm>

namespace drover {

bool TaskTimes::add(const NameTimes& times) {
    bool due = false;
    std::lock_guard lock(mutex_);
    if (times_.size() > 4096) times_.clear();  // names are the registry's; a bound all the same
    for (const auto& [name, run] : times) {
        if (run.first == 0) continue;
        const std::uint64_t mean = std::max<std::uint64_t>(1, run.second / run.first);
        auto& t = times_[name];
        const std::uint64_t known = t.due_ns != 0 ? t.due_ns : t.told_ns;
        if (known == 0 || mean >= 4 * known || 4 * mean <= known) {
            t.due_ns = mean;
            due = true;
        }
    }
    if (due) due_.store(true, std::memory_order_release);
    return due;
}

void TaskTimes::take_due(RunNs& run_ns) {
    if (!due_.exchange(false, std::memory_order_acq_rel)) return;
    std::lock_guard lock(mutex_);
    for (auto& [name, t] : times_) {
        if (t.due_ns == 0) continue;
        run_ns.emplace_back(name, t.due_ns);
        t.told_ns = std::exchange(t.due_ns, 0);
    }
}

void TaskTimes::forget_told() {
    std::lock_guard lock(mutex_);
    for (auto& [name, t] : times_) {
        if (t.due_ns == 0) t.due_ns = t.told_ns;
        t.told_ns = 0;
    }
    if (!times_.empty()) due_ = true;
}

void TaskTimes::told(const RunNs& run_ns) {
    std::lock_guard lock(mutex_);
    for (const auto& [name, ns] : run_ns) times_[name].told_ns = ns;
}

}  // namespace drover
