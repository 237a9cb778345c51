// The mean run time of each task name, as the worker tells it to the broker.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace drover {

// A report's run times by task name: (name, (tasks, ns in all)).
using NameTimes = std::vector<std::pair<std::string, std::pair<std::uint64_t, std::uint64_t>>>;
// Task name -> mean ns, as READY carries it.
using RunNs = std::vector<std::pair<std::string, std::uint64_t>>;

// Run times by task name for the broker, which dispatches a long or untimed
// name only on start credits (free slots). Each name's mean is told again
// only when it changed 4x or more. Thread-safe: executors (and the I/O
// thread) add, the I/O thread tells.
class TaskTimes {
public:
    // Adds a report's times. Returns whether a name's mean is now due: new,
    // or 4x off what the broker was told.
    bool add(const NameTimes& times);
    // Appends the means due to `run_ns` and counts them as told (I/O thread).
    void take_due(RunNs& run_ns);
    // A new broker knows no time: every one known is due again.
    void forget_told();
    // The broker was told these times outside take_due().
    void told(const RunNs& run_ns);

private:
    struct Entry {
        std::uint64_t told_ns = 0, due_ns = 0;  // the last told; the one to tell (0: none)
    };
    std::mutex mutex_;
    std::unordered_map<std::string, Entry> times_;  // guarded by mutex_
    std::atomic<bool> due_{false};                  // an entry has a due_ns
};

}  // namespace drover
