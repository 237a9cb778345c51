// The dispatch policy: which worker's credit a queued task takes.
#pragma once

// A worker grants two kinds of credit: start credits (a slot free, or about
// to be) and plain ones (room in its prefetch queue). A task whose name runs
// long, or was never timed, takes only a start credit or a free slot, so
// that it never waits behind another at one worker while another worker
// has a slot free. A short one takes any credit while the work queued on a
// worker's prefetch stays under k_prefetched_work_ns a slot. Scheduler::
// dispatch() applies it in two rounds: the spread (a task a round to each
// worker with a free slot) and the fill (the rest, one worker's credits
// before the next one's). Inline: it runs for every task dispatched.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "worker_table.hpp"

namespace drover::scheduling {

// A dispatch spreads tasks over idle workers only while a worker's credits
// and held tasks are at most this many a slot: a prefetch of 3 a slot or
// less, tasks of about 0.7 ms or more (docs/design.md).
inline constexpr std::size_t k_spread_max_credits_per_slot = 4;

// A name whose tasks run this long or longer, or that no worker has timed
// yet, is dispatched only on start credits (free slots): waiting behind one
// such task costs more than a DISPATCH to an idle worker.
inline constexpr std::uint64_t k_long_task_ns = 1'000'000;

// Shorter tasks fill a worker's plain credits while the expected run time
// of those it was sent on them, not yet credited back, stays under this a
// slot: a worker sizes its prefetch to 2 ms of its mean task, and the
// times reported by name are rougher (a worker reports a change of 4x,
// cold first tasks included), so a tighter bound would cut short tasks'
// batches below what the worker granted.
inline constexpr std::uint64_t k_prefetched_work_ns = 16'000'000;

[[nodiscard]] inline bool is_long_task(std::uint64_t run_ns) { return run_ns == 0 || run_ns >= k_long_task_ns; }

// Few credits a slot: the worker's measured tasks are long (or unknown yet).
[[nodiscard]] inline bool runs_long_tasks(const WorkerState& w) {
    return w.held_count + w.credits <= k_spread_max_credits_per_slot * w.hello.slots;
}

// The spread gives short tasks only to workers with a slot free whose tasks
// are long: to one that grants many credits a slot (short tasks), a
// DISPATCH of one task costs more than the wait it saves, and waking many
// such workers with cold caches costs more still (drover-bench W5).
[[nodiscard]] inline bool spreads_to(const WorkerState& w) {
    return w.held_count < w.hello.slots && runs_long_tasks(w);
}

enum class Credit : std::uint8_t { none, start, plain };

// The credit of `w` (which has one at least) a task of a name with expected
// run time `run_ns` takes; none: that name waits for another worker or
// another round. `spread`: the first round.
[[nodiscard]] inline Credit credit_for(const WorkerState& w, std::uint64_t run_ns, bool spread) {
    const std::uint64_t slots = std::max<std::uint32_t>(1, w.hello.slots);
    if (is_long_task(run_ns)) {
        if (w.starts > 0) return Credit::start;
        if (w.held_count < slots) return Credit::plain;  // a slot is free there, whatever its credits
        return Credit::none;
    }
    if (spread && !spreads_to(w)) return Credit::none;
    if (w.credits == w.starts) return Credit::start;  // plain credits first
    if (w.prefetched_ns + run_ns > k_prefetched_work_ns * slots) return w.starts == 0 ? Credit::none : Credit::start;
    return Credit::plain;
}

// The order in which the fill round fills workers (indexes into `ready`,
// which is least recently served first). A worker that grants many credits
// (short tasks) gets one big batch rather than a task in each of many small
// ones. Workers of long tasks come first, least recently served first, like
// the spread; then workers of short tasks, most recently served first:
// while the busiest keep up, the work stays on processes whose caches are
// warm (drover-bench W5).
template <class WorkerOf>
void fill_order(std::size_t ready, WorkerOf worker_of, std::vector<std::size_t>& order) {
    order.reserve(ready);
    for (std::size_t i = 0; i < ready; ++i)
        if (runs_long_tasks(worker_of(i))) order.push_back(i);
    for (std::size_t i = ready; i-- > 0;)
        if (!runs_long_tasks(worker_of(i))) order.push_back(i);
}

}  // namespace drover::scheduling
