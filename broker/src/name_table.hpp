// The Scheduler's task names: each with its queue, its queued count and its run time.
#pragma once

// Names are interned as small ids, reference-counted by the tasks and the
// workers that use them. A name nobody uses is freed, or, if a worker
// announced it, remembered (least recently used first, at most
// `remembered`): a task of a remembered name waits for a worker rather than
// ending as unknown. Freed ids are reused. Single-threaded.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "ring_queue.hpp"
#include "task_table.hpp"

namespace drover::scheduling {

class NameTable {
public:
    explicit NameTable(std::size_t remembered) : remembered_(remembered) {}

    // A name's id, with one more reference (a task or a worker uses it).
    std::uint32_t acquire(const std::string& name);
    // One more reference to a name already held.
    void acquire_again(std::uint32_t id) { ++refs_[id]; }
    // One reference less: see the class comment.
    void release(std::uint32_t id) {
        if (--refs_[id] == 0) unused(id);
    }
    // The id of a name kept, or k_none.
    [[nodiscard]] std::uint32_t find(const std::string& name) const {
        const auto it = ids_.find(name);
        return it == ids_.end() ? k_none : it->second;
    }
    [[nodiscard]] const std::string& operator[](std::uint32_t id) const { return names_[id]; }

    // A worker announced the name: it is remembered once unused.
    void announce(std::uint32_t id) { announced_[id] = 1; }
    [[nodiscard]] bool announced(std::uint32_t id) const { return announced_[id] != 0; }

    // Refs of the name's tasks in queue order, stale ones (tasks that left
    // the queue) included: readers skip them.
    [[nodiscard]] RingQueue<SlotRef>& queue(std::uint32_t id) { return queues_[id]; }
    [[nodiscard]] const RingQueue<SlotRef>& queue(std::uint32_t id) const { return queues_[id]; }
    // Tasks of the name in state queued (the Scheduler counts them).
    [[nodiscard]] std::size_t queued(std::uint32_t id) const { return queued_[id]; }
    void count_queued(std::uint32_t id) { ++queued_[id]; }
    void uncount_queued(std::uint32_t id) { --queued_[id]; }
    // The run time the name's workers last reported for its tasks (0: never timed).
    [[nodiscard]] std::uint64_t run_ns(std::uint32_t id) const { return run_ns_[id]; }
    void set_run_ns(std::uint32_t id, std::uint64_t ns) { run_ns_[id] = ns; }

    // Names kept: used, or remembered.
    [[nodiscard]] std::size_t size() const { return ids_.size(); }
    // One past the largest id, freed ids included.
    [[nodiscard]] std::uint32_t id_end() const { return static_cast<std::uint32_t>(names_.size()); }
    // Drops every ref from every queue (they are all stale).
    void clear_queues() {
        for (auto& q : queues_) q.clear();
    }
    // With no task queued or held: renumbers the names so that the tables
    // keep no room for freed ones. Returns each old id's new id (k_none for
    // a freed one), empty if no name was freed (ids unchanged).
    std::vector<std::uint32_t> compact();

private:
    struct IdleLink {
        std::uint32_t prev = k_none, next = k_none;
        bool idle = false;
    };
    void unused(std::uint32_t id);
    void free_name(std::uint32_t id);
    void unlink_idle(std::uint32_t id);

    std::size_t remembered_;
    std::deque<std::string> names_;  // a deque: references to them stay valid
    std::unordered_map<std::string, std::uint32_t> ids_;
    // By name id:
    std::vector<std::uint32_t> refs_;
    std::vector<char> announced_;
    std::vector<RingQueue<SlotRef>> queues_;
    std::vector<std::size_t> queued_;
    std::vector<std::uint64_t> run_ns_;
    std::vector<IdleLink> idle_links_;
    std::vector<std::uint32_t> free_ids_;
    std::uint32_t idle_head_ = k_none, idle_tail_ = k_none;  // the unused names remembered, oldest first
    std::size_t idle_names_ = 0;
};

}  // namespace drover::scheduling
