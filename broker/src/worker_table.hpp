// The Scheduler's worker table: registrations, credits, held tasks, liveness.
#pragma once

// A worker is registered by its routing identity (HELLO) into a slot; the
// tasks it holds name that slot. Single-threaded, like the Scheduler.

#include <algorithm>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "drover/common/clock.hpp"
#include "drover/common/protocol.hpp"
#include "task_table.hpp"

namespace drover::scheduling {

// A task a worker holds, as dispatched: stale once the task moved on (its
// slot's generation or dispatch_seq differ).
struct HeldRef {
    std::uint32_t slot, gen;
    std::uint64_t seq;
};

struct WorkerState {
    std::string identity;
    proto::Hello hello;
    std::vector<std::uint32_t> names;  // hello.tasks, as NameTable ids (each holds a reference)
    std::uint32_t credits = 0;
    std::uint32_t starts = 0;  // of the credits, start credits (at most credits)
    // Tasks dispatched on plain credits (prefetch) whose credit has not
    // come back yet, and their expected run time: the work queued there.
    std::uint32_t prefetched = 0;
    std::uint64_t prefetched_ns = 0;
    // In dispatch order (a worker starts tasks in that order); entries
    // whose task moved on are skipped and trimmed lazily.
    std::deque<HeldRef> held;
    std::size_t held_count = 0;
    std::uint64_t done = 0;
    std::uint64_t served_seq = 0;
    Clock::time_point last_seen{};
    // Since when the tasks dispatched to it up to idle_upto (a
    // dispatch_seq) are finished by its word, though not all settled;
    // idle_upto 0: none suspect. report_seq: the Scheduler's dispatch_seq
    // when its last HEARTBEAT with a held count arrived.
    Clock::time_point idle_since{};
    std::uint64_t idle_upto = 0;
    std::uint64_t report_seq = 0;

    // READY: `credits` come back, at most `starts` of them start credits. A
    // credit comes back as a task finishes: as many tasks sent on plain
    // credits leave the work queued there.
    void credited(std::uint32_t credits_back, std::uint32_t starts_back) {
        credits += credits_back;
        starts += std::min(starts_back, credits_back);
        if (prefetched > 0) {
            const std::uint32_t finished = std::min(credits_back, prefetched);
            prefetched_ns -= prefetched_ns / prefetched * finished;
            prefetched -= finished;
            if (prefetched == 0) prefetched_ns = 0;
        }
    }
    // A task dispatched here takes a credit: a start credit, or a plain one
    // that queues `run_ns` of work here when `prefetch` (a short task).
    void take_credit(bool on_start, bool prefetch, std::uint64_t run_ns) {
        --credits;
        if (on_start) {
            --starts;
        } else if (prefetch) {
            ++prefetched;
            prefetched_ns += run_ns;
        }
    }
    // A dispatched task that never reached it gives its credit back.
    void return_credit(bool on_start) {
        ++credits;
        starts += on_start;
    }
};

class WorkerTable {
public:
    using Identities = std::unordered_map<std::string, std::uint32_t>;  // identity -> slot

    // The registered worker at `identity`, or nullptr.
    [[nodiscard]] WorkerState* find(const std::string& identity) {
        const auto it = ids_.find(identity);
        return it == ids_.end() ? nullptr : &slots_[it->second];
    }
    [[nodiscard]] const WorkerState* find(const std::string& identity) const {
        const auto it = ids_.find(identity);
        return it == ids_.end() ? nullptr : &slots_[it->second];
    }
    // Its slot, or k_none.
    [[nodiscard]] std::uint32_t slot_of(const std::string& identity) const {
        const auto it = ids_.find(identity);
        return it == ids_.end() ? k_none : it->second;
    }
    [[nodiscard]] std::uint32_t slot_of(const WorkerState& w) const {
        return static_cast<std::uint32_t>(&w - slots_.data());
    }
    [[nodiscard]] bool contains(const std::string& identity) const { return ids_.count(identity) != 0; }
    // Slots stay put until the next take_slot().
    [[nodiscard]] WorkerState& operator[](std::uint32_t wslot) { return slots_[wslot]; }
    [[nodiscard]] const WorkerState& operator[](std::uint32_t wslot) const { return slots_[wslot]; }

    // A cleared slot for a worker about to register; enter() registers it.
    std::uint32_t take_slot() {
        const std::uint32_t wslot = scheduling::take_slot(slots_, free_);
        slots_[wslot] = WorkerState{};
        return wslot;
    }
    void enter(const std::string& identity, std::uint32_t wslot) { ids_.emplace(identity, wslot); }
    // Unregisters a worker and frees its slot (its tasks and names are the
    // caller's to hand back first).
    void remove(std::uint32_t wslot) {
        ids_.erase(slots_[wslot].identity);
        slots_[wslot] = WorkerState{};
        free_.push_back(wslot);
    }

    [[nodiscard]] std::size_t size() const { return ids_.size(); }
    [[nodiscard]] bool empty() const { return ids_.empty(); }
    // The registered workers' (identity, slot), in no particular order.
    [[nodiscard]] Identities::const_iterator begin() const { return ids_.begin(); }
    [[nodiscard]] Identities::const_iterator end() const { return ids_.end(); }
    [[nodiscard]] std::vector<std::string> identities() const;

    // Workers not heard from for longer than `window`.
    [[nodiscard]] std::vector<std::string> silent(Clock::duration window, Clock::time_point now) const;
    // The broker was stopped for `stall`: each worker's last-seen time, and
    // the start of its idle suspicion, move forward by it (never past `now`).
    void stalled(Clock::duration stall, Clock::time_point now);

private:
    std::vector<WorkerState> slots_;
    Identities ids_;
    std::vector<std::uint32_t> free_;
};

}  // namespace drover::scheduling
