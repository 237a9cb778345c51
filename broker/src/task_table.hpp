// The Scheduler's task table: every task the broker holds, by id, in stable slots.
#pragma once

// Single-threaded, like the Scheduler that owns it. A task's slot keeps its
// number until the task is freed; a SlotRef (kept in a queue, a worker's
// held list or a timer) tells by the slot's generation whether it still
// names the same task. The table holds a task's fields and state; what the
// states mean and who moves a task between them is the Scheduler's.

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "drover/common/clock.hpp"
#include "drover/common/protocol.hpp"
#include "slot_index.hpp"

namespace drover {

// An outcome the broker itself must report to a sink (lost, cancelled).
struct FinalOutcome {
    std::string reply_to;
    proto::Outcome outcome;
};

namespace scheduling {

// No slot, no worker, no name: a value no index takes.
inline constexpr std::uint32_t k_none = 0xffffffff;

// Look-ups of a batch of ids prefetch the index bucket of the id this far
// ahead, and a dispatch the entry of the task this far back in its queue:
// the tables are larger than the caches.
inline constexpr std::size_t k_prefetch_ahead = 8;

// A free index of `items` (from `free`), or a new one at its end.
template <class Container>
std::uint32_t take_slot(Container& items, std::vector<std::uint32_t>& free) {
    if (!free.empty()) {
        const auto i = free.back();
        free.pop_back();
        return i;
    }
    items.emplace_back();
    return static_cast<std::uint32_t>(items.size() - 1);
}

// queued: in its name's queue. held: dispatched to a worker, not settled.
// waiting_retry: waiting out a retry back-off. ended: out of all of these,
// its outcome sent (or about to be), waiting for its SETTLE.
enum class TaskState : std::uint8_t { free, queued, held, waiting_retry, ended };

// Names the task in a slot until that slot is freed.
struct SlotRef {
    std::uint32_t slot, gen;
};

// A broker-made outcome, kept to send again, and when a SUBMIT of its id
// again last had it sent.
struct Report {
    FinalOutcome final;
    Clock::time_point repeated_at{};
};

// One accepted task. Strings shared by many tasks (name, reply_to,
// producer) are interned. Its size is the broker's memory per task.
struct TaskEntry {
    std::string id;
    std::string args;
    std::unique_ptr<Report> reported;
    std::uint64_t dispatch_seq = 0;
    std::uint64_t journal_key = 0;  // its key in the broker's Journal (journal.hpp); 0: none
    std::uint32_t name = 0;         // NameTable id
    std::uint32_t reply_to = 0;     // Interned id
    std::uint32_t producer = 0;     // Interned id
    std::uint32_t worker = k_none;  // WorkerTable slot while held
    std::uint32_t timeout_ms = 0;
    std::uint32_t slot = 0;  // its own index in the table
    std::uint32_t gen = 0;
    std::uint16_t attempt = 0;  // times dispatched
    std::uint16_t max_attempts = 1;
    std::uint16_t deaths = 0;
    std::uint16_t report_sends = 0;
    char secret[proto::k_task_secret_bytes] = {};  // from SUBMIT: tokens derive from it
    TaskState state = TaskState::free;
    bool detached = false;
    bool retry_on_error = false;
    bool on_start = false;  // held on one of its worker's start credits

    [[nodiscard]] std::string_view secret_view() const { return {secret, sizeof secret}; }
};

class TaskTable {
    struct IdOf {
        const std::deque<TaskEntry>* slots;
        std::string_view operator()(std::uint32_t slot) const { return (*slots)[slot].id; }
    };
    using Index = SlotIndex<IdOf>;

public:
    TaskTable() = default;
    TaskTable(const TaskTable&) = delete;  // its index points into its own slots
    TaskTable& operator=(const TaskTable&) = delete;

    // The hash the index keys an id by: a batch hashes each id once.
    [[nodiscard]] static std::uint32_t hash(std::string_view id) { return Index::hash(id); }
    // Starts loading the index bucket of a look-up to come.
    void prefetch(std::uint32_t id_hash) const { index_.prefetch(id_hash); }

    // The task held under `id`, or nullptr. id_hash: hash(id).
    [[nodiscard]] TaskEntry* find(std::string_view id) { return find(id, hash(id)); }
    [[nodiscard]] TaskEntry* find(std::string_view id, std::uint32_t id_hash) {
        const auto slot = index_.find(id, id_hash);
        return slot == Index::npos ? nullptr : &slots_[slot];
    }
    // The hashes of a batch's ids (id_of(item)), each computed once; valid
    // until the next call.
    template <class Items, class IdOfItem>
    const std::vector<std::uint32_t>& hash_batch(const Items& items, IdOfItem id_of) {
        batch_hashes_.clear();
        for (const auto& item : items) batch_hashes_.push_back(hash(id_of(item)));
        return batch_hashes_;
    }

    // The task `r` names, or nullptr if its slot was freed since.
    [[nodiscard]] TaskEntry* live(SlotRef r) {
        TaskEntry& e = slots_[r.slot];
        return e.gen == r.gen && e.state != TaskState::free ? &e : nullptr;
    }
    [[nodiscard]] TaskEntry& operator[](std::uint32_t slot) { return slots_[slot]; }
    [[nodiscard]] const TaskEntry& operator[](std::uint32_t slot) const { return slots_[slot]; }

    // A slot for a new task, indexed under `id` (id_hash: hash(id)). The
    // caller sets its other fields, all of which hold a previous task's.
    TaskEntry& add(std::string&& id, std::uint32_t id_hash) {
        const std::uint32_t slot = take_slot(slots_, free_slots_);
        TaskEntry& e = slots_[slot];
        e.slot = slot;
        e.id = std::move(id);
        index_.insert(slot, id_hash);
        ++live_;
        return e;
    }
    // Frees a task's slot, for reuse under the next generation (its interned
    // strings are the caller's to release).
    void remove(TaskEntry& e, std::uint32_t id_hash) {
        index_.erase(e.id, id_hash);
        e.state = TaskState::free;
        ++e.gen;
        e.id.clear();
        e.id.shrink_to_fit();
        e.args.clear();
        e.args.shrink_to_fit();
        e.reported.reset();
        free_slots_.push_back(e.slot);
        --live_;
    }

    // Tasks held.
    [[nodiscard]] std::size_t size() const { return live_; }
    // Every slot, free ones (state free) included: for scans.
    [[nodiscard]] std::deque<TaskEntry>& slots() { return slots_; }
    [[nodiscard]] const std::deque<TaskEntry>& slots() const { return slots_; }
    // With no task held: gives back the slots and the index. Every SlotRef
    // is stale then, and slot numbers and generations start again.
    void clear() {
        std::deque<TaskEntry>().swap(slots_);
        std::vector<std::uint32_t>().swap(free_slots_);
        index_.clear();
    }

private:
    std::deque<TaskEntry> slots_;  // a deque: entries stay put as it grows
    std::vector<std::uint32_t> free_slots_;
    Index index_{IdOf{&slots_}};  // id -> slot
    std::vector<std::uint32_t> batch_hashes_;
    std::size_t live_ = 0;
};

}  // namespace scheduling
}  // namespace drover
