// The drover-producer and drover-sink command lines.
#include "drover/programs/producer_main.hpp"
#include "process.hpp"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include "cli.hpp"
#include "drover/client/client.hpp"
#include "drover/client/json_lines.hpp"
#include "drover/client/sink.hpp"
#include "drover/client/status.hpp"
#include "drover/cluster/local_cluster.hpp"
#include "internal/proof.hpp"
#include "line_reader.hpp"
#include "producer_map.hpp"
#include "security_cli.hpp"

namespace drover {

namespace {

// "Progress: 1200/5000 done, 3 not ok, 950/s" on stderr, for runs longer than
// a second when stderr is a terminal.
class Progress {
public:
    explicit Progress(const std::atomic<std::size_t>& total, const std::atomic<std::size_t>& done,
                      const std::atomic<std::size_t>& failed)
        : total_(total), done_(done), failed_(failed) {
        if (!::isatty(STDERR_FILENO)) return;
        thread_ = std::thread([this] {
            const auto start = Clock::now();
            std::unique_lock lock(mutex_);
            while (!finished_) {
                wake_.wait_for(lock, Millis(250));
                const auto secs = std::chrono::duration<double>(Clock::now() - start).count();
                if (finished_ || secs < 1.0) continue;
                std::fprintf(stderr, "\r[drover] %zu/%zu done, %zu not ok, %.0f tasks/s   ", done_.load(),
                             total_.load(), failed_.load(), static_cast<double>(done_.load()) / secs);
                shown_ = true;
            }
            if (shown_) std::fprintf(stderr, "\n");
        });
    }
    ~Progress() {
        {
            std::lock_guard lock(mutex_);
            finished_ = true;
        }
        wake_.notify_all();
        if (thread_.joinable()) thread_.join();
    }

private:
    const std::atomic<std::size_t>& total_;
    const std::atomic<std::size_t>& done_;
    const std::atomic<std::size_t>& failed_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool finished_ = false;
    bool shown_ = false;
    std::thread thread_;
};

struct Settings {
    std::string broker;
    unsigned local = 0;
    std::string pool = "threads";
    bool inline_run = false;
    std::string worker_exe;
    ClientOptions client;
    std::int64_t heartbeat_ms = 1000;
    std::int64_t queue_full_wait_ms = 30000;
    std::uint32_t timeout_ms = 0;
    bool retry_on_error = false;
    std::size_t wait_workers = 0;
    int wait_timeout_ms = 30000;
    int connect_timeout_ms = 10000;  // 0: wait for the broker for ever
    bool timing = false;
    std::string log_level;
    std::string reply_to;  // submit
    MapOptions map;
    SecurityOptions security;
};

// --timing: "timing: tasks=N wall_ms=T" on stderr.
void print_timing(std::size_t tasks, Clock::time_point start) {
    std::cerr << "timing: tasks=" << tasks
              << " wall_ms=" << std::chrono::duration<double, std::milli>(Clock::now() - start).count() << "\n";
}

// Says on stderr how many outcomes the client dropped for a wrong token.
void report_forged(const Client& client) {
    if (const auto n = client.forged_dropped())
        std::cerr << "drover-producer: dropped " << n << " forged outcomes (without their attempt's token)\n";
}

// After a stop request: CANCEL what the broker still queues of ours, and
// give it time to leave (the caller then ends the process: pending
// callbacks refer to its frame).
void cancel_unfinished(Client& client) {
    std::cerr << "drover-producer: interrupted: cancelling " << client.unfinished() << " unfinished tasks\n";
    client.cancel_all();
    std::this_thread::sleep_for(Millis(200));  // let CANCEL reach the broker
}

// What `submit` shares with the client's callbacks (on its I/O thread):
// the counters Progress shows, and stdout. Lines are written in batches of
// k_batch bytes, and each at once while the input is waited for.
struct SubmitOutput {
    static constexpr std::size_t k_batch = 64 * 1024;
    std::atomic<std::size_t> total{0}, done{0}, failed{0};
    std::mutex mutex;
    std::string buffer;
    bool waiting = false;  // for input

    // Counts and prints the outcome of a task whose line had the id `id_json`.
    void finished(const Result& r, std::string_view id_json) {
        if (!r.ok() && !r.accepted_only) ++failed;
        ++done;
        std::lock_guard lock(mutex);
        append_result_line(buffer, r, id_json);
        end_line();
    }
    void print_rejected(std::size_t line_no, std::string_view error, std::string_view id_json) {
        std::lock_guard lock(mutex);
        append_rejected_line(buffer, line_no, error, id_json);
        end_line();
    }
    // While the input is waited for, every line is written at once.
    void set_waiting(bool w) {
        std::lock_guard lock(mutex);
        waiting = w;
        if (w) write_out();
    }
    void flush() {
        std::lock_guard lock(mutex);
        write_out();
    }

private:
    void end_line() {
        buffer.push_back('\n');
        if (waiting || buffer.size() >= k_batch) write_out();
    }
    void write_out() {
        if (buffer.empty()) return;
        std::fwrite(buffer.data(), 1, buffer.size(), stdout);
        std::fflush(stdout);
        buffer.clear();
    }
};

// Prints why input line `line_no` is no task, as its outcome and on stderr.
void reject_line(SubmitOutput& out, std::size_t line_no, const std::string& error) {
    ++out.failed;
    out.print_rejected(line_no, error, {});
    std::cerr << "drover-producer: line " << line_no << ": " << error << "\n";
}

// Submits the task of input line `line_no`, or prints why it cannot go.
void submit_line(Client& client, const Settings& s, const std::string& line, std::size_t line_no, SubmitOutput& out) {
    std::string error;
    auto t = parse_task_line(line, error);
    if (!t) {
        reject_line(out, line_no, error);
        return;
    }
    if (t->options.timeout_ms == 0) t->options.timeout_ms = s.timeout_ms;
    if (s.retry_on_error) t->options.retry_on_error = true;
    t->options.reply_to = s.reply_to;
    // The other sink sees only wire ids: it gets the line's own id (a
    // number as its JSON text, "42"), so that its reader can match it.
    if (!s.reply_to.empty()) t->options.id = t->id_wire;
    ++out.total;
    try {
        // Without an id, a callback that fits in std::function without an allocation.
        if (t->id_json.empty())
            client.submit_packed(
                t->task, std::move(t->args), [&out](Result&& r) { out.finished(r, {}); }, t->options);
        else
            client.submit_packed(
                t->task, std::move(t->args), [&out, id = t->id_json](Result&& r) { out.finished(r, id); }, t->options);
    } catch (const std::invalid_argument& e) {
        --out.total;
        ++out.failed;
        out.print_rejected(line_no, e.what(), t->id_json);
        std::cerr << "drover-producer: line " << line_no << ": " << e.what() << "\n";
    }
}

int run_submit(Client& client, const Settings& s, const StopSource& stop) {
    SubmitOutput out;
    Progress progress(out.total, out.done, out.failed);
    const auto start = Clock::now();
    std::string line;
    std::size_t line_no = 0;
    LineReader input(STDIN_FILENO);
    input.on_wait = [&out](bool waiting) { out.set_waiting(waiting); };
    bool too_long = false;
    while (input.next(line, too_long, stop)) {
        ++line_no;
        if (too_long) {
            reject_line(out, line_no, "longer than " + std::to_string(k_max_line_bytes >> 20) + " MiB: not a task");
            continue;
        }
        if (line.find_first_not_of(" \t\r") != std::string::npos) submit_line(client, s, line, line_no, out);
    }
    // Woken by the last outcome; a stop request is seen, and the outcomes so
    // far are written, within 50 ms.
    while (!stop.stop_requested() && !client.wait_all_for(Millis(50))) out.flush();
    if (stop.stop_requested()) {
        cancel_unfinished(client);
        out.flush();
        std::_Exit(130);
    }
    out.flush();
    report_forged(client);
    if (s.timing) print_timing(out.total.load(), start);
    return out.failed.load() == 0 ? 0 : 1;
}

// --broker, --local, --inline and what goes with them: where the tasks run.
void add_where_options(CLI::App& app, Settings& s) {
    auto* where = app.add_option_group("where the work runs");
    where->add_option("--broker", s.broker, "the broker's frontend endpoint (default tcp://127.0.0.1:5555)");
    where->add_option("--local", s.local, "start an embedded broker and N workers instead of --broker")
        ->check(CLI::Range(1u, 4096u));
    where->add_flag("--inline", s.inline_run, "run map tasks one by one in this thread (no broker)");
    where->require_option(0, 1);
    app.add_option("--pool", s.pool, "with --local: threads | processes")
        ->capture_default_str()
        ->check(CLI::IsMember({"threads", "processes"}));
    app.add_option("--worker-exe", s.worker_exe, "with --local --pool processes: the worker program");
}

// The client's flags, and the defaults of the run's tasks.
void add_client_options(CLI::App& app, Settings& s) {
    app.add_option("--sink", s.client.sink, "where to bind the result sink (default: an ephemeral port)");
    app.add_option("--sink-advertise", s.client.sink_advertise, "the sink endpoint given to workers as reply_to");
    app.add_option("--window", s.client.window, "unfinished tasks before submitting pauses")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{1}, std::size_t{10'000'000}));
    app.add_option("--queue-full-wait-ms", s.queue_full_wait_ms,
                   "how long a task the broker refuses with queue_full is held back and sent again before it ends "
                   "rejected")
        ->capture_default_str()
        ->check(CLI::Range(std::int64_t{0}, std::int64_t{86'400'000}));
    app.add_option("--max-attempts", s.client.max_attempts, "default attempts for a task whose worker dies")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000u));
    app.add_option("--timeout-ms", s.timeout_ms, "default task timeout (0: none)")->capture_default_str();
    app.add_flag("--retry-on-error", s.retry_on_error,
                 "retry tasks that fail with an error too (exponential back-off, up to --max-attempts)");
    app.add_option("--heartbeat-ms", s.heartbeat_ms, "heartbeat period")
        ->capture_default_str()
        ->check(CLI::Range(10, 600000));
    app.add_option("--liveness", s.client.liveness, "missed heartbeats before the broker is presumed gone")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    app.add_option("--connect-timeout-ms,--connect-timeout", s.connect_timeout_ms,
                   "give up (exit 1) if no broker answers at --broker within this (0: wait for ever)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--wait-workers", s.wait_workers, "wait until the broker has N workers before submitting");
    app.add_option("--wait-timeout-ms", s.wait_timeout_ms, "how long --wait-workers waits")->capture_default_str();
    app.add_flag("--timing", s.timing, "print 'timing: tasks=N wall_ms=T' on stderr at the end");
    add_log_level_option(app, s.log_level, " (default warn)");
    add_max_message_bytes_option(app, s.client.max_message_bytes, "largest message sent or accepted");
    add_security_options(app, s.security, Role::producer);
}

// The ARGs given to `map`: what `app` and `map` (both with allow_extras)
// left unparsed. Throws: CLI::ExtrasError for a word that begins with "--"
// (a mistyped option), and for any word left without `map`.
std::vector<std::string> words_given(const CLI::App& app, const CLI::App& map) {
    std::vector<std::string> words = app.remaining(/*recurse=*/true);
    if (!map && !words.empty()) throw CLI::ExtrasError(words);
    for (const auto& w : words)
        if (w.size() > 2 && w.compare(0, 2, "--") == 0) throw CLI::ExtrasError({w});
    return words;
}

// map's arguments and options.
void add_map_options(CLI::App& map, MapOptions& m) {
    map.add_option("task", m.task, "task name")->required();
    // The ARGs are taken verbatim from what is left after the options: as a
    // positional vector, CLI11 would split an ARG written [a,b] into two.
    map.allow_extras();
    map.footer(
        "ARGS: one task per ARG, the ARG its argument: a string as written (a shell's words are strings; a "
        "task with an int, double or bool parameter converts \"42\", \"1e6\", \"true\"), or JSON if it "
        "begins with [ { or \" (map sum '[1,2]', map hello '\"007\"'). A lone - reads tasks from stdin: one a "
        "line, its words (split on blanks, '...' and \"...\" quoting) the task's arguments. An ARG that begins "
        "with -- is taken for a mistyped option: write it as JSON ('\"--x\"').");
    map.add_option("--args-from", m.args_from, "read the tasks from this file, one a line, as for -")
        ->check(CLI::ExistingFile);
    map.add_option("--joblog", m.joblog,
                   "write a JSON line per finished task to FILE: id, args, status, worker, host, start, run_ms, "
                   "exit, attempts, error");
    map.add_flag("--resume", m.resume,
                 "with --joblog: skip the tasks the joblog has as ok (same id, i.e. position or line, and same "
                 "args) and append to it");
    map.add_flag("--bar", m.bar, "show progress (done/total, rate, ETA) on stderr, a line a second if not a terminal");
    map.add_flag("--halt-on-error", m.halt_on_error,
                 "stop submitting after the first failure: queued tasks are cancelled, running ones end and are "
                 "reported; exit 1");
}

// Throws: std::invalid_argument unless --reply-to names a sink with its key.
void check_reply_to(const std::string& reply_to) {
    const auto address = split_sink_address(reply_to);
    check_endpoint(split_keyed_endpoint(address.reply_to).endpoint, "--reply-to");
    if (address.key.empty())
        throw std::invalid_argument(std::string("--reply-to ") + reply_to +
                                    (address.malformed_key ? ": its secret= is not 32 hex digits"
                                                           : ": no sink key: give the address drover-sink printed, "
                                                             "with its ?secret=HEX (it proves the results that reach "
                                                             "that sink)"));
}

// Fills in --broker's default and checks what the parser cannot. Throws:
// std::invalid_argument with the reason.
void check_settings(Settings& s, bool map) {
    if (s.broker.empty() && s.local == 0 && !s.inline_run) s.broker = "tcp://127.0.0.1:5555";
    if (!s.broker.empty()) check_endpoint(s.broker, "--broker", /*inproc_ok=*/false);
    if (!s.client.sink.empty()) check_endpoint(s.client.sink, "--sink");
    if (!s.reply_to.empty()) check_reply_to(s.reply_to);
    if (s.inline_run && !map) throw std::invalid_argument("--inline: only map runs inline");
    if (map) check_map_options(s.map);
}

// --local: a broker and workers in (or under) this process, the client's
// broker and sink set to theirs; without it, nullptr and --broker.
std::unique_ptr<LocalCluster> start_local(zmq::context_t& ctx, Settings& s, const Registry& registry,
                                          const Logger& log) {
    if (s.local == 0) {
        s.client.broker = s.broker;
        return nullptr;
    }
    LocalClusterOptions lo;
    lo.workers = s.local;
    lo.pool = s.pool;
    lo.worker_exe = s.worker_exe;
    auto cluster = std::make_unique<LocalCluster>(ctx, registry, lo, log);
    s.client.broker = cluster->frontend();
    if (s.client.sink.empty()) s.client.sink = cluster->sink_endpoint();
    return cluster;
}

// --wait-workers timed out: says which, no broker there or a broker with too few workers.
void report_missing_workers(zmq::context_t& ctx, const Settings& s) {
    const auto status = fetch_status(ctx, s.client.broker, Millis(1000), s.client.security.get());
    if (!status)
        std::cerr << "drover-producer: no answer from a broker at " << s.client.broker << " in " << s.wait_timeout_ms
                  << " ms (is it running there, and, with --security, does this producer have the fleet's keys?)\n";
    else
        std::cerr << "drover-producer: " << (*status)["workers"].size() << " of " << s.wait_workers << " workers at "
                  << s.client.broker << " after " << s.wait_timeout_ms << " ms\n";
}

// Runs `submit` or `map` through a Client. Returns the exit status. Throws:
// SecurityError, zmq::error_t (a sink that cannot be bound), std::exception.
int run_client(Settings& s, bool map, const Registry& registry) {
    auto log = make_logger("producer", s.log_level.empty() && !std::getenv("SPDLOG_LEVEL") ? "warn" : s.log_level);
    StopSource stop;
    stop_on_signals(stop);
    s.client.security = make_security(s.security, Role::producer, log);
    if (s.client.security) s.client.security->reload_on_sighup();
    // A --reply-to sink without a key is taken to use this producer's key pair (as drover-sink does by default).
    if (!s.reply_to.empty()) {
        const auto address = split_sink_address(s.reply_to);
        s.reply_to = sink_address(with_sink_key(address.reply_to, s.client.security.get()), address.key);
    }
    zmq::context_t ctx;
    const auto cluster = start_local(ctx, s, registry, log);
    s.client.heartbeat = Millis(s.heartbeat_ms);
    s.client.queue_full_wait = Millis(s.queue_full_wait_ms);
    Client client(ctx, s.client, log);
    if (!cluster && s.connect_timeout_ms > 0 && !client.wait_connected(Millis(s.connect_timeout_ms))) {
        std::cerr << "drover-producer: no broker answered at " << s.client.broker << " in " << s.connect_timeout_ms
                  << " ms (is it running there, and reachable? with --security, does this producer have the "
                     "fleet's keys, and is its key on the broker's allow-list?)\n";
        return 1;
    }
    if (s.wait_workers > 0 && !client.wait_for_workers(s.wait_workers, Millis(s.wait_timeout_ms))) {
        report_missing_workers(ctx, s);
        return 1;
    }
    return map ? run_map(client, s.map, stop) : run_submit(client, s, stop);
}

}  // namespace

int producer_main(int argc, char** argv, const Registry& registry) {
    tune_allocator();
    Settings s;
    CLI::App app{
        "drover-producer: submits tasks to a drover broker and prints their results.\n"
        "  submit           task JSON lines on stdin -> result JSON lines on stdout\n"
        "  map TASK ARG...  runs TASK once per ARG (a string; JSON if it begins with [ { or \"), results in order"};
    app.require_subcommand(1);
    app.fallthrough();   // flags such as --broker and --security may follow the subcommand too
    app.allow_extras();  // map's ARGs, taken verbatim (words_given)
    add_where_options(app, s);
    add_client_options(app, s);
    add_version_flag(app, "drover-producer");
    auto* submit = app.add_subcommand("submit", "read task JSON lines from stdin, write result JSON lines to stdout");
    submit->add_option("--reply-to", s.reply_to, "send results to this sink (e.g. a drover-sink) instead");
    auto* map = app.add_subcommand("map", "run TASK once per ARG and print the results in order");
    add_map_options(*map, s.map);
    try {
        app.parse(argc, argv);
        s.map.args = words_given(app, *map);
        check_settings(s, static_cast<bool>(*map));
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    } catch (const std::invalid_argument& e) {
        std::cerr << "drover-producer: " << e.what() << "\n";
        return 2;
    }
    s.map.timing = s.timing;
    s.map.timeout_ms = s.timeout_ms;
    s.map.retry_on_error = s.retry_on_error;
    if (s.inline_run) return run_map_inline(s.map, registry);
    try {
        return run_client(s, static_cast<bool>(*map), registry);
    } catch (const SecurityError& e) {
        std::cerr << "drover-producer: " << e.what() << "\n";
        return 2;
    } catch (const zmq::error_t& e) {
        std::cerr << "drover-producer: " << e.what() << " (check --sink and --broker)\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "drover-producer: " << e.what() << "\n";
        return 1;
    }
}

namespace {

// Writes `text` to `path` through a temporary file, readable by its owner
// only (it holds a sink's key). Throws: std::runtime_error.
void write_private_file(const std::string& path, const std::string& text) {
    const auto tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("cannot write '" + tmp + "': " + std::strerror(errno));
    const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0)
        throw std::runtime_error("cannot write '" + path + "': " + std::strerror(errno));
}

// The sink key kept in `path` as hex, made and written there if missing.
// Throws: std::runtime_error for a file that holds something else.
std::string load_or_create_secret(const std::string& path) {
    std::ifstream in(path);
    if (!in) {
        const auto key = random_secret();
        write_private_file(path, to_hex_text(key) + "\n");
        return key;
    }
    std::string text;
    std::getline(in, text);
    auto key = from_hex_text(text);
    if (key.size() != k_secret_bytes)
        throw std::runtime_error("--secret-file " + path + " does not hold a sink key (" +
                                 std::to_string(2 * k_secret_bytes) + " hex digits); remove it to make a new one");
    return key;
}

}  // namespace

int sink_main(int argc, char** argv) {
    tune_allocator();
    SinkOptions options;
    std::size_t expect = 0;
    std::string log_level, endpoint_file, secret_file;
    CLI::App app{
        "drover-sink: collects the results of tasks submitted with --reply-to ADDRESS,\n"
        "writes them to stdout as JSON lines, and settles them with the broker.\n"
        "ADDRESS is what it prints on stderr at start (and writes to --endpoint-file):\n"
        "its endpoint with its key (?secret=HEX), without which no task can reach it."};
    app.add_option("--bind", options.bind, "endpoint workers push results to")->capture_default_str();
    app.add_option("--broker", options.broker, "the broker's frontend endpoint")->capture_default_str();
    app.add_option("--expect", expect, "exit after N results (0: run until stopped)")->capture_default_str();
    app.add_option("--endpoint-file", endpoint_file,
                   "write the sink's address (endpoint and key) to this file (mode 0600)");
    app.add_option("--secret-file", secret_file,
                   "keep the sink's key in this file (created, mode 0600, if missing), so that tasks submitted to "
                   "an earlier run reach this one; default: a new key every run");
    add_log_level_option(app, log_level);
    add_max_message_bytes_option(app, options.max_message_bytes);
    add_version_flag(app, "drover-sink");
    SecurityOptions security;
    add_security_options(app, security, Role::sink);
    try {
        app.parse(argc, argv);
        check_endpoint(options.bind, "--bind", /*inproc_ok=*/false);
        check_endpoint(options.broker, "--broker", /*inproc_ok=*/false);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    } catch (const std::invalid_argument& e) {
        std::cerr << "drover-sink: " << e.what() << "\n";
        return 2;
    }
    try {
        auto log = make_logger("sink", log_level);
        StopSource stop;
        stop_on_signals(stop);
        ignore_hangup();
        options.security = make_security(security, Role::sink, log);
        if (options.security) options.security->reload_on_sighup();
        if (!secret_file.empty()) options.key = load_or_create_secret(secret_file);
        zmq::context_t ctx;
        Sink sink(ctx, options, log);
        if (!endpoint_file.empty()) write_private_file(endpoint_file, sink.endpoint() + "\n");
        std::cerr << "drover-sink: submit with --reply-to '" << sink.endpoint() << "'\n";
        sink.run(stop, expect, [](proto::Outcome&& o) {
            std::cout << to_line(outcome_to_json(o)) << "\n" << std::flush;
        });
        return 0;
    } catch (const SecurityError& e) {
        std::cerr << "drover-sink: " << e.what() << "\n";
        return 2;
    } catch (const zmq::error_t& e) {
        std::cerr << "drover-sink: cannot bind --bind " << options.bind << ": " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "drover-sink: " << e.what() << "\n";
        return 1;
    }
}

}  // namespace drover
