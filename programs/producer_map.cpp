// `drover-producer map`: input, ordered output, joblog, progress bar, halting.
#include "producer_map.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "drover/client/json_lines.hpp"
#include "line_reader.hpp"
#include "map_words.hpp"

namespace drover {

namespace {

// Outcomes waiting for an earlier one to be printed: past this the map
// stops reading input until the front finishes, so that one slow task
// does not make it hold the rest of a long input in memory.
constexpr std::size_t k_max_waiting_outcomes = 100'000;

// One task of the map: its stable id (position of its argument, or line
// number), its arguments, or why it has none.
struct MapTask {
    std::size_t seq = 0;
    nlohmann::json args;
    std::string error;
};

// The tasks of a map, from the command line's words, stdin or a file.
class MapInput {
public:
    // Throws: std::runtime_error for a file that cannot be opened.
    explicit MapInput(const MapOptions& o) : words_(o.args) {
        if (!o.args_from.empty()) {
            fd_ = ::open(o.args_from.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd_ < 0)
                throw std::runtime_error("--args-from " + o.args_from + ": " + std::string(std::strerror(errno)));
            reader_.emplace(fd_);
        } else if (words_.size() == 1 && words_[0] == "-") {
            reader_.emplace(STDIN_FILENO);
        }
    }
    ~MapInput() {
        if (fd_ >= 0) ::close(fd_);
    }
    MapInput(const MapInput&) = delete;
    MapInput& operator=(const MapInput&) = delete;

    // The next task; false at the end of the input or on a stop request.
    bool next(MapTask& t, const StopSource& stop) {
        t.error.clear();
        if (!reader_) {
            if (seq_ >= words_.size()) return false;
            t.seq = ++seq_;
            t.args = nlohmann::json::array({map_arg(words_[seq_ - 1], "argument " + std::to_string(seq_))});
            return true;
        }
        bool too_long = false;
        while (reader_->next(line_, too_long, stop)) {
            t.seq = ++seq_;
            t.args = nlohmann::json::array();
            if (too_long) {
                t.args = nullptr;
                t.error = "line " + std::to_string(t.seq) + ": longer than " + std::to_string(k_max_line_bytes >> 20) +
                          " MiB: not a task";
                return true;
            }
            try {
                const auto words = split_words(line_);
                if (words.empty()) continue;  // a blank line is no task
                for (std::size_t i = 0; i < words.size(); ++i)
                    t.args.push_back(map_arg(words[i], "argument " + std::to_string(i + 1)));
            } catch (const std::invalid_argument& e) {
                t.args = line_;
                t.error = std::string("line ") + std::to_string(t.seq) + ": " + e.what();
            }
            return true;
        }
        return false;
    }

private:
    const std::vector<std::string>& words_;
    int fd_ = -1;
    std::optional<LineReader> reader_;
    std::string line_;
    std::size_t seq_ = 0;
};

// Seconds since the epoch, to the millisecond.
double unix_now() {
    using namespace std::chrono;
    return static_cast<double>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count()) / 1000.0;
}

// The "exit" of a command task's result (a map with "exit"), else null.
nlohmann::json exit_code(const Result& r) {
    if (r.payload.empty()) return nullptr;
    const auto first = static_cast<unsigned char>(r.payload[0]);
    if (!((first & 0xf0) == 0x80 || first == 0xde || first == 0xdf)) return nullptr;  // not a msgpack map
    const auto value = msgpack_to_json(r.payload);
    return value.is_object() && value.contains("exit") ? value["exit"] : nlohmann::json(nullptr);
}

// The host of a worker id "host:pid" (or "host:pid/io"); the id itself otherwise.
std::string host_of(const std::string& worker) {
    const auto colon = worker.rfind(':');
    return colon == std::string::npos || colon == 0 ? worker : worker.substr(0, colon);
}

// The joblog: a JSON line per finished task, written as each finishes so
// that a run cut short leaves what it did. Thread-safe.
class Joblog {
public:
    // With `resume`, reads what an earlier run left and appends; else
    // starts the file afresh. Throws: std::runtime_error.
    Joblog(const std::string& path, bool resume) {
        if (resume) read_done(path);
        file_ = std::fopen(path.c_str(), resume ? "a" : "w");
        if (!file_) throw std::runtime_error("--joblog " + path + ": " + std::strerror(errno));
    }
    ~Joblog() {
        if (file_) std::fclose(file_);
    }
    Joblog(const Joblog&) = delete;
    Joblog& operator=(const Joblog&) = delete;

    // Whether an earlier run ended task `seq`, with these arguments, ok.
    [[nodiscard]] bool done(std::size_t seq, const std::string& args_text) const {
        return done_.count(key(std::to_string(seq), args_text)) > 0;
    }
    [[nodiscard]] std::size_t done_count() const { return done_.size(); }

    void write(std::size_t seq, const nlohmann::json& args, const Result& r) {
        const double run_ms = std::round(r.elapsed_ms * 1000.0) / 1000.0;
        nlohmann::json line = {{"id", std::to_string(seq)},
                               {"args", args},
                               {"status", proto::status_name(r.status)},
                               {"worker", r.worker},
                               {"host", host_of(r.worker)},
                               {"start", unix_now() - run_ms / 1000.0},
                               {"run_ms", run_ms},
                               {"exit", exit_code(r)},
                               {"attempts", r.attempts}};
        if (!r.ok()) line["error"] = r.error;
        const auto text = to_line(line) + "\n";
        std::lock_guard lock(mutex_);
        std::fwrite(text.data(), 1, text.size(), file_);
        std::fflush(file_);
    }

private:
    static std::string key(const std::string& id, const std::string& args_text) { return id + "\n" + args_text; }

    void read_done(const std::string& path) {
        std::ifstream in(path);
        std::string text;
        while (std::getline(in, text)) {
            const auto line = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
            if (!line.is_object() || line.value("status", "") != "ok" || !line.contains("id") ||
                !line["id"].is_string())
                continue;
            done_.insert(key(line["id"].get<std::string>(), to_line(line["args"])));
        }
    }

    std::set<std::string> done_;
    std::mutex mutex_;
    std::FILE* file_ = nullptr;
};

// Progress on stderr: "[drover] 1200/5000 done (24%), 3 not ok, 950 tasks/s,
// ETA 4s". On a terminal one line redrawn at most 4 times a second; else
// (with --bar) a plain line a second. Without --bar only on a terminal, and
// only for runs longer than a second. Called from one thread.
class Bar {
public:
    explicit Bar(bool always) : tty_(::isatty(STDERR_FILENO) != 0), on_(always || tty_), always_(always) {}

    // `total` counts the tasks read so far; `all_read` says there are no more.
    void show(std::size_t done, std::size_t failed, std::size_t total, bool all_read, bool last = false) {
        if (!on_) return;
        const auto now = Clock::now();
        const double secs = std::chrono::duration<double>(now - start_).count();
        if (!last && (now - shown_at_ < (tty_ ? Millis(250) : Millis(1000)) || (!always_ && secs < 1.0))) return;
        if (last && !shown_ && !always_) return;
        shown_at_ = now;
        shown_ = true;
        const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
        char eta[32] = "?";
        if (all_read && rate > 0)
            std::snprintf(eta, sizeof eta, "%.0fs", static_cast<double>(total - std::min(done, total)) / rate);
        std::fprintf(stderr, "%s[drover] %zu/%zu%s done (%.0f%%), %zu not ok, %.0f tasks/s, ETA %s%s", tty_ ? "\r" : "",
                     done, total, all_read ? "" : "+",
                     total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 0.0, failed, rate, eta,
                     tty_ && !last ? "   " : "\n");
        std::fflush(stderr);
    }

private:
    Clock::time_point start_ = Clock::now();
    Clock::time_point shown_at_{};
    bool tty_, on_, always_;
    bool shown_ = false;
};

// A task sent, waiting for its turn to be printed.
struct Entry {
    std::size_t seq;
    nlohmann::json args;
    std::optional<Result> result;
};

// What the submitting thread, the client's I/O thread (finish) and the
// printing thread share.
struct MapRun {
    const MapOptions& options;
    Client* client;  // nullptr inline
    std::optional<Joblog> joblog;
    std::mutex mutex;
    std::condition_variable changed;
    std::deque<Entry> entries;   // in input order, printed from the front
    std::size_t first_slot = 0;  // the slot of entries.front()
    bool all_read = false;
    std::atomic<std::size_t> total{0}, done{0}, failed{0};
    std::atomic<bool> halted{false};

    MapRun(const MapOptions& o, Client* c) : options(o), client(c) {
        if (!o.joblog.empty()) joblog.emplace(o.joblog, o.resume);
    }

    // Takes a task's outcome (any thread).
    void finish(std::size_t slot, Result&& r) {
        const bool halt_cancelled = r.status == proto::Status::cancelled && halted.load();
        if (!r.ok() && !halt_cancelled) {
            ++failed;
            if (options.halt_on_error) halted = true;
        }
        ++done;
        std::lock_guard lock(mutex);
        auto& e = entries[slot - first_slot];
        if (joblog) joblog->write(e.seq, e.args, r);
        e.result = std::move(r);
        changed.notify_all();
    }

    // Waits while k_max_waiting_outcomes outcomes wait for the front to be
    // printed (the submitting thread). Returns false on a stop request.
    bool wait_for_room(const StopSource& stop) {
        std::unique_lock lock(mutex);
        while (entries.size() >= k_max_waiting_outcomes && !halted) {
            if (stop.stop_requested()) return false;
            changed.wait_for(lock, Millis(100));
        }
        return true;
    }

    // Queues task `t` for printing. Returns its slot.
    std::size_t add(MapTask& t) {
        std::lock_guard lock(mutex);
        entries.push_back({t.seq, std::move(t.args), std::nullopt});
        ++total;
        return first_slot + entries.size() - 1;
    }
};

// "sum_random("abc")": a task and its arguments, for stderr.
std::string describe(const std::string& task, const nlohmann::json& args) {
    auto text = to_line(args);  // an argument's bytes need not be UTF-8
    if (args.is_array()) text = text.substr(1, text.size() - 2);
    return task + "(" + text + ")";
}

// Prints one outcome: its value, or null and why on stderr. Returns false
// for a task cancelled by --halt-on-error, which prints nothing.
bool print_outcome(MapRun& run, const Entry& e) {
    const auto& r = *e.result;
    if (r.ok()) {
        std::cout << to_line(msgpack_to_json(r.payload)) << "\n";
        return true;
    }
    if (r.status == proto::Status::cancelled && run.halted.load()) return false;
    std::cout << "null\n";
    std::cerr << "drover-producer: " << describe(run.options.task, e.args) << " " << proto::status_name(r.status)
              << ": " << r.error << "\n";
    return true;
}

// After a stop request: CANCEL what the broker still queues of ours, give
// it time to leave, and end the process (pending callbacks refer to this
// run's frame).
[[noreturn]] void end_interrupted(MapRun& run) {
    if (run.client) {
        std::cerr << "drover-producer: interrupted: cancelling " << run.client->unfinished() << " unfinished tasks\n";
        run.client->cancel_all();
        std::this_thread::sleep_for(Millis(200));  // let CANCEL reach the broker
    }
    std::cout.flush();
    std::_Exit(130);
}

// The printing thread: outcomes in input order as they become ready, the
// bar, Ctrl-C and --halt-on-error's cancel. Returns the tasks not run.
std::size_t print_in_order(MapRun& run, const StopSource& stop) {
    Bar bar(run.options.bar);
    bool cancelled = false;
    std::size_t not_run = 0;
    std::unique_lock lock(run.mutex);
    while (true) {
        while (!run.entries.empty() && run.entries.front().result) {
            auto e = std::move(run.entries.front());
            run.entries.pop_front();
            ++run.first_slot;
            lock.unlock();
            if (!print_outcome(run, e)) ++not_run;
            lock.lock();
            run.changed.notify_all();  // room for the submitting thread
        }
        if (run.all_read && run.entries.empty()) break;
        std::cout.flush();
        run.changed.wait_for(lock, Millis(100));
        const bool all_read = run.all_read;
        lock.unlock();  // the client's calls below may wait for its I/O thread, which may wait in finish()
        if (stop.stop_requested()) end_interrupted(run);
        if (run.halted && !cancelled && run.client) {
            cancelled = true;
            run.client->cancel_all();  // queued tasks end `cancelled`; running ones finish
        }
        bar.show(run.done, run.failed, run.total, all_read);
        lock.lock();
    }
    lock.unlock();
    bar.show(run.done, run.failed, run.total, true, /*last=*/true);
    std::cout.flush();
    return not_run;
}

// Reads the input and hands each task to `send` (or, for a line that
// cannot be a task, its error as an outcome), until the input ends, a stop
// request or --halt-on-error.
template <class Send>
void feed(MapRun& run, MapInput& input, const StopSource& stop, Send send) {
    MapTask t;
    std::size_t skipped = 0;
    while (!run.halted && run.wait_for_room(stop) && input.next(t, stop)) {
        if (run.joblog && run.joblog->done(t.seq, to_line(t.args))) {
            ++skipped;
            continue;
        }
        std::string error = std::move(t.error);
        std::string packed = error.empty() ? json_to_msgpack(t.args) : std::string();
        const auto slot = run.add(t);
        if (!error.empty()) {
            Result r;
            r.task = run.options.task;
            r.status = proto::Status::rejected;
            r.error = std::move(error);
            run.finish(slot, std::move(r));
        } else {
            send(slot, std::move(packed));
        }
    }
    {
        std::lock_guard lock(run.mutex);
        run.all_read = true;
    }
    run.changed.notify_all();
    if (skipped) std::cerr << "drover-producer: --resume: skipped " << skipped << " tasks done in the joblog\n";
}

// Runs a map: `send` starts the task in a slot (its outcome comes to
// run.finish), the printing thread prints. Returns the exit status.
template <class Send>
int map_with(MapRun& run, const StopSource& stop, Send send) {
    const auto start = Clock::now();
    MapInput input(run.options);
    std::size_t not_run = 0;
    std::thread printer([&] {
        try {
            not_run = print_in_order(run, stop);
        } catch (const std::exception& e) {  // nothing is to end the process uncaught on this thread
            std::cerr << "drover-producer: map: " << e.what() << "\n";
            std::_Exit(1);
        }
    });
    try {
        feed(run, input, stop, send);
    } catch (...) {
        {
            std::lock_guard lock(run.mutex);
            run.all_read = true;  // what was sent still ends; then the error is reported
        }
        printer.join();
        throw;
    }
    printer.join();
    if (stop.stop_requested()) end_interrupted(run);
    if (run.halted)
        std::cerr << "drover-producer: --halt-on-error: stopped submitting after a failure; " << not_run
                  << " queued tasks cancelled\n";
    if (run.options.timing)
        std::cerr << "timing: tasks=" << run.total.load()
                  << " wall_ms=" << std::chrono::duration<double, std::milli>(Clock::now() - start).count() << "\n";
    return run.failed.load() == 0 ? 0 : 1;
}

}  // namespace

void check_map_options(const MapOptions& o) {
    const bool from_stdin = o.args.size() == 1 && o.args[0] == "-";
    if (!o.args_from.empty() && !o.args.empty())
        throw std::invalid_argument("map: give ARGs or --args-from FILE, not both");
    if (o.resume && o.joblog.empty()) throw std::invalid_argument("--resume needs --joblog FILE");
    if (from_stdin) return;
    for (std::size_t i = 0; i < o.args.size(); ++i) (void)map_arg(o.args[i], "argument " + std::to_string(i + 1));
}

int run_map(Client& client, const MapOptions& o, const StopSource& stop) {
    MapRun run(o, &client);
    TaskOptions to;
    to.timeout_ms = o.timeout_ms;
    to.retry_on_error = o.retry_on_error;
    const int status = map_with(run, stop, [&](std::size_t slot, std::string&& packed) {
        try {
            client.submit_packed(
                o.task, std::move(packed), [&run, slot](Result&& r) { run.finish(slot, std::move(r)); }, to);
        } catch (const std::invalid_argument& e) {  // e.g. arguments over --max-message-bytes
            Result r;
            r.task = o.task;
            r.status = proto::Status::rejected;
            r.error = e.what();
            run.finish(slot, std::move(r));
        }
    });
    if (const auto n = client.forged_dropped())
        std::cerr << "drover-producer: dropped " << n << " forged outcomes (without their attempt's token)\n";
    return status;
}

int run_map_inline(const MapOptions& o, const Registry& registry) {
    StopSource stop;  // Ctrl-C ends an inline run at once, as by default
    MapRun run(o, nullptr);
    return map_with(run, stop, [&](std::size_t slot, std::string&& packed) {
        Result r;
        r.task = o.task;
        r.attempts = 1;
        r.worker = "inline";
        const auto t0 = Clock::now();
        try {
            r.payload = registry.run(o.task, packed);
        } catch (const std::exception& e) {
            r.status = proto::Status::error;
            r.error = e.what();
        }
        r.elapsed_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        run.finish(slot, std::move(r));
    });
}

}  // namespace drover
