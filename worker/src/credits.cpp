// The worker's credit policy (credits.hpp).
#include "credits.hpp"

#include <algorithm>

namespace drover {

CreditPolicy::CreditPolicy(CreditSettings settings) : settings_(settings), early_granted_(settings.slots, 0) {}

std::uint64_t CreditPolicy::sample(RunMeter& meter) {
    const auto ran = meter.ran();
    const auto busy = meter.busy_ns();
    if (ran - sampled_ran_ < (mean_task_ns_ == 0 ? k_first_sample : k_sample)) return ran;
    mean_task_ns_ = std::max<std::uint64_t>(1, (busy - sampled_busy_ns_) / (ran - sampled_ran_));
    sampled_ran_ = ran;
    sampled_busy_ns_ = busy;
    window_longest_ns_ = meter.take_longest_ns();
    return ran;
}

std::uint32_t CreditPolicy::target_credits(RunMeter& meter) {
    const std::uint32_t slots = settings_.slots;
    if (!settings_.auto_prefetch) return slots + settings_.prefetch;
    const auto ran = sample(meter);
    if (mean_task_ns_ == 0) return slots + settings_.prefetch;  // nothing measured yet
    const std::uint64_t wanted = k_queued_work.count() * slots / mean_task_ns_;
    // Not one task's worth of queued work a slot: credits just in time instead.
    const bool early = wanted == 0 && settings_.prefetch <= 1;
    const auto mean = static_cast<std::int64_t>(mean_task_ns_);
    const auto lead = std::min<std::int64_t>(mean / 2, settings_.early_credit_lead.count());
    early_after_ns_ = early ? std::max<std::int64_t>(1, mean - lead) : 0;
    if (early) return slots;
    const std::uint64_t most = std::min(std::uint64_t{k_max_prefetch} * slots, k_growth * ran);
    return slots + static_cast<std::uint32_t>(std::max<std::uint64_t>(std::min(wanted, most), settings_.prefetch));
}

CreditPolicy::TopUp CreditPolicy::top_up(RunMeter& meter) {
    const auto target = target_credits(meter);
    const auto prefetch = target - std::min(target, settings_.slots);
    const std::uint32_t batch = std::max<std::uint32_t>(1, prefetch / 2);
    // With early credits every task's end is wanted at once: the next task,
    // already here, starts then, and its early credit is timed from that start.
    const bool early = early_after_ns_ != 0;
    const std::uint32_t slots = settings_.slots;
    const std::uint32_t free = slots - std::min(slots, outstanding_);
    const std::uint32_t starts = free > starts_out_ ? free - starts_out_ : 0;
    std::uint32_t credits = 0, wait = batch;
    if (target < promised_ + batch) wait = early ? 1 : promised_ + batch - target;
    else credits = target - promised_;
    return {std::max(credits, starts), starts, wait};
}

bool CreditPolicy::tasks_are_quick() const {
    // By the longest of the last sample's: a task that ran past the liveness
    // window on the I/O thread would keep it from its heartbeats.
    return settings_.auto_prefetch && mean_task_ns_ != 0 &&
           window_longest_ns_ < static_cast<std::uint64_t>(k_inline_below.count());
}

void CreditPolicy::credits_sent(std::uint32_t credits, std::uint32_t starts) {
    promised_ += credits;
    starts_out_ += starts;
}

void CreditPolicy::start_credits_used(std::uint32_t n) { starts_out_ -= std::min(starts_out_, n); }

void CreditPolicy::tasks_done(std::uint32_t n) {
    outstanding_ -= std::min(outstanding_, n);
    promised_ -= std::min(promised_, n);
}

void CreditPolicy::broker_forgot() {
    promised_ = outstanding_;
    starts_out_ = 0;
    std::fill(early_granted_.begin(), early_granted_.end(), 0);
}

}  // namespace drover
