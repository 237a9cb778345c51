// drover-bench: every workload of the benchmark in one run, baselines first.
#include "bench.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "baselines.hpp"
#include "child.hpp"
#include "cluster.hpp"
#include "report.hpp"

namespace drover::bench {

namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr auto k_settle_timeout = Millis(20000);
// W7, the mixed workload: a burst of short tasks, then long tasks, one for
// each of W1's 2 workers, which must run side by side.
constexpr std::size_t k_mixed_burst = 20000;
constexpr std::int64_t k_mixed_long_ms = 100;
constexpr std::size_t k_mixed_workers = 2;

// W6's default window: big payloads are limited by bytes in flight, not by count.
constexpr std::size_t k_big_bytes_in_flight = 8 * 1024 * 1024;
constexpr auto k_watchdog = std::chrono::minutes(20);  // no progress at all for this long: give up

// /proc/loadavg's first three fields: how busy the shared machine was.
std::string load_average() {
    std::ifstream in("/proc/loadavg");
    std::string a, b, c;
    in >> a >> b >> c;
    return a + " " + b + " " + c;
}

double seconds_since(SteadyClock::time_point t0) {
    return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

// `tasks` seed tasks single-threaded, in ms, as the machine's average core
// runs them: split evenly over the CPUs this thread may use, run pinned to
// each in turn, the per-core rates averaged. Unpinned, the same tasks took
// about 410 or about 500 ms, by the vCPU they landed on as far as we can
// tell (this machine's two differ in speed at times), which moved W3's
// speed-ups between 1.63 and 1.94 while drover's own times stayed at
// 240-270 ms. Against the average
// core the limit of two workers is 2.0 however unequal the cores: they run
// at the sum of the two rates.
template <class Run>
double single_thread_ms(const Run& run, std::size_t tasks) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    std::vector<int> cpus;
    if (::pthread_getaffinity_np(::pthread_self(), sizeof allowed, &allowed) == 0)
        for (int c = 0; c < CPU_SETSIZE; ++c)
            if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
    if (cpus.size() < 2 || tasks < cpus.size()) {
        const auto t0 = SteadyClock::now();
        run(tasks);
        return seconds_since(t0) * 1000;
    }
    double rate = 0;  // tasks per second, summed over the cores
    std::size_t done = 0;
    for (std::size_t k = 0; k < cpus.size(); ++k) {
        const std::size_t n = (tasks * (k + 1)) / cpus.size() - done;
        done += n;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[k], &one);
        (void)::pthread_setaffinity_np(::pthread_self(), sizeof one, &one);
        const auto t0 = SteadyClock::now();
        run(n);
        rate += static_cast<double>(n) / seconds_since(t0);
    }
    (void)::pthread_setaffinity_np(::pthread_self(), sizeof allowed, &allowed);
    return static_cast<double>(tasks) / (rate / static_cast<double>(cpus.size())) * 1000;
}

// `tasks` seed tasks split over two threads of this process, no drover, in ms.
template <class Run>
double two_threads_ms(const Run& run, std::size_t tasks) {
    const auto t0 = SteadyClock::now();
    std::thread other(std::cref(run), tasks / 2);
    run(tasks - tasks / 2);
    other.join();
    return seconds_since(t0) * 1000;
}

// Runs seed tasks (sum_random with the given packed arguments) in the
// calling thread, no drover: W3's single-threaded and two-thread times.
class SeedRunner {
public:
    explicit SeedRunner(std::string args) : args_(std::move(args)) { add_builtin_tasks(registry_); }
    void operator()(std::size_t tasks) const {
        for (std::size_t i = 0; i < tasks; ++i) (void)registry_.run("sum_random", args_);
    }
    [[nodiscard]] const std::string& args() const { return args_; }

private:
    Registry registry_;
    std::string args_;
};

constexpr const char* k_seed_inline_note =
    "Registry::run in the benchmark's thread, no drover, a share pinned to each core (the average core); the "
    "baseline of the next row";

std::string with_commas(std::size_t n) {
    auto s = std::to_string(n);
    for (auto i = static_cast<long>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<std::size_t>(i), ",");
    return s;
}

std::string size_name(std::size_t bytes) {
    if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0) return std::to_string(bytes / (1024 * 1024)) + " MiB";
    if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes / 1024) + " KiB";
    return std::to_string(bytes) + " B";
}

Figure figure(std::string key, std::string unit, std::string baseline = {}, Target target = Target::none()) {
    Figure f;
    f.key = std::move(key);
    f.unit = std::move(unit);
    f.baseline = std::move(baseline);
    f.target = target;
    return f;
}

// Percentiles of one repetition's round trips, as samples of three figures.
void add_latency(const std::vector<double>& us, Figure& p50, Figure& p99, Figure& p999) {
    p50.samples.push_back(percentile(us, 50));
    p99.samples.push_back(percentile(us, 99));
    p999.samples.push_back(percentile(us, 99.9));
}

std::string echo_args(std::size_t i) { return pack_args(static_cast<std::int64_t>(i)); }

class Run {
public:
    explicit Run(BenchOptions o) : o_(std::move(o)), dir_(o_.log_dir), start_(SteadyClock::now()) {
        close_dependencies();
        if (o_.big_window == 0) o_.big_window = std::max<std::size_t>(1, k_big_bytes_in_flight / o_.big_bytes);
        env_.broker_exe = o_.broker_exe;
        env_.worker_exe = o_.worker_exe;
        env_.dir = dir_.path();
        env_.worker_args = o_.worker_args;
        env_.log_level = o_.log_level;
        client_log_ = make_logger("bench-client", o_.log_level);
        baseline_env_.self_exe = self_exe();
        baseline_env_.dir = dir_.path();
    }

    int execute() {
        last_progress_ = SteadyClock::now().time_since_epoch().count();
        std::thread watchdog([this] { watch(); });
        load_at_start_ = load_average();
        progress("drover-bench: " + std::to_string(o_.reps) + (o_.reps == 1 ? " repetition" : " repetitions") +
                 " of each figure; load average " + load_at_start_ + "; logs in " + dir_.path());
        const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
        if (std::strtod(load_at_start_.c_str(), nullptr) > 0.5 * cores)
            progress("note: load average " + load_at_start_.substr(0, load_at_start_.find(' ')) + " on " +
                     std::to_string(cores) + " cores: other processes compete for the CPU, figures will be noisy");
        for (const auto& t : o_.transports) baselines(t);
        for (const auto& t : o_.transports) drover_on(t);
        if (want("W8")) {
            journaled();
            recovery();
        }
        if (want("W3")) {
            seed_ceiling();
            for (const auto& t : o_.transports) {
                if (t == "inproc") seed_form(t, "threads");
                else seed_form(t, "solo");
                if (t == "tcp") {
                    seed_form(t, "threads");
                    seed_form(t, "processes");
                }
            }
        }
        if (want("W9")) shell_edge();
        if (want("W10")) commands();
        if (want("W4")) memory();
        if (want("W5")) many_workers();
        finished_ = true;
        watchdog.join();

        const double elapsed = seconds_since(start_);
        load_at_end_ = load_average();
        std::ostringstream table;
        report_.print_table(table);
        table << "ratio: median / its baseline's median from this run (W3: baseline / median, the speed-up); "
                 "targets from issue 4\n";
        std::cout << table.str() << std::flush;
        std::fprintf(stderr, "drover-bench: done in %.1f s; load average %s\n", elapsed, load_at_end_.c_str());
        const bool json_ok = o_.json_path.empty() || write_json(elapsed);
        return report_.any_failed() || !json_ok ? 1 : 0;
    }

private:
    // --only W5 needs W1 (its baseline), W1 needs B1 and B2, W2 needs B3.
    void close_dependencies() {
        if (o_.only.empty()) return;
        if (o_.only.count("W5")) o_.only.insert("W1");
        if (o_.only.count("W1")) o_.only.insert({"B1", "B2"});
        if (o_.only.count("W2")) o_.only.insert("B3");
    }
    [[nodiscard]] bool want(const std::string& key) const { return o_.only.empty() || o_.only.count(key) > 0; }

    void progress(const std::string& what) {
        last_progress_ = SteadyClock::now().time_since_epoch().count();
        std::fprintf(stderr, "[%6.1f s] %s\n", seconds_since(start_), what.c_str());
    }

    // How the broker batched the tasks dispatched between two STATUS answers.
    void progress_batches(const std::string& what, const nlohmann::json& before, const nlohmann::json& after) {
        const auto count = [](const nlohmann::json& doc, const char* key) {
            return doc["totals"].value(key, std::uint64_t{0});
        };
        const auto tasks = count(after, "dispatched") - count(before, "dispatched");
        const auto batches = count(after, "dispatch_batches") - count(before, "dispatch_batches");
        if (batches == 0) return;
        char line[160];
        std::snprintf(line, sizeof line, "%s: %s tasks in %s DISPATCH messages, %.1f tasks a message", what.c_str(),
                      with_commas(tasks).c_str(), with_commas(batches).c_str(),
                      static_cast<double>(tasks) / static_cast<double>(batches));
        progress(line);
    }

    // The last resort against a hang that no timeout below caught.
    void watch() {
        while (!finished_) {
            std::this_thread::sleep_for(Millis(200));
            const auto last = SteadyClock::time_point(SteadyClock::duration(last_progress_.load()));
            if (SteadyClock::now() - last > k_watchdog) {
                std::fprintf(
                    stderr, "drover-bench: no progress for %lld s, giving up (logs: %s)\n",
                    static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(k_watchdog).count()),
                    dir_.path().c_str());
                kill_all_children();
                std::_Exit(3);
            }
        }
    }

    // Runs `body`; then adds `figures` to the report, marked failed with the
    // error if `body` threw.
    template <class F>
    void measure(std::vector<Figure*> figures, F body) {
        std::string error;
        try {
            body();
        } catch (const std::exception& e) {
            error = e.what();
            std::string logs;
            for (const char* name : {"drover.log", "baseline.log"}) {
                const auto tail = tail_file(dir_.file(name), 10);
                if (!tail.empty()) logs += "\nlast lines of " + dir_.file(name) + ":\n" + tail;
            }
            progress("FAILED: " + error + logs);
        }
        for (auto* f : figures) {
            if (!error.empty()) f->error = error;
            report_.add(*f);
        }
    }

    // B1, B1 with big messages, B2 and B3 over one transport.
    void baselines(const std::string& t) {
        Transport transport(t, dir_.path());
        const std::size_t n = o_.baseline_tasks;
        if (want("B1") || want("W6")) {
            auto b1 = figure("B1 raw pipeline " + t, "tasks/s");
            auto b1_big = figure("B1 raw pipeline " + size_name(o_.big_bytes) + " " + t, "MiB/s");
            std::vector<Figure*> figs{&b1_big};
            if (want("B1")) figs.insert(figs.begin(), &b1);
            measure(figs, [&] {
                progress("B1 raw pipeline over " + t + ": starting 2 workers");
                Baseline pipeline(Baseline::Shape::pipeline, baseline_env_, transport);
                if (want("B1")) {
                    progress("B1 raw pipeline " + t + ": " + std::to_string(o_.reps) + " x " + with_commas(n) +
                             " messages");
                    (void)pipeline.stream(std::min<std::size_t>(n / 10 + 1, 20000), 8);  // warm-up
                    for (unsigned r = 0; r < o_.reps; ++r)
                        b1.samples.push_back(static_cast<double>(n) / pipeline.stream(n, 8));
                }
                progress("B1 raw pipeline " + t + ": " + std::to_string(o_.reps) + " x " + with_commas(o_.big_tasks) +
                         " messages of " + size_name(o_.big_bytes));
                (void)pipeline.stream(std::min<std::size_t>(o_.big_tasks / 10 + 1, 500), o_.big_bytes);
                const double mib = static_cast<double>(o_.big_tasks * o_.big_bytes) / (1024.0 * 1024.0);
                for (unsigned r = 0; r < o_.reps; ++r)
                    b1_big.samples.push_back(mib / pipeline.stream(o_.big_tasks, o_.big_bytes));
            });
        }
        if (want("B2") || want("B3")) {
            auto b2 = figure("B2 bare broker " + t, "tasks/s");
            auto p50 = figure("B3 round trip p50 " + t, "us");
            auto p99 = figure("B3 round trip p99 " + t, "us");
            auto p999 = figure("B3 round trip p99.9 " + t, "us");
            std::vector<Figure*> figs;
            if (want("B2")) figs.push_back(&b2);
            if (want("B3")) figs.insert(figs.end(), {&p50, &p99, &p999});
            measure(figs, [&] {
                progress("B2 bare broker over " + t + ": starting the zmq::proxy broker and 2 workers");
                Baseline bare(Baseline::Shape::bare_broker, baseline_env_, transport);
                if (want("B2")) {
                    progress("B2 bare broker " + t + ": " + std::to_string(o_.reps) + " x " + with_commas(n) +
                             " messages");
                    (void)bare.stream(std::min<std::size_t>(n / 10 + 1, 20000), 8);
                    for (unsigned r = 0; r < o_.reps; ++r)
                        b2.samples.push_back(static_cast<double>(n) / bare.stream(n, 8));
                }
                if (want("B3")) {
                    progress("B3 round trip " + t + ": " + std::to_string(o_.reps) + " x " +
                             with_commas(o_.latency_rounds) + " round trips");
                    (void)bare.round_trips(100);
                    for (unsigned r = 0; r < o_.reps; ++r)
                        add_latency(bare.round_trips(o_.latency_rounds), p50, p99, p999);
                }
            });
        }
    }

    // W1, W2 and W6 over one transport: 2 solo workers, or --local 2 threads;
    // and W7 over tcp.
    void drover_on(const std::string& t) {
        if (!want("W1") && !want("W2") && !want("W6") && !(want("W7") && t == "tcp")) return;
        Transport transport(t, dir_.path());
        const std::string b1 = "B1 raw pipeline " + t, b2 = "B2 bare broker " + t;
        auto w1 =
            figure("W1 throughput " + t, "tasks/s", {}, t == "tcp" ? Target::value_at_least(1e6) : Target::none());
        auto w1_b1 = figure("W1 throughput " + t + " / B1", "tasks/s", b1, Target::ratio_at_least(0.40));
        auto w1_b2 = figure("W1 throughput " + t + " / B2", "tasks/s", b2, Target::ratio_at_least(2.0));
        // W2's baseline is B3 again, each repetition next to one of W2's, so
        // that both sides of the ratio see the same moment of the shared
        // machine (as W3's and W5's baselines): against B3's own row, measured
        // a minute or more earlier, five runs of one build read W2 p50 over tcp
        // at 0.89-1.44 x B3, while B3 itself read 143-207 us across them.
        auto b3_p50 = figure("B3 round trip p50 " + t + " [next to W2]", "us");
        auto b3_p99 = figure("B3 round trip p99 " + t + " [next to W2]", "us");
        auto b3_p999 = figure("B3 round trip p99.9 " + t + " [next to W2]", "us");
        b3_p50.note = "B3 again, each repetition next to one of W2's: the baseline of the W2 rows";
        auto p50 = figure("W2 latency p50 " + t, "us", b3_p50.key, Target::ratio_at_most(1.2));
        auto p99 = figure("W2 latency p99 " + t, "us", b3_p99.key, Target::ratio_at_most(2.0));
        auto p999 = figure("W2 latency p99.9 " + t, "us", b3_p999.key);
        // The same p50 against B3's own row, measured earlier in the run.
        auto p50_b3 = figure("W2 latency p50 " + t + " / B3", "us", "B3 round trip p50 " + t);
        auto w6 = figure("W6 " + size_name(o_.big_bytes) + " payloads " + t, "MiB/s",
                         "B1 raw pipeline " + size_name(o_.big_bytes) + " " + t, Target::ratio_at_least(0.7));

        const std::string long_task = "sleep_ms(" + std::to_string(k_mixed_long_ms) + ")";
        auto w7_alone = figure("W7 one " + long_task + " " + t, "ms");
        w7_alone.note = "one long task on an idle cluster, each repetition next to W7's: the baseline of the next row";
        auto w7 = figure("W7 mixed " + t + ": " + std::to_string(k_mixed_workers) + " x " + long_task + " after " +
                             with_commas(k_mixed_burst) + " echo",
                         "ms", w7_alone.key);
        w7.note = "ratio 1: the long tasks ran side by side; 2: on one worker, queued behind its prefetch";
        const bool mixed = want("W7") && t == "tcp";

        std::vector<Figure*> figs;
        if (want("W1")) figs.insert(figs.end(), {&w1, &w1_b1, &w1_b2});
        if (mixed) figs.insert(figs.end(), {&w7_alone, &w7});
        if (want("W2")) figs.insert(figs.end(), {&b3_p50, &b3_p99, &b3_p999, &p50, &p99, &p999, &p50_b3});
        if (want("W6")) figs.push_back(&w6);
        measure(figs, [&] {
            zmq::context_t ctx;
            progress("drover over " + t + ": starting " +
                     (t == "inproc" ? std::string("a LocalCluster with 2 worker threads")
                                    : "drover-broker and 2 drover-worker --pool solo"));
            DroverCluster cluster(env_, ctx, transport, {});
            Client client(ctx, cluster.client_options(std::max(o_.window, o_.big_window)), client_log_);
            if (want("W1")) {
                const std::size_t n = o_.tasks;
                progress("W1 throughput " + t + ": " + std::to_string(o_.reps) + " x " + with_commas(n) +
                         " echo tasks");
                (void)run_tasks(client, "echo", echo_args, std::min<std::size_t>(n / 10 + 1, 20000), o_.window);
                cluster.wait_settled(k_settle_timeout);
                const auto before = cluster.status();
                for (unsigned r = 0; r < o_.reps; ++r) {
                    const double rate = static_cast<double>(n) / run_tasks(client, "echo", echo_args, n, o_.window);
                    cluster.wait_settled(k_settle_timeout);  // every task settled, not only answered
                    for (auto* f : {&w1, &w1_b1, &w1_b2}) f->samples.push_back(rate);
                }
                progress_batches("W1 " + t, before, cluster.status());
            }
            if (mixed) {
                // The long phase's wall time after a burst that grew every
                // worker's prefetch, against one long task alone.
                progress("W7 mixed " + t + ": " + std::to_string(o_.reps) + " x (one " + long_task + "; " +
                         with_commas(k_mixed_burst) + " echo, then " + std::to_string(k_mixed_workers) + " x " +
                         long_task + ")");
                const auto long_args = [](std::size_t) { return pack_args(k_mixed_long_ms); };
                for (unsigned r = 0; r < o_.reps; ++r) {
                    w7_alone.samples.push_back(1000 * run_tasks(client, "sleep_ms", long_args, 1, o_.window));
                    cluster.wait_settled(k_settle_timeout);
                    (void)run_tasks(client, "echo", echo_args, k_mixed_burst, o_.window);
                    w7.samples.push_back(1000 * run_tasks(client, "sleep_ms", long_args, k_mixed_workers, o_.window));
                    cluster.wait_settled(k_settle_timeout);
                }
            }
            if (want("W2")) {
                progress("W2 latency " + t + ": starting B3's zmq::proxy broker and 2 workers, to measure next to W2");
                Baseline bare(Baseline::Shape::bare_broker, baseline_env_, transport);
                progress("W2 latency " + t + ": " + std::to_string(o_.reps) + " x " + with_commas(o_.latency_rounds) +
                         " round trips, each repetition next to one of B3's");
                (void)bare.round_trips(100);
                (void)round_trips(client, 100);
                // B3 first in one repetition, W2 first in the next: neither
                // always follows the other.
                const auto b3_rep = [&] { add_latency(bare.round_trips(o_.latency_rounds), b3_p50, b3_p99, b3_p999); };
                for (unsigned r = 0; r < o_.reps; ++r) {
                    if (r % 2 == 0) b3_rep();
                    add_latency(round_trips(client, o_.latency_rounds), p50, p99, p999);
                    p50_b3.samples.push_back(p50.samples.back());
                    if (r % 2 == 1) b3_rep();
                }
            }
            if (want("W6")) {
                progress(w6.key + ": " + std::to_string(o_.reps) + " x " + with_commas(o_.big_tasks) + " echo tasks");
                const auto big = pack_args(std::string(o_.big_bytes, 'x'));
                const auto big_args = [&](std::size_t) { return big; };
                (void)run_tasks(client, "echo", big_args, std::min<std::size_t>(o_.big_tasks / 10 + 1, 500),
                                o_.big_window);
                const double mib = static_cast<double>(o_.big_tasks * o_.big_bytes) / (1024.0 * 1024.0);
                for (unsigned r = 0; r < o_.reps; ++r) {
                    w6.samples.push_back(mib / run_tasks(client, "echo", big_args, o_.big_tasks, o_.big_window));
                    cluster.wait_settled(k_settle_timeout);
                }
            }
        });
    }

    // What this machine gives two threads that share nothing: the seed tasks
    // single-threaded, then split over 2 threads of this process, no drover.
    // A shared machine's two cores do not always give 2.0 (other jobs, a host
    // that slows cores that work together): W3's speed-ups read against this.
    void seed_ceiling() {
        auto single = figure("W3 seed inline [2 threads]", "ms");
        single.note = k_seed_inline_note;
        auto f = figure("W3 seed 2 threads, no drover", "ms", single.key);
        f.inverted_ratio = true;
        f.note = "the machine's own speed-up for two threads: the ceiling of W3";
        measure({&single, &f}, [&] {
            progress("W3 ceiling: " + std::to_string(o_.reps) + " x " + std::to_string(o_.seed_tasks) +
                     " x sum_random(" + std::to_string(o_.seed_n) + "), single-threaded then on 2 threads");
            const SeedRunner run(pack_args(o_.seed_n));
            for (unsigned r = 0; r < o_.reps; ++r) {
                single.samples.push_back(single_thread_ms(run, o_.seed_tasks));
                f.samples.push_back(two_threads_ms(run, o_.seed_tasks));
            }
        });
    }

    // W3 in a fresh cluster with 2 workers: 2 solo processes, one worker of
    // 2 threads or of 2 child processes; over inproc, --local 2 threads.
    // Each repetition runs the tasks single-threaded in this process first
    // and then through drover, so that both sides of a speed-up are measured
    // under the same load of a shared machine.
    void seed_form(const std::string& t, const std::string& pool) {
        const std::string form = t == "inproc"    ? "inproc --local 2"
                                 : pool == "solo" ? t + " solo x2"
                                                  : t + " " + pool + " -c 2";
        auto single = figure("W3 seed inline [" + form + "]", "ms");
        single.note = k_seed_inline_note;
        auto f = figure("W3 seed " + form, "ms", single.key, Target::ratio_at_least(1.9));
        f.inverted_ratio = true;
        f.note = "ratio is the speed-up: single-thread wall / drover wall";
        // The machine's own two-thread time next to each repetition: how
        // much of what two cores give at that moment drover delivers (the
        // ceiling's row is measured once, before every cluster).
        auto two = figure("W3 seed 2 threads [" + form + "]", "ms", single.key);
        two.inverted_ratio = true;
        two.note = "the seed tasks on 2 threads of the benchmark, no drover, next to each repetition: the ceiling then";
        auto of_two = figure("W3 seed " + form + " / 2 threads", "ms", two.key);
        of_two.inverted_ratio = true;
        of_two.note = "2 threads' wall / drover wall: the share of the machine's two-thread speed that drover reaches";
        measure({&single, &two, &f, &of_two}, [&] {
            Transport transport(t, dir_.path());
            zmq::context_t ctx;
            ClusterSpec spec;
            spec.pool = pool;
            progress("W3 " + form + ": starting the cluster");
            DroverCluster cluster(env_, ctx, transport, spec);
            Client client(ctx, cluster.client_options(o_.seed_tasks), client_log_);
            progress("W3 " + form + ": " + std::to_string(o_.reps) + " x " + std::to_string(o_.seed_tasks) +
                     " x sum_random(" + std::to_string(o_.seed_n) + "), single-threaded then through drover");
            const SeedRunner run(pack_args(o_.seed_n));
            const auto seed_args = [&](std::size_t) { return run.args(); };
            // The warm-up runs the same task, so that a worker that sizes its
            // prefetch from measured task times starts from the right ones.
            (void)run_tasks(client, "sum_random", seed_args, 2, 2);
            for (unsigned r = 0; r < o_.reps; ++r) {
                single.samples.push_back(single_thread_ms(run, o_.seed_tasks));
                two.samples.push_back(two_threads_ms(run, o_.seed_tasks));
                f.samples.push_back(run_tasks(client, "sum_random", seed_args, o_.seed_tasks, o_.seed_tasks) * 1000);
                of_two.samples.push_back(f.samples.back());
            }
        });
    }

    // W4: broker memory with queue_tasks queued and no worker, then after a drain.
    void memory() {
        const auto q = o_.queue_tasks;
        auto start = figure("W4 broker RSS at start", "MiB");
        auto queued = figure("W4 broker RSS with " + with_commas(q) + " queued", "MiB");
        auto per_task = figure("W4 broker bytes per queued task", "B/task", {}, Target::value_at_most(200));
        per_task.note = "(RSS queued - RSS at start) / tasks - mean msgpack argument bytes";
        auto drained = figure("W4 broker RSS after drain", "MiB", start.key, Target::ratio_at_most(1.2));
        drained.note = "2.2 s after the last task settled: the broker trims its heap on its first idle tick";
        measure({&start, &queued, &per_task, &drained}, [&] {
            const double mib = 1024.0 * 1024.0;
            for (unsigned r = 0; r < o_.reps; ++r) {
                progress("W4 memory, repetition " + std::to_string(r + 1) + ": queueing " + with_commas(q) +
                         " echo tasks with no worker");
                Transport transport("tcp", dir_.path());
                zmq::context_t ctx;
                ClusterSpec spec;
                spec.attach_workers = false;
                spec.broker_args = {"--max-queued", std::to_string(q * 2 + 1000)};
                DroverCluster cluster(env_, ctx, transport, spec);
                Client client(ctx, cluster.client_options(q), client_log_);
                (void)cluster.status();  // the broker has served us once
                const auto rss0 = rss_of(cluster.broker_pid());
                Batch batch(client, q);
                std::size_t arg_bytes = 0;
                for (std::size_t i = 0; i < q; ++i) {
                    auto args = echo_args(i);
                    arg_bytes += args.size();
                    batch.submit("echo", std::move(args));
                }
                wait_queued(cluster, q);
                const auto rss1 = rss_of(cluster.broker_pid());
                progress("W4 memory: attaching 2 workers and draining");
                cluster.attach_workers();
                batch.wait_all();
                cluster.wait_settled(k_settle_timeout);
                // The broker gives memory back on its first idle tick (one heartbeat, 1 s).
                std::this_thread::sleep_for(std::chrono::milliseconds(2200));
                const auto rss2 = rss_of(cluster.broker_pid());
                start.samples.push_back(static_cast<double>(rss0) / mib);
                queued.samples.push_back(static_cast<double>(rss1) / mib);
                per_task.samples.push_back((static_cast<double>(rss1) - static_cast<double>(rss0)) /
                                               static_cast<double>(q) -
                                           static_cast<double>(arg_bytes) / static_cast<double>(q));
                drained.samples.push_back(static_cast<double>(rss2) / mib);
            }
        });
    }

    static std::uint64_t rss_of(pid_t pid) {
        const auto rss = rss_bytes(pid);
        if (!rss)
            throw std::runtime_error("cannot read the broker's RSS from /proc/" + std::to_string(pid) + "/status");
        return *rss;
    }

    // Waits until the broker's journal has written and synced all it took:
    // its durable_seq unchanged over 100 ms (--fsync batch syncs every few
    // ms). Throws std::runtime_error if it still moves after 30 s.
    static void wait_journal_settled(DroverCluster& cluster) {
        const auto deadline = SteadyClock::now() + std::chrono::seconds(30);
        auto last = cluster.status()["journal"]["durable_seq"].get<std::uint64_t>();
        while (SteadyClock::now() < deadline) {
            std::this_thread::sleep_for(Millis(100));
            const auto now = cluster.status()["journal"]["durable_seq"].get<std::uint64_t>();
            if (now == last) return;
            last = now;
        }
        throw std::runtime_error("W8 recovery: the journal was still being written 30 s after the tasks were queued");
    }

    // Waits until the broker's STATUS shows `n` tasks queued.
    void wait_queued(DroverCluster& cluster, std::size_t n) {
        std::size_t last = 0;
        auto last_change = SteadyClock::now();
        while (true) {
            const auto now_queued = cluster.status()["queued"].get<std::size_t>();
            if (now_queued >= n) return;
            if (now_queued != last) {
                last = now_queued;
                last_change = SteadyClock::now();
            } else if (SteadyClock::now() - last_change > std::chrono::seconds(30)) {
                throw std::runtime_error("only " + std::to_string(now_queued) + " of " + std::to_string(n) +
                                         " tasks queued at the broker after 30 s without progress");
            }
            std::this_thread::sleep_for(Millis(200));  // STATUS walks every held task
        }
    }

    // Seconds `shell_command` takes under /bin/sh. Throws if it fails.
    static double timed_shell(const std::string& shell_command) {
        const auto t0 = SteadyClock::now();
        if (std::system(shell_command.c_str()) != 0) throw std::runtime_error("failed: " + shell_command);
        return seconds_since(t0);
    }

    // W10: command tasks (/bin/true) on 2 slots, one drover-worker -c 2 over
    // tcp, against xargs -P2 and GNU parallel -j2 over the same lines.
    void commands() {
        const std::size_t n = o_.command_tasks;
        auto xargs = figure("W10 xargs -P2 -n1 /bin/true", "tasks/s");
        xargs.note = with_commas(n) + " lines through xargs -P2 -n1 /bin/true: the machine's spawn rate on 2 slots";
        auto parallel = figure("W10 GNU parallel -j2 /bin/true", "tasks/s");
        auto drover = figure("W10 commands /bin/true 2 slots tcp", "tasks/s", xargs.key, Target::ratio_at_least(0.8));
        drover.note = with_commas(n) + " command tasks true=/bin/true on one drover-worker -c 2 (threads)";
        auto vs_parallel = figure("W10 commands /bin/true 2 slots tcp [vs parallel]", "tasks/s", parallel.key,
                                  Target::ratio_at_least(4));
        const bool have_parallel = std::system("parallel --version >/dev/null 2>&1") == 0;
        measure({&xargs, &drover}, [&] {
            const auto lines = dir_.file("w10.lines");
            {
                std::ofstream out(lines);
                for (std::size_t i = 0; i < n; ++i) out << i << "\n";
            }
            Transport transport("tcp", dir_.path());
            zmq::context_t ctx;
            DroverEnv env = env_;
            env.worker_args.insert(env.worker_args.end(), {"--command", "true=/bin/true"});
            ClusterSpec spec;
            spec.pool = "threads";
            spec.workers = 2;
            progress("W10: a drover-worker -c 2 --command true=/bin/true; " + std::to_string(o_.reps) + " x " +
                     with_commas(n) + " tasks, each next to xargs" + (have_parallel ? " and GNU parallel" : ""));
            DroverCluster cluster(env, ctx, transport, spec);
            Client client(ctx, cluster.client_options(o_.window), client_log_);
            const auto no_args = [](std::size_t) { return pack_args(); };
            (void)run_tasks(client, "true", no_args, 200, o_.window);
            cluster.wait_settled(k_settle_timeout);
            for (unsigned r = 0; r < o_.reps; ++r) {
                const auto count = static_cast<double>(n);
                xargs.samples.push_back(count / timed_shell("xargs -P2 -n1 /bin/true < " + lines));
                if (have_parallel)
                    parallel.samples.push_back(
                        count / timed_shell("parallel --will-cite -j2 /bin/true < " + lines + " > /dev/null"));
                const double rate = count / run_tasks(client, "true", no_args, n, o_.window);
                cluster.wait_settled(k_settle_timeout);
                drover.samples.push_back(rate);
                vs_parallel.samples.push_back(rate);
            }
        });
        if (!have_parallel) {
            progress("W10: GNU parallel is not installed (Debian package parallel): its rows are skipped");
            return;
        }
        report_.add(parallel);
        report_.add(vs_parallel);
    }

    // W8: W1 over tcp with the broker's journal (--journal, --fsync batch;
    // and --fsync always, printed without a target), against a W1 measured
    // next to it in each repetition, as W5 is.
    void journaled() {
        auto w1 = figure("W1 throughput tcp [next to W8]", "tasks/s");
        w1.note = "W1 without a journal, each repetition right before W8's: the baseline of the next rows";
        auto batch = figure("W8 journal fsync batch tcp", "tasks/s", w1.key, Target::ratio_at_least(0.5));
        auto always = figure("W8 journal fsync always tcp", "tasks/s", w1.key);
        measure({&w1, &batch, &always}, [&] {
            Transport transport("tcp", dir_.path());
            zmq::context_t ctx;
            const auto rate = [&](Client& c, DroverCluster& cluster) {
                const double r = static_cast<double>(o_.tasks) / run_tasks(c, "echo", echo_args, o_.tasks, o_.window);
                cluster.wait_settled(k_settle_timeout);
                return r;
            };
            const auto warm = [&](Client& c, DroverCluster& cluster) {
                (void)run_tasks(c, "echo", echo_args, std::min<std::size_t>(o_.tasks / 10 + 1, 20000), o_.window);
                cluster.wait_settled(k_settle_timeout);
            };
            progress("W8: starting three clusters: no journal, --fsync batch, --fsync always");
            DroverCluster plain(env_, ctx, transport, {});
            Client plain_client(ctx, plain.client_options(o_.window), client_log_);
            ClusterSpec spec;
            spec.broker_args = {"--journal", dir_.file("journal-batch"), "--fsync", "batch"};
            DroverCluster batched(env_, ctx, transport, spec);
            Client batch_client(ctx, batched.client_options(o_.window), client_log_);
            spec.broker_args = {"--journal", dir_.file("journal-always"), "--fsync", "always"};
            DroverCluster synced(env_, ctx, transport, spec);
            Client always_client(ctx, synced.client_options(o_.window), client_log_);
            warm(plain_client, plain);
            warm(batch_client, batched);
            warm(always_client, synced);
            progress("W8: " + std::to_string(o_.reps) + " x " + with_commas(o_.tasks) + " echo tasks on each");
            for (unsigned r = 0; r < o_.reps; ++r) {
                w1.samples.push_back(rate(plain_client, plain));
                batch.samples.push_back(rate(batch_client, batched));
                always.samples.push_back(rate(always_client, synced));
            }
        });
    }

    // W9: `drover-producer submit` of echo task lines from a file, results
    // to a file, from its start to its exit, against W1 through the C++ API
    // on the same cluster, measured right before it in each repetition.
    void shell_edge() {
        auto w1 = figure("W1 throughput tcp [next to W9]", "tasks/s");
        w1.note = "W1 through the C++ API, each repetition right before W9's: the baseline of the next row";
        auto w9 = figure("W9 drover-producer submit tcp", "tasks/s", w1.key, Target::ratio_at_least(0.6));
        w9.note = "JSON lines from a file to a file, the producer's start and exit included";
        measure({&w1, &w9}, [&] {
            Transport transport("tcp", dir_.path());
            zmq::context_t ctx;
            progress("W9: starting drover-broker and 2 drover-worker --pool solo");
            DroverCluster cluster(env_, ctx, transport, {});
            const auto options = cluster.client_options(o_.window);
            Client client(ctx, options, client_log_);
            const auto lines = dir_.file("w9-lines.jsonl");
            {
                std::ofstream f(lines);
                for (std::size_t i = 0; i < o_.tasks; ++i) f << R"({"task":"echo","args":[)" << i << "]}\n";
            }
            (void)run_tasks(client, "echo", echo_args, std::min<std::size_t>(o_.tasks / 10 + 1, 20000), o_.window);
            cluster.wait_settled(k_settle_timeout);
            progress("W9: " + std::to_string(o_.reps) + " x " + with_commas(o_.tasks) +
                     " echo tasks, through the C++ API then drover-producer submit");
            for (unsigned r = 0; r < o_.reps; ++r) {
                w1.samples.push_back(static_cast<double>(o_.tasks) /
                                     run_tasks(client, "echo", echo_args, o_.tasks, o_.window));
                cluster.wait_settled(k_settle_timeout);
                w9.samples.push_back(static_cast<double>(o_.tasks) / submit_file(options.broker, lines));
                cluster.wait_settled(k_settle_timeout);
            }
        });
    }

    // Runs `drover-producer submit` on the task lines in `lines`. Returns its
    // seconds from start to exit. Throws: std::runtime_error unless it
    // printed one ok result per line.
    double submit_file(const std::string& broker, const std::string& lines) {
        const auto out = dir_.file("w9-out.jsonl");
        const auto t0 = SteadyClock::now();
        Child producer({"/bin/sh", "-c", "exec \"$0\" --broker \"$1\" --window \"$2\" submit < \"$3\" > \"$4\"",
                        o_.producer_exe, broker, std::to_string(o_.window), lines, out},
                       dir_.file("drover.log"));
        while (producer.running()) {
            if (SteadyClock::now() - t0 > std::chrono::minutes(5))
                throw std::runtime_error("W9: drover-producer submit still running after 5 minutes");
            std::this_thread::sleep_for(Millis(1));
        }
        const double seconds = seconds_since(t0);
        std::ifstream f(out);
        std::size_t n = 0, ok = 0;
        for (std::string line; std::getline(f, line); ++n) ok += line.find(R"("status":"ok")") != std::string::npos;
        if (n != o_.tasks || ok != o_.tasks)
            throw std::runtime_error("W9: drover-producer submit printed " + std::to_string(n) + " lines, " +
                                     std::to_string(ok) + " ok, of " + std::to_string(o_.tasks) + " tasks");
        return seconds;
    }

    // W8 recovery: queue_tasks echo tasks queued at a broker with a journal
    // (--fsync batch) and no worker; its journal's bytes per task; kill -9;
    // the time a broker started on that journal takes until it answers
    // STATUS (it recovers before it binds), and the recovery it reports.
    void recovery() {
        const auto q = o_.queue_tasks;
        auto serving = figure("W8 recovery of " + with_commas(q) + " queued tasks: start to serving", "ms", {},
                              Target::value_at_most(5000));
        serving.note = "from the broker's start to its first STATUS answer, the tasks rebuilt from the journal";
        auto rebuilt = figure("W8 recovery of " + with_commas(q) + " queued tasks: journal read", "ms");
        rebuilt.note = "recovery_ms in the broker's STATUS: reading the journal and queueing the tasks";
        auto per_task = figure("W8 journal bytes per queued task", "B/task");
        per_task.note = "the journal's bytes on disk / tasks queued (echo tasks, 8-byte ids)";
        measure({&serving, &rebuilt, &per_task}, [&] {
            for (unsigned r = 0; r < o_.reps; ++r) {
                const std::string journal = dir_.file("journal-recovery-" + std::to_string(r));
                Transport transport("tcp", dir_.path());
                zmq::context_t ctx;
                ClusterSpec spec;
                spec.attach_workers = false;
                spec.broker_args = {"--journal", journal, "--max-queued", std::to_string(q * 2 + 1000)};
                progress("W8 recovery, repetition " + std::to_string(r + 1) + ": queueing " + with_commas(q) +
                         " echo tasks with no worker");
                auto first = std::make_unique<DroverCluster>(env_, ctx, transport, spec);
                {
                    Client client(ctx, first->client_options(q), client_log_);
                    Batch batch(client, q);
                    for (std::size_t i = 0; i < q; ++i) batch.submit("echo", echo_args(i));
                    wait_queued(*first, q);
                    // Queued is not yet on disk: a broker killed now loses the
                    // tasks of its last commits (a live producer sends them
                    // again; ACCEPTED waits for the disk). Kill it once its
                    // durable record stops moving.
                    wait_journal_settled(*first);
                    const auto bytes = first->status()["journal"]["bytes"].get<double>();
                    per_task.samples.push_back(bytes / static_cast<double>(q));
                    ::kill(first->broker_pid(), SIGKILL);  // before the client cancels its tasks
                    first.reset();
                }
                progress("W8 recovery: starting a broker on that journal");
                const auto t0 = SteadyClock::now();
                DroverCluster second(env_, ctx, transport, spec);
                const auto status = second.status();
                serving.samples.push_back(seconds_since(t0) * 1000.0);
                const auto recovered = status["journal"]["recovered"].get<std::size_t>();
                if (recovered != q)
                    throw std::runtime_error("W8 recovery: the broker recovered " + std::to_string(recovered) +
                                             " tasks of " + std::to_string(q));
                rebuilt.samples.push_back(status["journal"]["recovery_ms"].get<double>());
            }
        });
    }

    // W5: W1 with many solo worker processes over tcp, against a W1
    // measured next to it: each repetition runs W1 on a
    // cluster of 2 workers, then the same on 200, so that both sides of the
    // ratio see the same load of the shared machine (W1's own row is measured
    // a minute or more earlier; one run read 0.68 against it where the
    // alternated pairs read 0.82-0.97).
    void many_workers() {
        const unsigned m = o_.many_workers;
        auto w1 = figure("W1 throughput tcp [next to W5]", "tasks/s");
        w1.note = "W1 on 2 solo workers, each repetition right before W5's: the baseline of the next row";
        auto f = figure("W5 " + std::to_string(m) + " workers tcp", "tasks/s", w1.key, Target::ratio_at_least(0.8));
        // The same figures against W1's own row, measured earlier in the run.
        auto f_w1 = figure("W5 " + std::to_string(m) + " workers tcp / W1", "tasks/s", "W1 throughput tcp");
        measure({&w1, &f, &f_w1}, [&] {
            Transport transport("tcp", dir_.path());
            zmq::context_t ctx;
            progress("W5: starting drover-broker and 2 drover-worker --pool solo (W1 next to W5)");
            DroverCluster two(env_, ctx, transport, {});
            Client two_client(ctx, two.client_options(o_.window), client_log_);
            (void)run_tasks(two_client, "echo", echo_args, std::min<std::size_t>(o_.tasks / 10 + 1, 20000), o_.window);
            two.wait_settled(k_settle_timeout);

            progress("W5: starting drover-broker and " + std::to_string(m) + " drover-worker --pool solo");
            ClusterSpec spec;
            spec.workers = m;
            const auto t0 = SteadyClock::now();
            DroverCluster cluster(env_, ctx, transport, spec);
            char took[32];
            std::snprintf(took, sizeof took, "%.1f", seconds_since(t0));
            progress("W5: " + std::to_string(m) + " workers registered in " + took + " s; " + std::to_string(o_.reps) +
                     " x " + with_commas(o_.tasks) + " echo tasks, each after the same on 2");
            Client client(ctx, cluster.client_options(o_.window), client_log_);
            // A whole repetition: every worker connects to the sink, measures
            // its task time and grows its prefetch, and grows its heap for full
            // batches before the clock starts. With less, the first repetition
            // measured about half of the later ones (200 processes faulting in
            // their pages for the first large batches).
            (void)run_tasks(client, "echo", echo_args, std::max<std::size_t>(m * 32, o_.tasks), o_.window);
            const auto before = cluster.wait_settled(k_settle_timeout);
            const auto rate = [&](Client& c) {
                return static_cast<double>(o_.tasks) / run_tasks(c, "echo", echo_args, o_.tasks, o_.window);
            };
            for (unsigned r = 0; r < o_.reps; ++r) {
                w1.samples.push_back(rate(two_client));
                two.wait_settled(k_settle_timeout);
                f.samples.push_back(rate(client));
                f_w1.samples.push_back(f.samples.back());
                cluster.wait_settled(k_settle_timeout);
            }
            progress_batches("W5", before, cluster.status());
        });
    }

    bool write_json(double elapsed) {
        nlohmann::json options{{"reps", o_.reps},
                               {"tasks", o_.tasks},
                               {"baseline_tasks", o_.baseline_tasks},
                               {"latency_rounds", o_.latency_rounds},
                               {"seed_tasks", o_.seed_tasks},
                               {"seed_n", o_.seed_n},
                               {"queue_tasks", o_.queue_tasks},
                               {"many_workers", o_.many_workers},
                               {"big_bytes", o_.big_bytes},
                               {"big_tasks", o_.big_tasks},
                               {"window", o_.window},
                               {"big_window", o_.big_window},
                               {"transports", o_.transports},
                               {"only", o_.only},
                               {"worker_args", o_.worker_args},
                               {"broker_exe", o_.broker_exe},
                               {"worker_exe", o_.worker_exe},
                               {"producer_exe", o_.producer_exe},
                               {"smoke", o_.smoke}};
        utsname u{};
        ::uname(&u);
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        nlohmann::json doc{{"benchmark", "drover-bench"},
                           {"host", host},
                           {"kernel", std::string(u.sysname) + " " + u.release},
                           {"cores", std::thread::hardware_concurrency()},
                           {"elapsed_s", elapsed},
                           {"load_average_at_start", load_at_start_},
                           {"load_average_at_end", load_at_end_},
                           {"options", options},
                           {"figures", report_.to_json()}};
        std::ofstream out(o_.json_path);
        out << doc.dump(2) << "\n";
        if (out) return true;
        std::fprintf(stderr, "drover-bench: cannot write %s\n", o_.json_path.c_str());
        return false;
    }

    BenchOptions o_;
    TempDir dir_;
    DroverEnv env_;
    BaselineEnv baseline_env_;
    Report report_;
    Logger client_log_;  // the in-process Client's warnings (reconnects, drops) on stderr
    SteadyClock::time_point start_;
    std::atomic<SteadyClock::rep> last_progress_{0};
    std::atomic<bool> finished_{false};
    std::string load_at_start_, load_at_end_;
};

}  // namespace

void apply_smoke_sizes(BenchOptions& o) {
    o.reps = 1;
    o.tasks = 5'000;
    o.baseline_tasks = 5'000;
    o.latency_rounds = 200;
    o.seed_tasks = 4;
    o.seed_n = 200'000;
    o.queue_tasks = 20'000;
    o.many_workers = 4;
    o.big_tasks = 200;
    o.command_tasks = 200;
}

int run_bench(BenchOptions options) {
    Run run(std::move(options));
    return run.execute();
}

}  // namespace drover::bench
