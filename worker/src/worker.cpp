// Worker: broker connection, credits, executors and result delivery.
#include "drover/common/retry.hpp"
#include "internal/memory.hpp"
#include "internal/stall.hpp"
#include "worker_impl.hpp"

#include <algorithm>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include <unistd.h>

namespace drover {

namespace {

constexpr std::size_t k_result_batch = 1024;
constexpr auto k_batch_only_below = std::chrono::microseconds(1000);  // slower tasks report at once
constexpr Millis k_max_backoff{5000};
// Automatic prefetch: enough credits for about this much queued work per
// slot, measured from the tasks run so far (1 for tasks this long or longer),
// and at most k_max_prefetch per slot.
constexpr std::chrono::nanoseconds k_queued_work = std::chrono::milliseconds(2);
constexpr std::uint32_t k_max_prefetch = 1000;
// The mean task time is first taken over this many tasks, then again every
// k_sample tasks; and until many tasks were seen the prefetch is at most
// k_growth times their number (a slow start: a few quick first tasks, say
// errors, must not queue a thousand long ones here).
constexpr std::uint64_t k_first_sample = 4;
constexpr std::uint64_t k_sample = 16;
constexpr std::uint64_t k_growth = 4;
// A worker's I/O thread runs a lone task itself, every executor being
// idle, while the last sample's tasks all took less than this: tasks of
// about a microsecond, such as echo (what W2 runs), the time of the
// hand-off saved being of the order of 20 us.
constexpr std::chrono::nanoseconds k_inline_below{1000};
// Tasks queued here behind tasks that have all run this long go back to
// the broker (RETURN), to run on a free slot elsewhere: far past the 1 ms
// from which the broker sends a name only to free slots, and past a
// preempted task's wait on a busy machine.
constexpr std::chrono::nanoseconds k_give_back_after = std::chrono::milliseconds(200);
// The I/O thread's poll waits in whole milliseconds.
constexpr std::int64_t k_poll_granularity_ns = 1'000'000;

}  // namespace

WorkerImpl::WorkerImpl(zmq::context_t& ctx, const Registry& registry, WorkerOptions options, Logger log)
    : ctx_(ctx),
      registry_(registry),
      options_(std::move(options)),
      log_(std::move(log)),
      own_ctx_(options_.replace_on_timeout ? std::make_unique<zmq::context_t>() : nullptr),
      io_ctx_(own_ctx_ ? *own_ctx_ : ctx),
      timeout_sinks_(io_ctx_, /*linger_ms=*/5000, /*sndtimeo_ms=*/1000, /*hwm=*/1000) {
    timeout_sinks_.secure_with(options_.security.get());
    if (options_.host.empty()) options_.host = host_name();
    if (options_.id.empty()) options_.id = options_.host + ":" + std::to_string(::getpid());
    if (options_.pool == "solo") options_.concurrency = 1;
    options_.concurrency = std::max(1u, options_.concurrency);
    started_ns_ = std::make_unique<SlotStart[]>(options_.concurrency);
    slot_names_ = std::make_unique<SlotName[]>(options_.concurrency);
    early_granted_.assign(options_.concurrency, 0);
    done_endpoint_ = "inproc://drover-worker-done-" + random_hex(8);
}

WorkerImpl::~WorkerImpl() {
    {
        std::lock_guard lock(mutex_);
        closing_ = true;
    }
    wake_.notify_all();
    for (auto& t : executors_)
        if (t.joinable()) t.join();
}

void WorkerImpl::connect_to_broker() {
    broker_ = std::make_unique<zmq::socket_t>(io_ctx_, zmq::socket_type::dealer);
    broker_->set(zmq::sockopt::linger, 0);
    broker_->set(zmq::sockopt::maxmsgsize, options_.max_message_bytes);
    connect_client(*broker_, options_.security.get(), options_.broker);
    proto::Hello hello{options_.id,
                       options_.host,
                       static_cast<std::int64_t>(::getpid()),
                       options_.pool,
                       options_.concurrency,
                       registry_.names(),
                       options_.restarts,
                       static_cast<std::uint64_t>(options_.max_message_bytes),
                       outstanding_};
    (void)send_message(*broker_, proto::Command::hello, proto::encode(hello));
    last_from_broker_ = Clock::now();
    // The broker forgot our credits (early ones too); tasks still held from
    // an earlier registration keep their slots.
    promised_ = outstanding_;
    starts_out_ = 0;
    std::fill(early_granted_.begin(), early_granted_.end(), 0);
    {
        std::lock_guard lock(times_mutex_);  // a new broker knows no time: all are told again
        for (auto& [name, t] : times_) {
            if (t.due_ns == 0) t.due_ns = t.told_ns;
            t.told_ns = 0;
        }
        if (!times_.empty()) times_due_ = true;
    }
    (void)top_up_credits();
}

std::uint32_t WorkerImpl::target_credits() {
    const std::uint32_t slots = options_.concurrency;
    if (!options_.auto_prefetch) return slots + options_.prefetch;
    // The mean task time over the tasks run since the last sample.
    const auto ran = ran_.load(std::memory_order_acquire);  // busy_ns_ has at least these tasks' times
    const auto busy = busy_ns_.load(std::memory_order_relaxed);
    if (ran - sampled_ran_ >= (mean_task_ns_ == 0 ? k_first_sample : k_sample)) {
        mean_task_ns_ = std::max<std::uint64_t>(1, (busy - sampled_busy_ns_) / (ran - sampled_ran_));
        sampled_ran_ = ran;
        sampled_busy_ns_ = busy;
        window_longest_ns_ = longest_ns_.exchange(0, std::memory_order_relaxed);
    }
    if (mean_task_ns_ == 0) return slots + options_.prefetch;  // nothing measured yet
    const std::uint64_t wanted = k_queued_work.count() * slots / mean_task_ns_;
    // Not one task's worth of queued work a slot: credits just in time instead.
    const bool early = wanted == 0 && options_.prefetch <= 1;
    const auto mean = static_cast<std::int64_t>(mean_task_ns_);
    const auto lead = std::min<std::int64_t>(
        mean / 2, std::chrono::duration_cast<std::chrono::nanoseconds>(options_.early_credit_lead).count());
    early_after_ns_.store(early ? std::max<std::int64_t>(1, mean - lead) : 0, std::memory_order_relaxed);
    if (early) return slots;
    const std::uint64_t most = std::min(std::uint64_t{k_max_prefetch} * slots, k_growth * ran);
    return slots + static_cast<std::uint32_t>(std::max<std::uint64_t>(std::min(wanted, most), options_.prefetch));
}

std::uint32_t WorkerImpl::top_up_credits() {
    const auto target = target_credits();
    const auto prefetch = target - std::min(target, options_.concurrency);
    const std::uint32_t batch = std::max<std::uint32_t>(1, prefetch / 2);
    // With early credits every task's end is wanted at once: the next task,
    // already here, starts then, and its credit is timed from that start.
    // Waiting for the batch instead (an early credit out makes it 2) left
    // every other task to wait a round trip to the broker for its credit.
    const bool early = early_after_ns_.load(std::memory_order_relaxed) != 0;
    // A start credit for each free slot the broker holds none for: only
    // these take long tasks, so the credits grown on short ones (the
    // prefetch) never queue a long one here while a slot is idle elsewhere.
    // They are among the credits due, or one more each if none are.
    const std::uint32_t slots = options_.concurrency;
    const std::uint32_t free = slots - std::min(slots, outstanding_);
    const std::uint32_t starts = free > starts_out_ ? free - starts_out_ : 0;
    std::uint32_t credits = 0, wait = batch;
    if (target < promised_ + batch) wait = early ? 1 : promised_ + batch - target;
    else credits = target - promised_;
    send_ready(std::max(credits, starts), starts);
    return wait;
}

void WorkerImpl::send_ready(std::uint32_t credits, std::uint32_t starts) {
    proto::Ready ready{credits, starts, {}};
    if (times_due_.exchange(false, std::memory_order_acq_rel)) {
        std::lock_guard lock(times_mutex_);
        for (auto& [name, t] : times_) {
            if (t.due_ns == 0) continue;
            ready.run_ns.emplace_back(name, t.due_ns);
            t.told_ns = std::exchange(t.due_ns, 0);
        }
    }
    if (credits == 0 && ready.run_ns.empty()) return;
    promised_ += credits;
    starts_out_ += starts;
    starts_low_.store(starts_out_ < options_.concurrency, std::memory_order_relaxed);
    (void)send_message(*broker_, proto::Command::ready, proto::encode(ready));
}

bool WorkerImpl::add_name_times(const NameTimes& times) {
    bool due = false;
    std::lock_guard lock(times_mutex_);
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
    if (due) times_due_.store(true, std::memory_order_release);
    return due;
}

void WorkerImpl::count_finished() {
    const auto finished = finished_.exchange(0);
    outstanding_ -= std::min(outstanding_, finished);
    promised_ -= std::min(promised_, finished);
}

Clock::time_point WorkerImpl::give_back_queued(Clock::time_point now, bool stopping) {
    const std::uint32_t slots = options_.concurrency;
    if (stopping || outstanding_ <= slots) return Clock::time_point::max();  // nothing waits behind the slots
    std::int64_t latest = 0;
    for (unsigned i = 0; i < slots; ++i) {
        const auto started = started_ns_[i].ns.load(std::memory_order_acquire);
        // A slot is free (or about to start the next task, unannounced): look again later.
        if (started == 0) return now + k_give_back_after;
        latest = std::max(latest, started);
    }
    const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
    const auto due_ns = latest + k_give_back_after.count();
    if (due_ns > now_ns) return Clock::time_point(std::chrono::nanoseconds(due_ns));
    // Claimed here with the executors' own atomic step: a task is either
    // started by an executor or given back, never both.
    // Only tasks sent on plain credits go back: the broker took their name
    // for short. One sent on a start credit was sent for this slot (an
    // early credit: its task was expected to end about now), and stays.
    std::vector<proto::Task> back, kept;
    {
        std::lock_guard lock(mutex_);
        for (auto& b : queue_) {
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
            queue_.push_front(std::move(again));
        }
    }
    if (back.empty()) return Clock::time_point::max();
    // What runs, and for how long already: the broker sends these names only
    // to free slots from now on.
    proto::Ready ready{0, 0, {}};
    for (unsigned i = 0; i < slots; ++i) {
        std::string name;
        {
            std::lock_guard lock(slot_names_[i].mutex);
            name = slot_names_[i].name;
        }
        const auto started = started_ns_[i].ns.load(std::memory_order_acquire);
        if (name.empty() || started == 0 || started > now_ns) continue;  // it ended meanwhile
        const auto ran = static_cast<std::uint64_t>(now_ns - started);
        bool seen = false;
        for (const auto& [n, ns] : ready.run_ns) seen = seen || n == name;
        if (!seen) ready.run_ns.emplace_back(name, ran);
    }
    {
        std::lock_guard lock(times_mutex_);  // its real time is told once measured, being 4x off this
        for (const auto& [name, ns] : ready.run_ns) times_[name].told_ns = ns;
    }
    proto::Ids ids;
    ids.ids.reserve(back.size());
    for (const auto& t : back) ids.ids.push_back(t.id);
    if (!ready.run_ns.empty()) (void)send_message(*broker_, proto::Command::ready, proto::encode(ready));
    if (send_message(*broker_, proto::Command::give_back, proto::encode(ids)) != SendStatus::sent) {
        // Not given back after all: they run here.
        auto again = std::make_shared<Dispatched>();
        again->tasks = std::move(back);
        {
            std::lock_guard lock(mutex_);
            queue_.push_front(std::move(again));
        }
        wake_.notify_all();
        return Clock::time_point::max();
    }
    log_->info("task.returned n={} (queued behind tasks running {} ms and more on every slot)", back.size(),
               std::chrono::duration_cast<Millis>(k_give_back_after).count());
    const auto n = static_cast<std::uint32_t>(back.size());
    outstanding_ -= std::min(outstanding_, n);
    promised_ -= std::min(promised_, n);
    return Clock::time_point::max();
}

Clock::time_point WorkerImpl::grant_early_credits(Clock::time_point now, bool stopping) {
    const auto after = early_after_ns_.load(std::memory_order_relaxed);
    if (after == 0 || stopping) return Clock::time_point::max();
    const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
    auto next = Clock::time_point::max();
    std::uint32_t due = 0;
    for (unsigned i = 0; i < options_.concurrency; ++i) {
        const auto started = started_ns_[i].ns.load(std::memory_order_acquire);
        if (started == 0 || early_granted_[i] == started) continue;  // idle, or granted for this task
        // One credit out and unused is enough: a task is on its way or none is queued.
        if (promised_ + due > outstanding_) break;
        // Due within the poll's granularity counts as due (waiting for it
        // to pass made the credit up to 1 ms late, half the lead), but never
        // before half the mean task time, the lead's bound.
        const auto due_ns =
            started + std::max(after - k_poll_granularity_ns, static_cast<std::int64_t>(mean_task_ns_ / 2));
        if (due_ns <= now_ns) {
            early_granted_[i] = started;
            ++due;
        } else {
            next = std::min(next, Clock::time_point(std::chrono::nanoseconds(due_ns)));
        }
    }
    if (due > 0) send_ready(due, due);  // each for a slot about to free: start credits
    return next;
}

void WorkerImpl::send_retries() {
    std::vector<std::string> ids;
    {
        std::lock_guard lock(mutex_);
        ids.swap(retries_);
    }
    if (ids.empty()) return;
    log_->debug("task.retry n={}", ids.size());
    (void)send_message(*broker_, proto::Command::retry, proto::encode(proto::Ids{std::move(ids)}));
}

void WorkerImpl::forward_results(std::string_view body) {
    if (send_message(*broker_, proto::Command::result, body) == SendStatus::sent) return;
    // The broker connection is full or down: run these tasks again later.
    auto m = proto::decode_results(body);
    if (!m) return;
    log_->warn("worker.forward_failed results={} (retrying them)", m->results.size());
    std::lock_guard lock(mutex_);
    for (auto& o : m->results) retries_.push_back(std::move(o.id));
}

Clock::time_point WorkerImpl::report_timeouts(Clock::time_point now) {
    auto next = Clock::time_point::max();
    std::unordered_map<std::string, std::vector<proto::Outcome>> outcomes;
    {
        std::lock_guard lock(mutex_);
        for (auto& [run, r] : running_) {
            const std::string& id = r.task.id;
            if (r.timed_out) continue;
            if (r.deadline > now) {
                next = std::min(next, r.deadline);
                continue;
            }
            r.timed_out = true;
            replace_ = options_.replace_on_timeout;
            if (next_attempt(AttemptEnd::timed_out, {r.task.attempt, r.task.max_attempts}).again) {
                log_->warn("task.timeout id={} attempt={}/{} (retrying)", id, r.task.attempt, r.task.max_attempts);
                retries_.push_back(id);
                continue;
            }
            if (replace_) timed_out_.push_back(id);
            proto::Outcome o;
            o.id = id;
            o.task = r.task.name;
            o.status = proto::Status::timeout;
            o.error = "timed out after " + std::to_string(r.task.timeout_ms) + " ms";
            o.attempt = r.task.attempt;
            o.token = r.task.token;
            o.worker = options_.id;
            o.elapsed_us = std::uint64_t{r.task.timeout_ms} * 1000;
            outcomes[r.task.reply_to].push_back(std::move(o));
        }
    }
    for (auto& [endpoint, list] : outcomes) {
        log_->warn("task.timeout n={} sink={}", list.size(), endpoint);
        try {
            auto body = proto::encode_message(list.data(), list.size());
            if (send_message_blocking(timeout_sinks_.get(endpoint), proto::Command::result, body) != SendStatus::sent)
                log_->warn("worker.sink_full endpoint={} dropped_timeouts={}", endpoint, list.size());
        } catch (const zmq::error_t& e) {
            log_->warn("worker.sink_unusable endpoint={} error=\"{}\"", endpoint, e.what());
        }
    }
    send_retries();
    return next;
}

Worker::Stopped WorkerImpl::leave_to_be_replaced() {
    log_->warn("worker.replace timed_out={} (the task runs on: this process ends and its supervisor starts a new one)",
               timed_out_.size());
    // The broker requeues what else we hold, and waits for the sinks to settle timed_out_.
    (void)send_message(*broker_, proto::Command::bye, proto::encode(proto::Ids{timed_out_}));
    broker_->set(zmq::sockopt::linger, 2000);
    broker_.reset();
    timeout_sinks_.clear();
    inline_sinks_.reset();  // every socket of the context closed, or close() would wait for ever
    own_ctx_->close();      // returns once the messages above have left (or the linger ran out)
    abort_ = true;
    return Stopped::replaced;
}

Worker::Stopped WorkerImpl::run(const StopSource& stop) {
    zmq::socket_t done(ctx_, zmq::socket_type::pull);
    done.bind(done_endpoint_);
    for (unsigned i = 0; i < options_.concurrency; ++i) executors_.emplace_back([this, i] { executor_loop(i); });
    connect_to_broker();
    log_->info("worker.started id={} broker={} pool={} slots={} prefetch={} tasks={}", options_.id, options_.broker,
               options_.pool, options_.concurrency, options_.prefetch, registry_.names().size());

    const auto window = options_.heartbeat * options_.liveness;
    auto next_heartbeat = Clock::now() + options_.heartbeat;
    Millis backoff = options_.heartbeat;
    StallMeter stall_meter(options_.heartbeat);
    bool stopping = false;
    std::vector<zmq::message_t> frames;
    Poller poller;
    constexpr std::size_t k_broker = 0, k_done = 1;
    while (true) {
        if (stop.requests() >= 2) {
            abort_ = true;
            log_->warn("worker.stop_at_once outstanding={}", outstanding_);
            return Stopped::at_once;
        }
        if (stop.stop_requested() && !stopping) {
            stopping = true;
            log_->info("worker.stopping outstanding={} (finishing held tasks; signal again to stop at once)",
                       outstanding_);
        }
        count_finished();
        // It sends RETRY too (the executors' and its own), before the credits,
        // so that the broker frees those first.
        const auto next_deadline = report_timeouts(Clock::now());
        if (replace_) return leave_to_be_replaced();
        const std::uint32_t wake_after = stopping ? 1 : top_up_credits();
        if (stopping && outstanding_ == 0) break;
        // Then a finished task is counted at once, or it is seen here (the
        // executors add to finished_ before they read wake_after_).
        wake_after_.store(wake_after);
        const bool counted_late = finished_.load() >= wake_after;

        poller.watch(k_broker, *broker_, Poller::Use::send_and_receive);
        poller.watch(k_done, done, Poller::Use::receive_only);
        if (stop.stop_requested()) poller.limit(2);  // its fd stays readable: watched, it would end every wait at once
        else poller.watch(2, stop.fd());
        const auto next_early = grant_early_credits(Clock::now(), stopping);
        const auto next_give_back = give_back_queued(Clock::now(), stopping);
        auto wait = std::chrono::duration_cast<Millis>(
                        std::min({next_heartbeat, next_deadline, next_early, next_give_back}) - Clock::now()) +
                    Millis(1);
        wait = counted_late ? Millis(0) : std::max(wait, Millis(0));
        stall_meter.will_wait(wait);
        poller.wait(wait);

        if (poller.ready(k_done)) {
            // Wake-ups (counts are in finished_), and [tag][RESULT body]:
            // results for a sink the executor cannot reach.
            zmq::message_t m;
            while (true) {
                if (!done.recv(m, zmq::recv_flags::dontwait)) {
                    poller.drained(k_done);
                    break;
                }
                if (!m.more()) continue;
                zmq::message_t body;
                if (!done.recv(body, zmq::recv_flags::dontwait)) break;
                forward_results(proto::view(body));
            }
        }
        if (poller.ready(k_broker)) {
            for (DrainBudget budget(1024); budget.more();) {
                frames.clear();
                if (!zmq::recv_multipart(*broker_, std::back_inserter(frames), zmq::recv_flags::dontwait)) break;
                last_from_broker_ = Clock::now();
                if (frames.empty() || frames.size() > 2) continue;
                auto cmd = proto::parse_header(frames[0]);
                if (!cmd) {
                    log_->warn("worker.dropped reason={}", proto::decode_error_name(cmd.error()));
                    continue;
                }
                const std::string_view body = frames.size() == 2 ? proto::view(frames[1]) : std::string_view{};
                switch (*cmd) {
                    case proto::Command::dispatch: {
                        std::string_view batch_reply_to;
                        auto m = proto::decode_tasks(body, batch_reply_to);
                        if (!m) {
                            // Its tasks took credits at the broker that no task here will give
                            // back: registering again has the broker requeue what it holds for
                            // us (tasks running here may then run twice) and restart our credits.
                            log_->warn("worker.dropped reason={} (an unreadable DISPATCH: registering again)",
                                       proto::decode_error_name(m.error()));
                            connect_to_broker();
                            break;
                        }
                        const auto n = m->tasks.size();
                        if (n == 0) break;
                        std::uint32_t on_starts = 0;
                        for (const auto& t : m->tasks) on_starts += t.start;
                        if (on_starts > 0) {
                            starts_out_ -= std::min(starts_out_, on_starts);
                            starts_low_.store(starts_out_ < options_.concurrency, std::memory_order_relaxed);
                        }
                        if (n == 1 && run_inline(m->tasks[0], batch_reply_to)) break;
                        outstanding_ += static_cast<std::uint32_t>(n);
                        auto dispatched = std::make_shared<Dispatched>();
                        dispatched->reply_to = batch_reply_to;
                        dispatched->tasks = std::move(m->tasks);
                        {
                            std::lock_guard lock(mutex_);
                            queue_.push_back(std::move(dispatched));
                        }
                        if (n == 1) wake_.notify_one();
                        else wake_.notify_all();
                        break;
                    }
                    case proto::Command::heartbeat: break;
                    case proto::Command::reset:
                        log_->info("worker.reset (the broker does not know us): registering again");
                        connect_to_broker();
                        break;
                    case proto::Command::bye:
                        log_->info("worker.broker_bye (broker stopping): will reconnect");
                        // Let the liveness check reconnect once the broker is back.
                        last_from_broker_ = Clock::now() - window;
                        break;
                    default: log_->warn("worker.dropped reason=unexpected command={}", proto::command_name(*cmd));
                }
            }
        }
        const auto now = Clock::now();
        if (const auto stall = stall_meter.check(now); stall != Clock::duration::zero()) {
            // This process was stopped: the broker's silence meanwhile is not the broker's.
            last_from_broker_ = StallMeter::shifted(last_from_broker_, stall, now);
            log_->warn("worker.stalled ms={} (this process did not run: the broker is given its liveness window again)",
                       std::chrono::duration_cast<Millis>(stall).count());
        }
        if (now >= next_heartbeat) {
            count_finished();
            (void)send_message(*broker_, proto::Command::heartbeat, proto::encode_worker_heartbeat(outstanding_));
            next_heartbeat = now + options_.heartbeat;
            // Idle for a whole heartbeat after work: give the heap back
            // (tune_allocator keeps it otherwise). Not at every idle tick: one
            // worker among hundreds is idle between most of its batches, and a
            // trim costs madvise calls (TLB shoot-downs on every core), then
            // page faults to take the memory back; trimming at each tick made
            // 200 workers spend a quarter of the machine on it (W5).
            const auto ran = ran_.load(std::memory_order_relaxed);
            if (outstanding_ == 0 && ran == ran_at_tick_ && ran != ran_at_trim_) {
                ran_at_trim_ = ran;
                trim_heap(/*min_free=*/1 << 20);
            }
            ran_at_tick_ = ran;
            if (now - last_from_broker_ > window) {
                log_->warn(
                    "worker.broker_silent broker={} ms={} reconnecting backoff_ms={} (is the broker running and "
                    "reachable at that address, its --backend, and, if it runs with --security, does this "
                    "worker have the fleet's keys and is its key on the broker's allow-list?)",
                    options_.broker, std::chrono::duration_cast<Millis>(now - last_from_broker_).count(),
                    backoff.count());
                connect_to_broker();
                next_heartbeat = now + backoff;
                backoff = std::min(backoff * 2, k_max_backoff);
            } else {
                backoff = options_.heartbeat;
            }
        }
    }
    (void)send_message(*broker_, proto::Command::bye);
    broker_->set(zmq::sockopt::linger, 1000);  // let BYE leave before the socket closes
    log_->info("worker.stopped id={}", options_.id);
    {
        std::lock_guard lock(mutex_);
        closing_ = true;
    }
    wake_.notify_all();
    for (auto& t : executors_) t.join();
    executors_.clear();
    return Stopped::gracefully;
}

Clock::time_point WorkerImpl::run_one(proto::Task& task, proto::Outcome& out, Clock::time_point start, bool on_io) {
    try {
        out.result = registry_.run(task.name, task.args);
        out.status = proto::Status::ok;
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
    const std::size_t max_result = payload_limit(options_.max_message_bytes);
    if (out.result.size() > max_result) {
        out.status = proto::Status::error;
        out.error = "result too large: " + std::to_string(out.result.size()) + " bytes, where at most " +
                    std::to_string(max_result) + " fit (the worker's --max-message-bytes " +
                    std::to_string(options_.max_message_bytes) + ", less " + std::to_string(k_message_fields) +
                    " for the message's own fields)";
        out.result.clear();
    }
    out.elapsed_us =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(end - start).count());
    log_->debug("task.done id={} task={} status={} us={} on={}", out.id, out.task, proto::status_name(out.status),
                out.elapsed_us, on_io ? "io" : "executor");
    return end;
}

void WorkerImpl::count_runs(std::uint32_t n, std::uint64_t busy_ns, std::uint64_t longest_ns) {
    auto seen = longest_ns_.load(std::memory_order_relaxed);
    while (longest_ns > seen && !longest_ns_.compare_exchange_weak(seen, longest_ns, std::memory_order_relaxed)) {}
    busy_ns_.fetch_add(busy_ns, std::memory_order_relaxed);
    ran_.fetch_add(n, std::memory_order_release);  // after busy_ns_: see target_credits()
}

bool WorkerImpl::run_inline(proto::Task& task, std::string_view batch_reply_to) {
    // Quick tasks only, by the longest of the last sample's: one that ran
    // past the liveness window here would keep this thread from its
    // heartbeats, and the broker would take the worker for dead meanwhile.
    if (!options_.auto_prefetch || mean_task_ns_ == 0 ||
        window_longest_ns_ >= static_cast<std::uint64_t>(k_inline_below.count()))  // ns, as window_longest_ns_
        return false;
    // The outcome's other paths (a deadline, a retry after an error, a
    // standalone sink) stay with the executor.
    if (task.timeout_ms > 0 || task.retry_on_error || task.detached) return false;
    {
        std::lock_guard lock(mutex_);  // every executor idle, and no task waiting for one
        if (idle_executors_ < options_.concurrency || !queue_.empty() || closing_) return false;
    }
    // A copy: the task keeps its own reply_to if it goes to the executor after all.
    const std::string sink = task.reply_to.empty() ? std::string(batch_reply_to) : task.reply_to;
    {
        std::lock_guard lock(reach_mutex_);  // a sink its executor has reached directly
        const auto it = reach_.find(sink);
        if (it == reach_.end() || !it->second.reached || it->second.via_broker) return false;
    }
    proto::Outcome out;
    out.attempt = task.attempt;
    out.token = task.token;
    out.worker = options_.concurrency > 1 ? options_.id + "/io" : options_.id;
    const auto start = Clock::now();
    std::string name = task.name;  // run_one moves it out
    const auto end = run_one(task, out, start, /*on_io=*/true);
    const auto ns =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
    count_runs(1, ns, ns);
    (void)add_name_times(NameTimes{{std::move(name), {1, ns}}});
    promised_ -= std::min(promised_, 1u);  // its credit is free again, as at an executor's report
    auto body = proto::encode_message(&out, 1);
    bool sent = false;
    try {
        if (!inline_sinks_) {
            inline_sinks_ = std::make_unique<SinkSockets>(io_ctx_, /*linger_ms=*/5000, /*sndtimeo_ms=*/0, /*hwm=*/1000);
            inline_sinks_->secure_with(options_.security.get());
        }
        sent = send_message(inline_sinks_->get(sink), proto::Command::result, body) == SendStatus::sent;
    } catch (const zmq::error_t& e) {
        log_->warn("worker.sink_unusable endpoint={} error=\"{}\" (result through the broker)", sink, e.what());
    }
    if (!sent) forward_results(proto::view(body));  // full or unusable: the broker passes it on
    return true;
}

void WorkerImpl::executor_loop(unsigned index) {
    zmq::socket_t done(ctx_, zmq::socket_type::push);
    done.connect(done_endpoint_);
    SinkSockets sinks(ctx_, /*linger_ms=*/5000, /*sndtimeo_ms=*/200,
                      /*hwm=*/16,  // batches of <= 1 MiB: at most 16 MiB waiting per executor
                      /*capacity=*/256, /*immediate=*/true);  // until a sink is proven reachable
    sinks.secure_with(options_.security.get());
    const auto window = options_.heartbeat * options_.liveness;
    auto send_via_broker = [&](zmq::message_t& body) {  // to the I/O thread, which owns the broker socket
        done.send(zmq::message_t(1), zmq::send_flags::sndmore);
        done.send(body, zmq::send_flags::none);
    };
    std::unordered_map<std::string, std::vector<proto::Outcome>> pending;  // by sink
    // Sinks of detached tasks: standalone sinks given by address, which the
    // broker cannot stand in for, so their results never go through it.
    std::unordered_set<std::string> standalone;
    std::size_t pending_count = 0;  // tasks run since the last report
    std::size_t pending_bytes = 0;
    std::uint64_t busy_local = 0;     // their run time, ns
    std::uint64_t longest_local = 0;  // the longest of them, ns
    NameTimes times_local;            // their count and time by name
    std::size_t times_at = 0;         // times_local's entry of the last task's name
    std::string slot_name;            // the last task's name
    const std::size_t batch_bytes = batch_byte_limit(options_.max_message_bytes);
    const std::string worker_name = options_.concurrency > 1 ? options_.id + "/" + std::to_string(index) : options_.id;

    // Outcomes their sink would not take: the broker runs the tasks again
    // later (or ends them as lost once their attempts are spent).
    bool retried = false;  // since the last flush: the I/O thread has a RETRY to send
    auto retry_later = [&](const std::vector<proto::Outcome>& outcomes) {
        std::lock_guard lock(mutex_);
        for (const auto& o : outcomes) retries_.push_back(o.id);
        retried = true;
    };

    // after_long: the last task ran long and this slot goes idle after it.
    auto flush = [&](bool after_long) {
        const bool times_due = add_name_times(times_local);
        times_local.clear();
        for (auto& [endpoint, outcomes] : pending) {
            if (outcomes.empty()) continue;
            // Sent as it is (big results are not copied again), and kept
            // until it is: it may be tried more than once.
            auto body = proto::encode_message(outcomes.data(), outcomes.size());
            // Reads or updates what the executors know of this sink.
            const auto reach = [&](auto&& fn) {
                std::lock_guard lock(reach_mutex_);
                if (reach_.size() > 4096) reach_.clear();  // forgotten sinks are proved again
                return fn(reach_[endpoint]);
            };
            try {
                auto& s = sinks.get(endpoint);
                const bool may_reroute = standalone.count(endpoint) == 0;
                // One look at the shared state per batch once a sink is reached.
                const SinkReach known = reach([](SinkReach& r) {
                    if (!r.reached && r.first_try == Clock::time_point{}) r.first_try = Clock::now();
                    return r;
                });
                if (may_reroute && known.via_broker) {
                    // Tried directly at every batch; through the broker while that fails.
                    if (send_message(s, proto::Command::result, body) == SendStatus::sent) {
                        sinks.proven(endpoint);
                        if (reach([](SinkReach& r) { return std::exchange(r.via_broker, false); }))
                            log_->info("worker.sink_reachable endpoint={} (results go to it directly again)", endpoint);
                    } else {
                        send_via_broker(body);
                    }
                    outcomes.clear();
                    continue;
                }
                // Waits while the sink is full (back-pressure), but not for ever:
                // a sink gone for good would hold this slot until the worker dies.
                const auto give_up = Clock::now() + window * 10;
                bool sent;
                while (!(sent = send_message_blocking(s, proto::Command::result, body) == SendStatus::sent)) {
                    if (abort_) return;
                    // Never reached in a liveness window: through the broker.
                    const auto now = Clock::now();
                    const int verdict = !may_reroute ? 0 : reach([&](SinkReach& r) {
                        if (r.via_broker) return 1;
                        if (r.reached || now - r.first_try <= window) return 0;
                        r.via_broker = true;
                        return 2;
                    });
                    if (verdict == 2)
                        log_->warn(
                            "worker.sink_unreachable endpoint={} (no connection in {} ms: results go through "
                            "the broker; the producer should advertise an address this host reaches, "
                            "--sink-advertise)",
                            endpoint, std::chrono::duration_cast<Millis>(window).count());
                    if (verdict != 0) {
                        send_via_broker(body);
                        break;
                    }
                    if (now > give_up) {
                        log_->warn("worker.sink_stalled endpoint={} retrying={}", endpoint, outcomes.size());
                        retry_later(outcomes);
                        break;
                    }
                }
                if (sent) {
                    sinks.proven(endpoint);
                    if (!known.reached) reach([](SinkReach& r) { return r.reached = true; });
                }
            } catch (const zmq::error_t& e) {
                log_->warn("worker.sink_unusable endpoint={} error=\"{}\" retrying={}", endpoint, e.what(),
                           outcomes.size());
                retry_later(outcomes);
            }
            outcomes.clear();
        }
        const auto n = static_cast<std::uint32_t>(pending_count);
        pending_count = 0;
        pending_bytes = 0;
        count_runs(n, std::exchange(busy_local, 0), std::exchange(longest_local, 0));
        // Counted, then the I/O thread woken only if it has something to do
        // now: credits to grant, or a RETRY to send.
        const bool due = finished_.fetch_add(n) + n >= wake_after_.load();
        // A slot going idle after a long task while the broker lacks start
        // credits: it wants one (after short tasks the broker sees the slot
        // free at their SETTLE, and a wake-up at every idle slot would cost
        // each of many mostly idle workers a thread switch a batch).
        const bool start_due = after_long && starts_low_.load(std::memory_order_relaxed);
        if (due || std::exchange(retried, false) || times_due || start_due)
            done.send(zmq::message_t(), zmq::send_flags::none);
    };

    // The batch this executor claims its tasks from. A task's timeout starts
    // when it starts, not when claimed.
    std::shared_ptr<Dispatched> batch;
    const auto pop_spent = [&] {  // with mutex_ held
        while (!queue_.empty() && queue_.front()->spent()) queue_.pop_front();
    };
    // The next task, without waiting: nullptr when none is left unclaimed.
    const auto take = [&]() -> proto::Task* {
        while (true) {
            if (batch) {
                const auto i = batch->next.fetch_add(1, std::memory_order_relaxed);
                if (i < batch->tasks.size()) return &batch->tasks[i];
                batch.reset();
            }
            std::lock_guard lock(mutex_);
            pop_spent();
            if (queue_.empty()) return nullptr;
            batch = queue_.front();
        }
    };
    // Whether a task is left unclaimed; when this batch is spent, the next
    // one is taken here, so that take() then needs no lock of its own.
    const auto more_queued = [&] {
        if (batch && !batch->spent()) return true;
        std::lock_guard lock(mutex_);
        pop_spent();
        batch = queue_.empty() ? nullptr : queue_.front();
        return batch != nullptr;
    };
    Clock::time_point carried{};  // the end of the last task, if the next follows it at once (else zero)
    // The outcomes of the last sink used, most tasks of a run going to one.
    const std::string* last_sink = nullptr;
    std::vector<proto::Outcome>* last_outcomes = nullptr;
    while (true) {
        proto::Task* next = take();
        if (!next) {
            carried = {};
            // Not busy after all (another executor took the task announced
            // below): no early credit for this slot while it reports or
            // waits, and the task it takes next is stamped when it starts.
            started_ns_[index].ns.store(0, std::memory_order_release);
            // Another executor took the last task: report ours before sleeping.
            if (pending_count > 0) flush(false);
            std::unique_lock lock(mutex_);
            pop_spent();
            ++idle_executors_;
            wake_.wait(lock, [&] { return !queue_.empty() || closing_ || abort_; });
            --idle_executors_;
            if (abort_ || queue_.empty()) break;  // closing and drained
            continue;
        }
        if (abort_) break;
        proto::Task& task = *next;
        const std::string& sink = task.reply_to.empty() ? batch->reply_to : task.reply_to;
        // A sink other than the last one's is connected to before the task
        // runs, so that its result does not wait for the connection (a new
        // producer's first result from each worker waited 2-4 ms for it).
        if (!last_sink || *last_sink != sink) {
            try {
                (void)sinks.get(sink);
            } catch (const zmq::error_t&) {
                // reported when the result is sent
            }
        }
        std::uint64_t run = 0;  // in running_, with a timeout
        if (task.timeout_ms > 0) {
            {
                std::lock_guard lock(mutex_);
                run = ++runs_;
                auto& r = running_[run] = Running{Clock::now() + Millis(task.timeout_ms), task, false};
                r.task.reply_to = sink;
            }
            // Wake the I/O thread so that it waits for this deadline.
            done.send(zmq::message_t(), zmq::send_flags::none);
        }
        proto::Outcome out;
        out.attempt = task.attempt;
        out.token = task.token;
        out.worker = worker_name;
        // A task that follows the last one at once starts when it ended: one
        // clock read a task instead of two (kvm-clock reads cost tens of ns).
        const auto start = carried != Clock::time_point{} && task.timeout_ms == 0 ? carried : Clock::now();
        // The I/O thread grants this slot's next credit shortly before the
        // task's expected end, with tasks known to be long; recorded for every
        // task, so that it also finds one that started before it knew. A task
        // that followed another at once was announced at that one's end, with
        // the wake-up that reported it: one wake-up a task, not two.
        if (started_ns_[index].ns.load(std::memory_order_relaxed) == 0) {
            started_ns_[index].ns.store(
                std::chrono::duration_cast<std::chrono::nanoseconds>(start.time_since_epoch()).count(),
                std::memory_order_release);
            if (early_after_ns_.load(std::memory_order_relaxed) != 0)
                done.send(zmq::message_t(), zmq::send_flags::none);  // it sets its timer
        }
        if (times_at >= times_local.size() || times_local[times_at].first != task.name) {
            if (task.name != slot_name) {  // for the I/O thread (RETURN): only when it changes
                slot_name = task.name;
                std::lock_guard lock(slot_names_[index].mutex);
                slot_names_[index].name = slot_name;
            }
            times_at = 0;
            while (times_at < times_local.size() && times_local[times_at].first != task.name) ++times_at;
            if (times_at == times_local.size()) times_local.emplace_back(task.name, std::make_pair(0, 0));
        }
        const auto end = run_one(task, out, start, /*on_io=*/false);
        const auto elapsed = end - start;
        started_ns_[index].ns.store(0, std::memory_order_release);
        const auto elapsed_ns =
            static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count());
        busy_local += elapsed_ns;
        longest_local = std::max(longest_local, elapsed_ns);
        ++times_local[times_at].second.first;
        times_local[times_at].second.second += elapsed_ns;
        bool timed_out = false;
        bool late = false;  // past its deadline, which the I/O thread has not seen yet
        if (task.timeout_ms > 0) {
            std::lock_guard lock(mutex_);
            auto r = running_.find(run);
            if (r != running_.end()) {
                timed_out = r->second.timed_out;
                late = !timed_out && (end >= r->second.deadline || elapsed >= Millis(task.timeout_ms));
                running_.erase(r);
            }
        }
        if (late) {
            // The I/O thread looks at deadlines only when it runs (a paused
            // process resumes with both threads racing): a result that came
            // after the deadline is a timeout all the same, never `ok`, as
            // the I/O thread would have said.
            if (next_attempt(AttemptEnd::timed_out, {task.attempt, task.max_attempts}).again) {
                log_->warn("task.timeout id={} attempt={}/{} ms={} (finished late; retrying)", out.id, task.attempt,
                           task.max_attempts, std::chrono::duration_cast<Millis>(elapsed).count());
                std::lock_guard lock(mutex_);
                retries_.push_back(std::move(out.id));
                retried = true;
                timed_out = true;
            } else {
                log_->warn("task.timeout id={} ms={} (finished late)", out.id,
                           std::chrono::duration_cast<Millis>(elapsed).count());
                out.status = proto::Status::timeout;
                out.error = "timed out after " + std::to_string(task.timeout_ms) + " ms";
                out.result.clear();
            }
        }
        if (timed_out) {
            // `timeout` was reported, or a RETRY sent: this late result goes nowhere.
        } else if (out.status == proto::Status::error &&
                   next_attempt(AttemptEnd::failed, {task.attempt, task.max_attempts, 0, task.retry_on_error}).again) {
            log_->info("task.error id={} attempt={}/{} error=\"{}\" (retrying)", out.id, task.attempt,
                       task.max_attempts, out.error);
            std::lock_guard lock(mutex_);
            retries_.push_back(std::move(out.id));
            retried = true;
        } else {
            pending_bytes += out.result.size() + out.error.size() + out.id.size() + k_entry_overhead;
            if (task.detached && standalone.size() < 4096) standalone.insert(sink);
            if (!last_sink || *last_sink != sink) {
                const auto it = pending.try_emplace(sink).first;
                last_sink = &it->first;
                last_outcomes = &it->second;
            }
            last_outcomes->push_back(std::move(out));
        }
        ++pending_count;
        // A batch leaves when it is full or when there is nothing else to do.
        // (`task` and `sink` are not used past here: their batch may go.)
        const bool idle = !more_queued();
        // The next task starts now (announced before the report below wakes
        // the I/O thread, which then sets its early-credit timer for it).
        if (!idle)
            started_ns_[index].ns.store(
                std::chrono::duration_cast<std::chrono::nanoseconds>(end.time_since_epoch()).count(),
                std::memory_order_release);
        if (idle || pending_count >= k_result_batch || pending_bytes >= batch_bytes || elapsed >= k_batch_only_below) {
            flush(idle && elapsed >= k_batch_only_below);
            carried = {};
        } else {
            carried = end;  // reset if, when the next is taken, none is left
        }
    }
    if (pending_count > 0 && !abort_) flush(false);
}

Worker::Worker(zmq::context_t& ctx, const Registry& registry, WorkerOptions options, Logger log)
    : impl_(std::make_unique<WorkerImpl>(ctx, registry, std::move(options), std::move(log))) {}
Worker::~Worker() = default;
Worker::Stopped Worker::run(const StopSource& stop) { return impl_->run(stop); }
const std::string& Worker::id() const { return impl_->id(); }

}  // namespace drover
