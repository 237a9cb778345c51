// The worker's supervisor: run(), the broker connection, heartbeats, deadlines and stopping (worker_impl.hpp).
#include <algorithm>
#include <utility>

#include <unistd.h>

#include "drover/common/retry.hpp"
#include "executor.hpp"
#include "internal/memory.hpp"
#include "worker_impl.hpp"

namespace drover {

namespace {

constexpr Millis k_max_backoff{5000};
constexpr std::size_t k_broker = 0, k_executors = 1, k_stop = 2;  // the poller's items

WorkerOptions settled(WorkerOptions options) {
    if (options.host.empty()) options.host = host_name();
    if (options.id.empty()) options.id = options.host + ":" + std::to_string(::getpid());
    if (options.pool == "solo") options.concurrency = 1;
    options.concurrency = std::max(1u, options.concurrency);
    return options;
}

CreditSettings credit_settings(const WorkerOptions& options) {
    return {options.concurrency, options.prefetch, options.auto_prefetch,
            std::chrono::duration_cast<std::chrono::nanoseconds>(options.early_credit_lead)};
}

}  // namespace

WorkerImpl::IoState::IoState(zmq::context_t& io_ctx, const WorkerOptions& options)
    : timeout_sinks(io_ctx, /*linger_ms=*/5000, /*sndtimeo_ms=*/1000, /*hwm=*/1000), credits(credit_settings(options)) {
    timeout_sinks.secure_with(options.security.get());
}

WorkerImpl::WorkerImpl(zmq::context_t& ctx, const Registry& registry, WorkerOptions options, Logger log)
    : ctx_(ctx),
      registry_(registry),
      options_(settled(std::move(options))),
      log_(std::move(log)),
      window_(options_.heartbeat * options_.liveness),
      io_endpoint_("inproc://drover-worker-done-" + random_hex(8)),
      own_ctx_(options_.replace_on_timeout ? std::make_unique<zmq::context_t>() : nullptr),
      io_ctx_(own_ctx_ ? *own_ctx_ : ctx),
      shared_(options_.concurrency, window_),
      io_(io_ctx_, options_) {}

WorkerImpl::~WorkerImpl() {
    {
        std::lock_guard lock(shared_.held.mutex);
        shared_.held.closing = true;
    }
    shared_.held.wake.notify_all();
    for (auto& t : io_.executors)
        if (t.joinable()) t.join();
}

Worker::Stopped WorkerImpl::run(const StopSource& stop) {
    zmq::socket_t from_executors(ctx_, zmq::socket_type::pull);
    from_executors.bind(io_endpoint_);
    for (unsigned i = 0; i < options_.concurrency; ++i)
        io_.executors.emplace_back(
            [this, i] { Executor(shared_, options_, registry_, log_, ctx_, io_endpoint_, i).run(); });
    connect_to_broker();
    log_->info("worker.started id={} broker={} pool={} slots={} prefetch={} tasks={}", options_.id, options_.broker,
               options_.pool, options_.concurrency, options_.prefetch, registry_.names().size());
    io_.next_heartbeat = Clock::now() + options_.heartbeat;
    io_.backoff = options_.heartbeat;
    StallMeter stall_meter(options_.heartbeat);
    Poller poller;
    while (true) {
        if (stop.requests() >= 2) {
            shared_.signals.abort = true;
            log_->warn("worker.stop_at_once outstanding={}", io_.credits.outstanding());
            return Stopped::at_once;
        }
        if (stop.stop_requested() && !io_.stopping) {
            io_.stopping = true;
            log_->info("worker.stopping outstanding={} (finishing held tasks; signal again to stop at once)",
                       io_.credits.outstanding());
        }
        count_finished();
        // It sends RETRY too (the executors' and its own), before the credits,
        // so that the broker frees those first.
        const auto next_deadline = report_timeouts(Clock::now());
        if (io_.replace) return leave_to_be_replaced();
        const std::uint32_t wake_after = io_.stopping ? 1 : top_up_credits();
        if (io_.stopping && io_.credits.outstanding() == 0) break;
        // Then a finished task is counted at once, or it is seen here (the
        // executors add to `finished` before they read `wake_after`).
        shared_.signals.wake_after.store(wake_after);
        const bool counted_late = shared_.signals.finished.load() >= wake_after;
        wait_for_events(poller, from_executors, stop, next_deadline, counted_late, stall_meter);
        if (poller.ready(k_executors)) drain_executors(from_executors, poller);
        if (poller.ready(k_broker)) drain_broker();
        const auto now = Clock::now();
        if (const auto stall = stall_meter.check(now); stall != Clock::duration::zero()) {
            // This process was stopped: the broker's silence meanwhile is not the broker's.
            io_.last_from_broker = StallMeter::shifted(io_.last_from_broker, stall, now);
            log_->warn("worker.stalled ms={} (this process did not run: the broker is given its liveness window again)",
                       std::chrono::duration_cast<Millis>(stall).count());
        }
        if (now >= io_.next_heartbeat) on_heartbeat(now);
    }
    return stop_gracefully();
}

void WorkerImpl::wait_for_events(Poller& poller, zmq::socket_t& from_executors, const StopSource& stop,
                                 Clock::time_point next_deadline, bool counted_late, StallMeter& stall_meter) {
    poller.watch(k_broker, *io_.broker, Poller::Use::send_and_receive);
    poller.watch(k_executors, from_executors, Poller::Use::receive_only);
    if (stop.stop_requested()) poller.limit(k_stop);  // its fd stays readable: watched, it would end every wait at once
    else poller.watch(k_stop, stop.fd());
    const auto next_early = grant_early_credits(Clock::now());
    const auto next_give_back = give_back_queued(Clock::now());
    auto wait = std::chrono::duration_cast<Millis>(
                    std::min({io_.next_heartbeat, next_deadline, next_early, next_give_back}) - Clock::now()) +
                Millis(1);
    wait = counted_late ? Millis(0) : std::max(wait, Millis(0));
    stall_meter.will_wait(wait);
    poller.wait(wait);
}

Worker::Stopped WorkerImpl::stop_gracefully() {
    (void)send_message(*io_.broker, proto::Command::bye);
    io_.broker->set(zmq::sockopt::linger, 1000);  // let BYE leave before the socket closes
    log_->info("worker.stopped id={}", options_.id);
    {
        std::lock_guard lock(shared_.held.mutex);
        shared_.held.closing = true;
    }
    shared_.held.wake.notify_all();
    for (auto& t : io_.executors) t.join();
    io_.executors.clear();
    return Stopped::gracefully;
}

Worker::Stopped WorkerImpl::leave_to_be_replaced() {
    log_->warn("worker.replace timed_out={} (the task runs on: this process ends and its supervisor starts a new one)",
               io_.timed_out.size());
    // The broker requeues what else we hold, and waits for the sinks to settle timed_out.
    (void)send_message(*io_.broker, proto::Command::bye, proto::encode(proto::Ids{io_.timed_out}));
    io_.broker->set(zmq::sockopt::linger, 2000);
    io_.broker.reset();
    io_.timeout_sinks.clear();
    io_.inline_sinks.reset();  // every socket of the context closed, or close() would wait for ever
    own_ctx_->close();         // returns once the messages above have left (or the linger ran out)
    shared_.signals.abort = true;
    return Stopped::replaced;
}

void WorkerImpl::connect_to_broker() {
    io_.broker = std::make_unique<zmq::socket_t>(io_ctx_, zmq::socket_type::dealer);
    io_.broker->set(zmq::sockopt::linger, 0);
    io_.broker->set(zmq::sockopt::maxmsgsize, options_.max_message_bytes);
    connect_client(*io_.broker, options_.security.get(), options_.broker);
    proto::Hello hello{options_.id,
                       options_.host,
                       static_cast<std::int64_t>(::getpid()),
                       options_.pool,
                       options_.concurrency,
                       registry_.names(),
                       options_.restarts,
                       static_cast<std::uint64_t>(options_.max_message_bytes),
                       io_.credits.outstanding(),
                       options_.lost_key};
    (void)send_message(*io_.broker, proto::Command::hello, proto::encode(hello));
    io_.last_from_broker = Clock::now();
    io_.credits.broker_forgot();
    shared_.times.forget_told();  // a new broker knows no time: all are told again
    (void)top_up_credits();
}

void WorkerImpl::drain_executors(zmq::socket_t& from_executors, Poller& poller) {
    // Wake-ups (the counts are in `finished`), and [tag][RESULT body]:
    // results for a sink the executor cannot reach.
    zmq::message_t m;
    while (true) {
        if (!from_executors.recv(m, zmq::recv_flags::dontwait)) {
            poller.drained(k_executors);
            break;
        }
        if (!m.more()) continue;
        zmq::message_t body;
        if (!from_executors.recv(body, zmq::recv_flags::dontwait)) break;
        forward_results(proto::view(body));
    }
}

void WorkerImpl::drain_broker() {
    auto& frames = io_.frames;
    for (DrainBudget budget(1024); budget.more();) {
        frames.clear();
        if (!zmq::recv_multipart(*io_.broker, std::back_inserter(frames), zmq::recv_flags::dontwait)) break;
        io_.last_from_broker = Clock::now();
        if (frames.empty() || frames.size() > 2) continue;
        auto cmd = proto::parse_header(frames[0]);
        if (!cmd && proto::is_error_header(frames[0])) {  // an ERROR of another protocol version
            (void)io_.broker_errors.log(log_, "worker.broker_error", frames.size() == 2 ? proto::view(frames[1]) : "");
            continue;
        }
        if (!cmd) {
            log_->warn("worker.dropped reason={}", proto::decode_error_name(cmd.error()));
            continue;
        }
        on_broker_message(*cmd, frames.size() == 2 ? proto::view(frames[1]) : std::string_view{});
    }
}

void WorkerImpl::on_broker_message(proto::Command cmd, std::string_view body) {
    switch (cmd) {
        case proto::Command::dispatch: on_dispatch(body); break;
        case proto::Command::heartbeat: break;
        case proto::Command::error: (void)io_.broker_errors.log(log_, "worker.broker_error", body); break;
        case proto::Command::reset:
            log_->info("worker.reset (the broker does not know us): registering again");
            connect_to_broker();
            break;
        case proto::Command::bye:
            log_->info("worker.broker_bye (broker stopping): will reconnect");
            // Let the liveness check reconnect once the broker is back.
            io_.last_from_broker = Clock::now() - window_;
            break;
        default: log_->warn("worker.dropped reason=unexpected command={}", proto::command_name(cmd));
    }
}

void WorkerImpl::on_dispatch(std::string_view body) {
    std::string_view batch_reply_to;
    auto m = proto::decode_tasks(body, batch_reply_to);
    if (!m) {
        // Its tasks took credits at the broker that no task here will give
        // back: registering again has the broker requeue what it holds for
        // us (tasks running here may then run twice) and restart our credits.
        log_->warn("worker.dropped reason={} (an unreadable DISPATCH: registering again)",
                   proto::decode_error_name(m.error()));
        connect_to_broker();
        return;
    }
    const auto n = m->tasks.size();
    if (n == 0) return;
    std::uint32_t on_starts = 0;
    for (const auto& t : m->tasks) on_starts += t.start;
    if (on_starts > 0) {
        io_.credits.start_credits_used(on_starts);
        shared_.signals.starts_low.store(io_.credits.starts_low(), std::memory_order_relaxed);
    }
    if (n == 1 && run_inline(m->tasks[0], batch_reply_to)) return;
    io_.credits.tasks_received(static_cast<std::uint32_t>(n));
    auto dispatched = std::make_shared<Dispatched>();
    dispatched->reply_to = batch_reply_to;
    dispatched->tasks = std::move(m->tasks);
    {
        std::lock_guard lock(shared_.held.mutex);
        shared_.held.queue.push_back(std::move(dispatched));
    }
    if (n == 1) shared_.held.wake.notify_one();
    else shared_.held.wake.notify_all();
}

void WorkerImpl::on_heartbeat(Clock::time_point now) {
    count_finished();
    const auto outstanding = io_.credits.outstanding();
    (void)send_message(*io_.broker, proto::Command::heartbeat, proto::encode_worker_heartbeat(outstanding));
    io_.next_heartbeat = now + options_.heartbeat;
    // Idle for a whole heartbeat after work: give the heap back (the
    // allocator keeps it otherwise). Not at every idle tick: a trim costs
    // madvise calls, then page faults to take the memory back, and most of
    // many workers are idle between their batches (drover-bench W5).
    const auto ran = shared_.signals.meter.ran();
    if (outstanding == 0 && ran == io_.ran_at_tick && ran != io_.ran_at_trim) {
        io_.ran_at_trim = ran;
        trim_heap(/*min_free=*/1 << 20);
    }
    io_.ran_at_tick = ran;
    if (now - io_.last_from_broker <= window_) {
        io_.backoff = options_.heartbeat;
        return;
    }
    log_->warn(
        "worker.broker_silent broker={} ms={} reconnecting backoff_ms={} (is the broker running and "
        "reachable at that address, its --backend, and, if it runs with --security, does this "
        "worker have the fleet's keys and is its key on the broker's allow-list?)",
        options_.broker, std::chrono::duration_cast<Millis>(now - io_.last_from_broker).count(), io_.backoff.count());
    connect_to_broker();
    io_.next_heartbeat = now + io_.backoff;
    io_.backoff = std::min(io_.backoff * 2, k_max_backoff);
}

bool WorkerImpl::run_inline(proto::Task& task, std::string_view batch_reply_to) {
    if (!io_.credits.tasks_are_quick()) return false;
    // The outcome's other paths (a deadline, a retry after an error, a
    // standalone sink) stay with the executors.
    if (task.timeout_ms > 0 || task.retry_on_error || task.detached) return false;
    if (registry_.blocking(task.name)) return false;  // a command: an executor's
    {
        std::lock_guard lock(shared_.held.mutex);  // every executor idle, and no task waiting for one
        if (shared_.held.idle_executors < options_.concurrency || !shared_.held.queue.empty() || shared_.held.closing)
            return false;
    }
    // A copy: the task keeps its own reply_to if it goes to an executor after all.
    const std::string sink = task.reply_to.empty() ? std::string(batch_reply_to) : task.reply_to;
    if (!shared_.reach.reached_directly(sink)) return false;
    proto::Outcome out;
    out.attempt = task.attempt;
    out.token = task.token;
    out.worker = options_.concurrency > 1 ? options_.id + "/io" : options_.id;
    const auto start = Clock::now();
    std::string name = task.name;  // run_task moves it out
    const auto end = run_task(registry_, options_, log_, task, out, start, /*on_io=*/true);
    const auto ns =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
    shared_.signals.meter.add(1, ns, ns);
    (void)shared_.times.add(NameTimes{{std::move(name), {1, ns}}});
    io_.credits.ran_on_arrival();  // its credit is free again, as at an executor's report
    send_inline_result(sink, out);
    return true;
}

void WorkerImpl::send_inline_result(const std::string& sink, const proto::Outcome& out) {
    auto body = proto::encode_message(&out, 1);
    bool sent = false;
    try {
        if (!io_.inline_sinks) {
            io_.inline_sinks =
                std::make_unique<SinkSockets>(io_ctx_, /*linger_ms=*/5000, /*sndtimeo_ms=*/0, /*hwm=*/1000);
            io_.inline_sinks->secure_with(options_.security.get());
        }
        sent = send_message(io_.inline_sinks->get(sink), proto::Command::result, body) == SendStatus::sent;
    } catch (const zmq::error_t& e) {
        log_->warn("worker.sink_unusable endpoint={} error=\"{}\" (result through the broker)", sink, e.what());
    }
    if (!sent) forward_results(proto::view(body));  // full or unusable: the broker passes it on
}

void WorkerImpl::forward_results(std::string_view body) {
    if (send_message(*io_.broker, proto::Command::result, body) == SendStatus::sent) return;
    // The broker connection is full or down: run these tasks again later.
    auto m = proto::decode_results(body);
    if (!m) return;
    log_->warn("worker.forward_failed results={} (retrying them)", m->results.size());
    std::lock_guard lock(shared_.held.mutex);
    for (auto& o : m->results) shared_.held.retries.push_back(std::move(o.id));
}

Clock::time_point WorkerImpl::report_timeouts(Clock::time_point now) {
    auto next = Clock::time_point::max();
    std::unordered_map<std::string, std::vector<proto::Outcome>> by_sink;
    {
        std::lock_guard lock(shared_.held.mutex);
        for (auto& [run, r] : shared_.held.running) {
            if (r.timed_out) continue;
            if (r.deadline > now) {
                next = std::min(next, r.deadline);
                continue;
            }
            r.timed_out = true;
            io_.replace = options_.replace_on_timeout;
            if (next_attempt(AttemptEnd::timed_out, {r.task.attempt, r.task.max_attempts}).again) {
                log_->warn("task.timeout id={} attempt={}/{} (retrying)", r.task.id, r.task.attempt,
                           r.task.max_attempts);
                shared_.held.retries.push_back(r.task.id);
                continue;
            }
            if (io_.replace) io_.timed_out.push_back(r.task.id);
            by_sink[r.task.reply_to].push_back(timeout_outcome(r.task));
        }
    }
    send_timeouts(by_sink);
    send_retries();
    return next;
}

proto::Outcome WorkerImpl::timeout_outcome(const proto::Task& task) const {
    proto::Outcome o;
    o.id = task.id;
    o.task = task.name;
    o.status = proto::Status::timeout;
    o.error = "timed out after " + std::to_string(task.timeout_ms) + " ms";
    o.attempt = task.attempt;
    o.token = task.token;
    o.worker = options_.id;
    o.elapsed_us = std::uint64_t{task.timeout_ms} * 1000;
    return o;
}

void WorkerImpl::send_timeouts(std::unordered_map<std::string, std::vector<proto::Outcome>>& by_sink) {
    for (auto& [endpoint, list] : by_sink) {
        log_->warn("task.timeout n={} sink={}", list.size(), endpoint);
        try {
            auto body = proto::encode_message(list.data(), list.size());
            if (send_message_blocking(io_.timeout_sinks.get(endpoint), proto::Command::result, body) !=
                SendStatus::sent)
                log_->warn("worker.sink_full endpoint={} dropped_timeouts={}", endpoint, list.size());
        } catch (const zmq::error_t& e) {
            log_->warn("worker.sink_unusable endpoint={} error=\"{}\"", endpoint, e.what());
        }
    }
}

void WorkerImpl::send_retries() {
    std::vector<std::string> ids;
    {
        std::lock_guard lock(shared_.held.mutex);
        ids.swap(shared_.held.retries);
    }
    if (ids.empty()) return;
    log_->debug("task.retry n={}", ids.size());
    (void)send_message(*io_.broker, proto::Command::retry, proto::encode(proto::Ids{std::move(ids)}));
}

Worker::Worker(zmq::context_t& ctx, const Registry& registry, WorkerOptions options, Logger log)
    : impl_(std::make_unique<WorkerImpl>(ctx, registry, std::move(options), std::move(log))) {}
Worker::~Worker() = default;
Worker::Stopped Worker::run(const StopSource& stop) { return impl_->run(stop); }
const std::string& Worker::id() const { return impl_->id(); }

}  // namespace drover
