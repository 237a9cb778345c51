// drover as the benchmark runs it: a broker and workers, and a producer driving them.
#include "cluster.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include <unistd.h>

#include "drover/broker/broker.hpp"
#include "drover/client/status.hpp"
#include "internal/net.hpp"

namespace drover::bench {

namespace {

constexpr auto k_stall = std::chrono::seconds(30);
using SteadyClock = std::chrono::steady_clock;

}  // namespace

DroverCluster::DroverCluster(const DroverEnv& env, zmq::context_t& ctx, Transport& transport, ClusterSpec spec)
    : env_(env), ctx_(ctx), transport_(transport), spec_(std::move(spec)) {
    if (transport_.in_process()) {
        registry_ = std::make_unique<Registry>();
        add_builtin_tasks(*registry_);
        LocalClusterOptions lo;
        lo.workers = spec_.workers;
        lo.pool = "threads";
        local_ = std::make_unique<LocalCluster>(ctx_, *registry_, lo, null_logger());
        frontend_ = local_->frontend();
        return;
    }
    const auto file = env_.dir + "/broker-" + random_hex(4) + ".json";
    std::vector<std::string> argv{env_.broker_exe,
                                  "--frontend",
                                  transport_.bind_endpoint("frontend"),
                                  "--backend",
                                  transport_.bind_endpoint("backend"),
                                  "--endpoints-file",
                                  file,
                                  "--log-level",
                                  env_.log_level};
    argv.insert(argv.end(), spec_.broker_args.begin(), spec_.broker_args.end());
    broker_ = std::make_unique<Child>(argv, log_path());
    auto doc = wait_json_file(file, std::chrono::seconds(10));
    if (!doc) throw std::runtime_error("drover-broker did not start: " + tail_file(log_path(), 5));
    frontend_ = (*doc)["frontend"].get<std::string>();
    backend_ = (*doc)["backend"].get<std::string>();
    if (spec_.attach_workers) attach_workers();
}

DroverCluster::~DroverCluster() {
    workers_.clear();
    broker_.reset();
    local_.reset();
}

std::string DroverCluster::log_path() const { return env_.dir + "/drover.log"; }

std::size_t DroverCluster::expected_registrations() const {
    if (spec_.pool == "threads") return 1;  // one worker with N executors
    return spec_.workers;                   // solo processes, or a supervisor's children
}

void DroverCluster::attach_workers() {
    if (local_) return;  // LocalCluster starts its workers itself
    std::vector<std::string> base{env_.worker_exe, "--broker",    backend_,      "--pool",
                                  spec_.pool,      "--log-level", env_.log_level};
    base.insert(base.end(), env_.worker_args.begin(), env_.worker_args.end());
    if (spec_.pool == "solo") {
        for (unsigned i = 0; i < spec_.workers; ++i) workers_.push_back(std::make_unique<Child>(base, log_path()));
    } else {
        base.insert(base.end(), {"-c", std::to_string(spec_.workers)});
        workers_.push_back(std::make_unique<Child>(base, log_path()));
    }
    const auto want = expected_registrations();
    const auto deadline = SteadyClock::now() + std::chrono::seconds(30 + spec_.workers / 4);
    while (true) {
        auto doc = fetch_status(ctx_, frontend_, Millis(5000));
        const std::size_t have = doc ? (*doc)["workers"].size() : 0;
        if (have >= want) return;
        if (SteadyClock::now() > deadline)
            throw std::runtime_error("only " + std::to_string(have) + " of " + std::to_string(want) +
                                     " workers registered: " + tail_file(log_path(), 5));
        std::this_thread::sleep_for(Millis(20));
    }
}

ClientOptions DroverCluster::client_options(std::size_t window) {
    ClientOptions o;
    o.broker = frontend_;
    if (local_) o.sink = local_->sink_endpoint();
    else if (transport_.name() == "ipc") o.sink = transport_.bind_endpoint("sink");
    else o.sink = "tcp://127.0.0.1:*";
    // Room for outcomes being delivered while the caller already counts
    // them, so that the client's own window never blocks.
    o.window = window * 2 + 10000;
    return o;
}

pid_t DroverCluster::broker_pid() const { return broker_ ? broker_->pid() : ::getpid(); }

std::string DroverCluster::describe() const {
    if (local_) return "--local " + std::to_string(spec_.workers) + " threads (inproc)";
    return spec_.pool + " x" + std::to_string(spec_.workers) + " over " + transport_.name();
}

nlohmann::json DroverCluster::status() {
    auto doc = fetch_status(ctx_, frontend_, Millis(5000));
    if (!doc) throw std::runtime_error("no STATUS answer from the broker within 5 s");
    return *doc;
}

nlohmann::json DroverCluster::wait_settled(Millis timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    while (true) {
        auto doc = status();
        const auto held = doc["held"].get<std::size_t>();
        if (held == 0) return doc;
        if (SteadyClock::now() > deadline)
            throw std::runtime_error(std::to_string(held) + " tasks still held by the broker (not settled) after " +
                                     std::to_string(timeout.count()) + " ms");
        // STATUS walks every held task: polling fast would slow the broker down.
        std::this_thread::sleep_for(Millis(20));
    }
}

struct Batch::State {
    std::mutex mutex;
    std::condition_variable changed;
    // Counted by the callbacks on the client's I/O thread without the mutex:
    // a lock a task shared by the submitting thread and the I/O thread is
    // contended at every task (futex calls by the 100,000 in a W1 run).
    std::atomic<std::size_t> done{0};
    std::atomic<std::size_t> left{0};  // callbacks that returned: the state is theirs until then
    // The waiter is woken only once `done` reaches this, so that the
    // client's I/O thread does not pay a wake-up per outcome.
    std::atomic<std::size_t> wake_at{std::numeric_limits<std::size_t>::max()};
    std::size_t failed = 0;  // with mutex
    std::string first_failure;
};

Batch::Batch(Client& client, std::size_t window)
    : client_(client), window_(std::max<std::size_t>(window, 1)), state_(std::make_shared<State>()) {}

Batch::~Batch() {
    // Callbacks of tasks still unfinished (a failed run) may run later: they
    // keep the state, which is then never freed.
    if (state_->left.load() < submitted_) (void)new std::shared_ptr<State>(state_);
}

void Batch::wait_until(std::size_t done_at_least) {
    std::unique_lock lock(state_->mutex);
    std::size_t last = state_->done.load();
    auto last_change = SteadyClock::now();
    state_->wake_at.store(done_at_least);
    while (state_->done.load() < done_at_least) {
        state_->changed.wait_for(lock, std::chrono::milliseconds(500));
        if (const auto now_done = state_->done.load(); now_done != last) {
            last = now_done;
            last_change = SteadyClock::now();
        } else if (SteadyClock::now() - last_change > k_stall) {
            state_->wake_at.store(std::numeric_limits<std::size_t>::max());
            throw std::runtime_error("stalled: " + std::to_string(last) + " of " + std::to_string(submitted_) +
                                     " outcomes, none for " + std::to_string(k_stall.count()) + " s");
        }
    }
    state_->wake_at.store(std::numeric_limits<std::size_t>::max());
}

void Batch::submit(const std::string& task, std::string args) {
    // A full window waits for room for a slice of it, not for one task.
    if (submitted_ - state_->done.load(std::memory_order_relaxed) >= window_)
        wait_until(submitted_ - window_ + std::max<std::size_t>(1, window_ / 16));
    ++submitted_;
    // A plain pointer: a callback that fits in std::function without an
    // allocation, and no shared count touched by two threads per task.
    client_.submit_packed(task, std::move(args), [state = state_.get()](Result&& r) {
        if (!r.ok()) {
            std::lock_guard lock(state->mutex);
            if (state->failed++ == 0) state->first_failure = r.id + " " + proto::status_name(r.status) + ": " + r.error;
        }
        // The waiter sets wake_at, then reads done, with the mutex held; the
        // notify takes the mutex, so it cannot fall between the two.
        if (state->done.fetch_add(1) + 1 >= state->wake_at.load()) {
            std::lock_guard lock(state->mutex);
            state->changed.notify_one();
        }
        state->left.fetch_add(1, std::memory_order_release);  // the last touch of the state
    });
}

void Batch::wait_all() {
    wait_until(submitted_);
    // Every outcome is counted; the last callbacks may still be returning.
    while (state_->left.load(std::memory_order_acquire) < submitted_) std::this_thread::yield();
    std::lock_guard lock(state_->mutex);
    if (state_->failed > 0)
        throw std::runtime_error(std::to_string(state_->failed) + " of " + std::to_string(submitted_) +
                                 " tasks did not end ok, e.g. " + state_->first_failure);
}

double run_tasks(Client& client, const std::string& task, const std::function<std::string(std::size_t)>& args,
                 std::size_t n, std::size_t window) {
    Batch batch(client, window);
    const auto t0 = SteadyClock::now();
    for (std::size_t i = 0; i < n; ++i) batch.submit(task, args(i));
    batch.wait_all();
    return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

std::vector<double> round_trips(Client& client, std::size_t rounds) {
    // From submit to the result's callback (where a caller has its result),
    // not to this thread's wake-up after it.
    struct Trip {
        std::mutex mutex;
        std::condition_variable done;
        std::optional<SteadyClock::time_point> at;
        std::string failure;
    };
    std::vector<double> us;
    us.reserve(rounds);
    for (std::size_t i = 0; i < rounds; ++i) {
        auto trip = std::make_shared<Trip>();
        const auto t0 = SteadyClock::now();
        client.submit_packed("echo", pack_args(static_cast<std::int64_t>(i)), [trip](Result&& r) {
            const auto now = SteadyClock::now();
            {
                std::lock_guard lock(trip->mutex);
                trip->at = now;
                if (!r.ok()) trip->failure = r.id + " " + proto::status_name(r.status) + ": " + r.error;
            }
            trip->done.notify_one();
        });
        std::unique_lock lock(trip->mutex);
        if (!trip->done.wait_for(lock, std::chrono::seconds(30), [&] { return trip->at.has_value(); }))
            throw std::runtime_error("W2: no outcome for 30 s");
        if (!trip->failure.empty()) throw std::runtime_error("W2: " + trip->failure);
        us.push_back(std::chrono::duration<double>(*trip->at - t0).count() * 1e6);
    }
    return us;
}

}  // namespace drover::bench
