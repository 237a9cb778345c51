// WorkerImpl's credits on the wire: READY, early credits and RETURN, as the CreditPolicy decides (worker_impl.hpp).
#include <algorithm>
#include <utility>

#include "worker_impl.hpp"

namespace drover {

void WorkerImpl::count_finished() { io_.credits.tasks_done(shared_.signals.finished.exchange(0)); }

std::uint32_t WorkerImpl::top_up_credits() {
    const auto top_up = io_.credits.top_up(shared_.signals.meter);
    const auto early_after_ns = io_.credits.early_after_ns();
    if (shared_.signals.early_after_ns.load(std::memory_order_relaxed) != early_after_ns)
        shared_.signals.early_after_ns.store(early_after_ns, std::memory_order_relaxed);
    send_ready(top_up.credits, top_up.starts);
    return top_up.wait;
}

void WorkerImpl::send_ready(std::uint32_t credits, std::uint32_t starts) {
    proto::Ready ready{credits, starts, {}};
    shared_.times.take_due(ready.run_ns);
    if (credits == 0 && ready.run_ns.empty()) return;
    io_.credits.credits_sent(credits, starts);
    shared_.signals.starts_low.store(io_.credits.starts_low(), std::memory_order_relaxed);
    (void)send_message(*io_.broker, proto::Command::ready, proto::encode(ready));
}

Clock::time_point WorkerImpl::grant_early_credits(Clock::time_point now) {
    const auto early =
        io_.credits.early_credits(now, io_.stopping, [this](std::size_t slot) { return slot_started_ns(slot); });
    if (early.due > 0) send_ready(early.due, early.due);  // each for a slot about to free: start credits
    return early.next;
}

Clock::time_point WorkerImpl::give_back_queued(Clock::time_point now) {
    const auto at =
        io_.credits.give_back_at(now, io_.stopping, [this](std::size_t slot) { return slot_started_ns(slot); });
    if (at > now) return at;
    auto back = claim_queued_on_plain_credits();
    if (back.empty()) return Clock::time_point::max();
    proto::Ready ready{0, 0, running_names(now)};
    shared_.times.told(ready.run_ns);  // its real time is told once measured, being 4x off this
    proto::Ids ids;
    ids.ids.reserve(back.size());
    for (const auto& t : back) ids.ids.push_back(t.id);
    if (!ready.run_ns.empty()) (void)send_message(*io_.broker, proto::Command::ready, proto::encode(ready));
    if (send_message(*io_.broker, proto::Command::give_back, proto::encode(ids)) != SendStatus::sent) {
        requeue(std::move(back));  // not given back after all: they run here
        return Clock::time_point::max();
    }
    log_->info("task.returned n={} (queued behind tasks running {} ms and more on every slot)", back.size(),
               std::chrono::duration_cast<Millis>(k_give_back_after).count());
    io_.credits.tasks_done(static_cast<std::uint32_t>(back.size()));
    return Clock::time_point::max();
}

std::vector<proto::Task> WorkerImpl::claim_queued_on_plain_credits() {
    // Claimed with the executors' own atomic step: a task is either started
    // by an executor or given back, never both. Only tasks sent on plain
    // credits go back: the broker took their name for short. One sent on a
    // start credit was sent for its slot (an early credit: its task was
    // expected to end about now), and stays.
    std::vector<proto::Task> back, kept;
    std::lock_guard lock(shared_.held.mutex);
    for (auto& b : shared_.held.queue) {
        const auto from = b->next.exchange(b->tasks.size(), std::memory_order_relaxed);
        for (auto k = from; k < b->tasks.size(); ++k) {
            auto& t = b->tasks[k];
            if (t.reply_to.empty()) t.reply_to = b->reply_to;
            (t.start ? kept : back).push_back(std::move(t));
        }
    }
    if (!kept.empty()) {
        auto again = std::make_shared<Dispatched>();
        again->tasks = std::move(kept);
        shared_.held.queue.push_front(std::move(again));
    }
    return back;
}

RunNs WorkerImpl::running_names(Clock::time_point now) {
    const auto now_ns = ns_since_epoch(now);
    RunNs run_ns;
    for (unsigned i = 0; i < options_.concurrency; ++i) {
        auto& slot = shared_.slots[i];
        std::string name;
        {
            std::lock_guard lock(slot.name_mutex);
            name = slot.name;
        }
        const auto started = slot.started_ns.load(std::memory_order_acquire);
        if (name.empty() || started == 0 || started > now_ns) continue;  // it ended meanwhile
        const auto ran = static_cast<std::uint64_t>(now_ns - started);
        bool seen = false;
        for (const auto& [n, ns] : run_ns) seen = seen || n == name;
        if (!seen) run_ns.emplace_back(name, ran);
    }
    return run_ns;
}

void WorkerImpl::requeue(std::vector<proto::Task>&& tasks) {
    auto again = std::make_shared<Dispatched>();
    again->tasks = std::move(tasks);
    {
        std::lock_guard lock(shared_.held.mutex);
        shared_.held.queue.push_front(std::move(again));
    }
    shared_.held.wake.notify_all();
}

}  // namespace drover
