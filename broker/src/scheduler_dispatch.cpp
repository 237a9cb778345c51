// The Scheduler's dispatch: queued tasks matched with worker credits.
#include "scheduler.hpp"

#include <algorithm>

#include "internal/proof.hpp"

namespace drover {

using scheduling::Credit;
using scheduling::k_prefetch_ahead;
using scheduling::TaskEntry;
using scheduling::TaskState;
using scheduling::WorkerState;

std::vector<Scheduler::Batch> Scheduler::dispatch() {
    std::vector<Batch> batches;
    if (queued_ == 0) return batches;
    const std::vector<std::uint32_t> ready = ready_workers();
    if (ready.empty()) return batches;
    std::vector<std::vector<proto::TaskRef>> taken(ready.size());
    // 1. Spread: a task a round to each worker with a free slot, so that idle
    //    slots start work before any worker queues a task (a short queue of
    //    long tasks runs on as many workers as it can); short tasks only as
    //    spreads_to() allows (dispatch_policy.hpp).
    for (bool progress = true; progress && queued_ > 0;) {
        progress = false;
        for (std::size_t i = 0; i < ready.size(); ++i)
            if (workers_[ready[i]].credits > 0) progress = take_one(ready[i], true, taken[i]) || progress;
    }
    // 2. Fill: what is left fills one worker's credits before the next one's,
    //    in fill_order() (dispatch_policy.hpp).
    std::vector<std::size_t> order;  // indexes into ready
    scheduling::fill_order(
        ready.size(), [&](std::size_t i) -> const WorkerState& { return workers_[ready[i]]; }, order);
    for (std::size_t k = 0; k < order.size() && queued_ > 0; ++k) {
        const std::size_t i = order[k];
        while (workers_[ready[i]].credits > 0 && queued_ > 0 && take_one(ready[i], false, taken[i])) {}
    }
    for (std::size_t i = 0; i < ready.size(); ++i) {
        if (taken[i].empty()) continue;
        WorkerState& w = workers_[ready[i]];
        w.served_seq = ++serve_seq_;
        ++totals_.dispatch_batches;
        batches.push_back(Batch{w.identity, std::move(taken[i]), w.hello.max_message_bytes});
    }
    return batches;
}

std::vector<std::uint32_t> Scheduler::ready_workers() const {
    std::vector<std::uint32_t> ready;
    for (const auto& [identity, wslot] : workers_)
        if (workers_[wslot].credits > 0) ready.push_back(wslot);
    std::sort(ready.begin(), ready.end(),
              [this](std::uint32_t a, std::uint32_t b) { return workers_[a].served_seq < workers_[b].served_seq; });
    return ready;
}

bool Scheduler::take_one(std::uint32_t wslot, bool spread, std::vector<proto::TaskRef>& out) {
    WorkerState& w = workers_[wslot];
    for (const auto name : w.names) {
        auto& q = names_.queue(name);
        if (q.empty()) continue;
        const std::uint64_t run_ns = names_.run_ns(name);
        const Credit credit = scheduling::credit_for(w, run_ns, spread);
        if (credit == Credit::none) continue;
        TaskEntry* e = pop_queued(q);
        if (!e) continue;
        const bool on_start = credit == Credit::start;
        unmark_queued(*e);
        e->state = TaskState::held;
        e->worker = wslot;
        e->dispatch_seq = ++dispatch_seq_;
        ++e->attempt;
        e->on_start = on_start;
        w.held.push_back(HeldRef{e->slot, e->gen, e->dispatch_seq});
        ++w.held_count;
        ++held_total_;
        w.take_credit(on_start, !scheduling::is_long_task(run_ns), run_ns);
        out.push_back(dispatched_ref(*e));
        ++totals_.dispatched;
        return true;
    }
    return false;
}

TaskEntry* Scheduler::pop_queued(RingQueue<SlotRef>& q) {
    while (!q.empty()) {
        if (q.size() > k_prefetch_ahead) {  // its entry was last touched when queued: not in cache
            const auto* ahead = reinterpret_cast<const char*>(&tasks_[q[k_prefetch_ahead].slot]);
            __builtin_prefetch(ahead);
            __builtin_prefetch(ahead + 64);
        }
        const SlotRef r = q.front();
        q.pop_front();
        TaskEntry* e = tasks_.live(r);
        if (e && e->state == TaskState::queued) return e;  // else settled or cancelled meanwhile
    }
    return nullptr;
}

proto::TaskRef Scheduler::dispatched_ref(const TaskEntry& e) const {
    return proto::TaskRef{e.id,
                          names_[e.name],
                          e.args,
                          strings_[e.reply_to],
                          e.attempt,
                          e.max_attempts,
                          e.timeout_ms,
                          e.detached,
                          e.retry_on_error,
                          {},
                          attempt_token(e.secret_view(), e.attempt),
                          e.on_start};
}

void Scheduler::undo_dispatch(const Batch& batch) {
    const auto wslot = workers_.slot_of(batch.worker);
    // Reverse order keeps the original order at the front of the queue.
    for (auto it = batch.tasks.rbegin(); it != batch.tasks.rend(); ++it) {
        TaskEntry* e = tasks_.find(it->id);
        if (!e || e->state != TaskState::held) continue;
        --e->attempt;
        if (wslot != scheduling::k_none && e->worker == wslot) workers_[wslot].return_credit(e->on_start);
        enqueue_front(*e);
        --totals_.dispatched;
    }
    --totals_.dispatch_batches;
}

std::optional<FinalOutcome> Scheduler::refuse_dispatched(const std::string& identity, std::string_view id,
                                                         std::string error) {
    const auto wslot = workers_.slot_of(identity);
    TaskEntry* e = tasks_.find(id);
    if (wslot == scheduling::k_none || !e || e->state != TaskState::held || e->worker != wslot) return std::nullopt;
    workers_[wslot].return_credit(e->on_start);
    --totals_.dispatched;
    ++totals_.too_large;
    if (e->attempt > 0) --e->attempt;  // it never ran
    return end_task(*e, proto::Status::error, std::move(error));
}

}  // namespace drover
