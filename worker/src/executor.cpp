// An executor thread: claims tasks, runs them, reports their outcomes (executor.hpp).
#include "executor.hpp"

#include <algorithm>
#include <utility>

#include "drover/common/retry.hpp"
#include "internal/net.hpp"
#include "task_context.hpp"

namespace drover {

namespace {

constexpr std::size_t k_result_batch = 1024;
constexpr auto k_batch_only_below = std::chrono::microseconds(1000);  // slower tasks report at once

}  // namespace

std::optional<Clock::time_point>& current_task_deadline() {
    thread_local std::optional<Clock::time_point> deadline;
    return deadline;
}

Clock::time_point run_task(const Registry& registry, const WorkerOptions& options, const Logger& log, proto::Task& task,
                           proto::Outcome& out, Clock::time_point start, bool on_io) {
    auto& deadline = current_task_deadline();
    deadline.reset();
    if (task.timeout_ms > 0) deadline = start + Millis(task.timeout_ms);
    try {
        out.result = registry.run(task.name, task.args);
        out.status = proto::Status::ok;
    } catch (const TaskTimedOut& e) {
        out.status = proto::Status::timeout;
        out.error = e.what();
    } catch (const std::exception& e) {
        out.status = proto::Status::error;
        out.error = e.what();
    } catch (...) {
        out.status = proto::Status::error;
        out.error = "unknown exception";
    }
    const auto end = Clock::now();
    out.id = std::move(task.id);
    out.task = std::move(task.name);
    // A result its sink could not take (a bigger message than the limit would be refused).
    const std::size_t max_result = payload_limit(options.max_message_bytes);
    if (out.result.size() > max_result) {
        out.status = proto::Status::error;
        out.error = "result too large: " + std::to_string(out.result.size()) + " bytes, where at most " +
                    std::to_string(max_result) + " fit (the worker's --max-message-bytes " +
                    std::to_string(options.max_message_bytes) + ", less " + std::to_string(k_message_fields) +
                    " for the message's own fields)";
        out.result.clear();
    }
    out.elapsed_us =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(end - start).count());
    log->debug("task.done id={} task={} status={} us={} on={}", out.id, out.task, proto::status_name(out.status),
               out.elapsed_us, on_io ? "io" : "executor");
    return end;
}

Executor::Executor(SharedState& shared, const WorkerOptions& options, const Registry& registry, Logger log,
                   zmq::context_t& ctx, const std::string& io_endpoint, unsigned index)
    : shared_(shared),
      options_(options),
      registry_(registry),
      log_(std::move(log)),
      slot_(shared.slots[index]),
      worker_name_(options.concurrency > 1 ? options.id + "/" + std::to_string(index) : options.id),
      batch_bytes_(batch_byte_limit(options.max_message_bytes)),
      to_io_(ctx, zmq::socket_type::push),
      route_(ctx, options.security.get(), to_io_, shared.reach, shared.signals.abort,
             options.heartbeat * options.liveness, log_) {
    to_io_.connect(io_endpoint);
}

void Executor::run() {
    while (true) {
        proto::Task* next = take();
        if (!next) {
            if (wait_for_tasks()) continue;
            break;
        }
        if (shared_.signals.abort) break;
        execute(*next);
    }
    if (pending_count_ > 0 && !shared_.signals.abort) report(false);
}

proto::Task* Executor::take() {
    while (true) {
        if (batch_) {
            const auto i = batch_->next.fetch_add(1, std::memory_order_relaxed);
            if (i < batch_->tasks.size()) return &batch_->tasks[i];
            batch_.reset();
        }
        std::lock_guard lock(shared_.held.mutex);
        shared_.held.pop_spent();
        if (shared_.held.queue.empty()) return nullptr;
        batch_ = shared_.held.queue.front();
    }
}

bool Executor::more_queued() {
    if (batch_ && !batch_->spent()) return true;
    std::lock_guard lock(shared_.held.mutex);
    shared_.held.pop_spent();
    batch_ = shared_.held.queue.empty() ? nullptr : shared_.held.queue.front();
    return batch_ != nullptr;
}

bool Executor::wait_for_tasks() {
    carried_ = {};
    // Not busy after all (another executor took the task announced): no
    // early credit for this slot while it reports or waits.
    slot_.started_ns.store(0, std::memory_order_release);
    if (pending_count_ > 0) report(false);  // another executor took the last task: report ours before sleeping
    auto& held = shared_.held;
    std::unique_lock lock(held.mutex);
    held.pop_spent();
    ++held.idle_executors;
    held.wake.wait(lock, [&] { return !held.queue.empty() || held.closing || shared_.signals.abort; });
    --held.idle_executors;
    return !(shared_.signals.abort || held.queue.empty());  // else closing and drained
}

void Executor::execute(proto::Task& task) {
    const std::string& sink = task.reply_to.empty() ? batch_->reply_to : task.reply_to;
    if (!last_sink_ || *last_sink_ != sink) route_.connect(sink);  // before the task: its result needs no wait then
    const std::uint64_t run = task.timeout_ms > 0 ? watch_deadline(task, sink) : 0;
    proto::Outcome out;
    out.attempt = task.attempt;
    out.token = task.token;
    out.worker = worker_name_;
    // A task that follows the last one at once starts when it ended: one clock read a task, not two.
    const auto start = carried_ != Clock::time_point{} && task.timeout_ms == 0 ? carried_ : Clock::now();
    announce_start(start);
    note_name(task.name);
    const auto end = run_task(registry_, options_, log_, task, out, start, /*on_io=*/false);
    const auto elapsed = end - start;
    slot_.started_ns.store(0, std::memory_order_release);
    const auto elapsed_ns =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count());
    busy_ns_ += elapsed_ns;
    longest_ns_ = std::max(longest_ns_, elapsed_ns);
    ++times_[times_at_].second.first;
    times_[times_at_].second.second += elapsed_ns;
    if (task.timeout_ms == 0 || !past_deadline(run, task, out, end, elapsed)) keep(task, sink, std::move(out));
    ++pending_count_;
    // A batch leaves when it is full or when there is nothing else to do.
    // (`task` and `sink` are not used past here: their batch may go.)
    const bool idle = !more_queued();
    // The next task starts now: announced before the report below wakes the
    // I/O thread, which then sets its early-credit timer for it.
    if (!idle) slot_.started_ns.store(ns_since_epoch(end), std::memory_order_release);
    if (idle || pending_count_ >= k_result_batch || pending_bytes_ >= batch_bytes_ || elapsed >= k_batch_only_below) {
        report(idle && elapsed >= k_batch_only_below);
        carried_ = {};
    } else {
        carried_ = end;  // reset if, when the next is taken, none is left
    }
}

std::uint64_t Executor::watch_deadline(const proto::Task& task, const std::string& sink) {
    std::uint64_t run = 0;
    {
        std::lock_guard lock(shared_.held.mutex);
        run = ++shared_.held.runs;
        auto& r = shared_.held.running[run] = Running{Clock::now() + Millis(task.timeout_ms), task, false};
        r.task.reply_to = sink;
    }
    wake_io();  // for it to wait for this deadline
    return run;
}

bool Executor::past_deadline(std::uint64_t run, const proto::Task& task, proto::Outcome& out, Clock::time_point end,
                             Clock::duration elapsed) {
    bool timed_out = false;
    bool late = false;  // past its deadline, which the I/O thread has not seen yet
    {
        std::lock_guard lock(shared_.held.mutex);
        const auto r = shared_.held.running.find(run);
        if (r != shared_.held.running.end()) {
            timed_out = r->second.timed_out;
            late = !timed_out && (end >= r->second.deadline || elapsed >= Millis(task.timeout_ms));
            shared_.held.running.erase(r);
        }
    }
    if (!late) return timed_out;
    // The I/O thread looks at deadlines only when it runs (a paused process
    // resumes with both threads racing): a result that came after the
    // deadline is a timeout all the same, never `ok`.
    const auto ms = std::chrono::duration_cast<Millis>(elapsed).count();
    if (next_attempt(AttemptEnd::timed_out, {task.attempt, task.max_attempts}).again) {
        log_->warn("task.timeout id={} attempt={}/{} ms={} (finished late; retrying)", out.id, task.attempt,
                   task.max_attempts, ms);
        retry_later(std::move(out.id));
        return true;
    }
    log_->warn("task.timeout id={} ms={} (finished late)", out.id, ms);
    out.status = proto::Status::timeout;
    out.error = "timed out after " + std::to_string(task.timeout_ms) + " ms";
    out.result.clear();
    return false;
}

void Executor::keep(const proto::Task& task, const std::string& sink, proto::Outcome&& out) {
    if (out.status == proto::Status::error &&
        next_attempt(AttemptEnd::failed, {task.attempt, task.max_attempts, 0, task.retry_on_error}).again) {
        log_->info("task.error id={} attempt={}/{} error=\"{}\" (retrying)", out.id, task.attempt, task.max_attempts,
                   out.error);
        retry_later(std::move(out.id));
        return;
    }
    pending_bytes_ += out.result.size() + out.error.size() + out.id.size() + k_entry_overhead;
    if (task.detached) route_.standalone(sink);
    if (!last_sink_ || *last_sink_ != sink) {
        const auto it = pending_.try_emplace(sink).first;
        last_sink_ = &it->first;
        last_outcomes_ = &it->second;
    }
    last_outcomes_->push_back(std::move(out));
}

void Executor::announce_start(Clock::time_point start) {
    // The I/O thread grants this slot's next credit shortly before a long
    // task's expected end; every start is recorded, so that it also finds a
    // task that started before it knew. A task that followed another at once
    // was announced at that one's end, with the wake-up that reported it.
    if (slot_.started_ns.load(std::memory_order_relaxed) != 0) return;
    slot_.started_ns.store(ns_since_epoch(start), std::memory_order_release);
    if (shared_.signals.early_after_ns.load(std::memory_order_relaxed) != 0) wake_io();  // it sets its timer
}

void Executor::note_name(const std::string& name) {
    if (times_at_ < times_.size() && times_[times_at_].first == name) return;
    if (name != slot_name_) {  // for the I/O thread (RETURN): only when it changes
        slot_name_ = name;
        std::lock_guard lock(slot_.name_mutex);
        slot_.name = slot_name_;
    }
    times_at_ = 0;
    while (times_at_ < times_.size() && times_[times_at_].first != name) ++times_at_;
    if (times_at_ == times_.size()) times_.emplace_back(name, std::make_pair(0, 0));
}

void Executor::report(bool after_long) {
    const bool times_due = shared_.times.add(times_);
    times_.clear();
    for (auto& [endpoint, outcomes] : pending_) {
        if (outcomes.empty()) continue;
        const auto delivery = route_.deliver(endpoint, outcomes);
        if (delivery == ResultRoute::Delivery::aborted) return;
        if (delivery == ResultRoute::Delivery::undelivered) retry_later(outcomes);
        outcomes.clear();
    }
    auto& signals = shared_.signals;
    const auto n = static_cast<std::uint32_t>(pending_count_);
    pending_count_ = 0;
    pending_bytes_ = 0;
    signals.meter.add(n, std::exchange(busy_ns_, 0), std::exchange(longest_ns_, 0));
    // Counted, then the I/O thread woken only if it has something to do
    // now: credits to grant, or a RETRY to send.
    const bool due = signals.finished.fetch_add(n) + n >= signals.wake_after.load();
    // A slot going idle after a long task while the broker lacks start
    // credits wants one; after short tasks the broker sees the slot free at
    // their SETTLE, and a wake-up at every idle slot would cost many mostly
    // idle workers a thread switch a batch.
    const bool start_due = after_long && signals.starts_low.load(std::memory_order_relaxed);
    if (due || std::exchange(retried_, false) || times_due || start_due) wake_io();
}

void Executor::retry_later(const std::vector<proto::Outcome>& outcomes) {
    std::lock_guard lock(shared_.held.mutex);
    for (const auto& o : outcomes) shared_.held.retries.push_back(o.id);
    retried_ = true;
}

void Executor::retry_later(std::string&& id) {
    std::lock_guard lock(shared_.held.mutex);
    shared_.held.retries.push_back(std::move(id));
    retried_ = true;
}

}  // namespace drover
