// End-to-end durability: a broker with --journal killed (kill -9, SIGTERM)
// and restarted on the same ports and journal; a ledger at a standalone
// drover-sink checks every accepted id arrives exactly once, nothing else.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <unistd.h>
#include <zmq.hpp>

#include "drover/client/client.hpp"
#include "process.hpp"

using namespace drover::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Short heartbeats keep these tests quick: 200 ms x 3.
const std::vector<std::string> k_fast = {"--heartbeat-ms", "200", "--liveness", "3"};

std::vector<std::string> cat(std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// A broker on fixed loopback ports with a journal in dir/journal, started
// again on the same ports and journal as often as a test likes.
class DurableBroker {
public:
    // `journal` "none": the broker keeps its tasks in memory only.
    DurableBroker(const TempDir& dir, std::vector<std::string> extra = {}, std::string journal = {})
        : dir_(dir),
          extra_(std::move(extra)),
          journal_(journal.empty() ? dir.file("journal") : std::move(journal)),
          port_(free_tcp_port()),
          backend_port_(free_tcp_port()) {}

    [[nodiscard]] std::string frontend() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
    [[nodiscard]] std::string backend() const { return "tcp://127.0.0.1:" + std::to_string(backend_port_); }
    [[nodiscard]] const std::string& journal() const { return journal_; }
    [[nodiscard]] std::string log() const { return dir_.file("broker" + std::to_string(starts_) + ".log.err"); }
    Process& process() { return *process_; }

    // Starts it and waits until it is bound; false if it exited instead.
    bool start() {
        ++starts_;
        std::remove(dir_.file("broker.json").c_str());
        auto argv = cat({DROVER_BROKER_EXE, "--frontend", frontend(), "--backend", backend(), "--endpoints-file",
                         dir_.file("broker.json")},
                        cat(k_fast, extra_));
        if (journal_ != "none") argv = cat(argv, {"--journal", journal_});
        process_ = std::make_unique<Process>(argv, dir_.file("broker" + std::to_string(starts_) + ".log"));
        return wait_json_file(dir_.file("broker.json"), 10s).has_value();
    }
    void kill9() {
        process_->signal(SIGKILL);
        (void)process_->wait(10s);
    }

private:
    const TempDir& dir_;
    std::vector<std::string> extra_;
    std::string journal_;
    int port_, backend_port_;
    int starts_ = 0;
    std::unique_ptr<Process> process_;
};

// A standalone sink on the broker's frontend; its address in dir/sink.ep.
std::unique_ptr<Process> start_sink(const TempDir& dir, const std::string& frontend, std::size_t expect,
                                    std::string& address) {
    std::remove(dir.file("sink.ep").c_str());
    auto sink = std::make_unique<Process>(
        std::vector<std::string>{DROVER_SINK_EXE, "--bind", "tcp://127.0.0.1:*", "--broker", frontend, "--expect",
                                 std::to_string(expect), "--endpoint-file", dir.file("sink.ep")},
        dir.file("sink.jsonl"));
    address = wait_line_file(dir.file("sink.ep"), 5s);
    return sink;
}

std::unique_ptr<Process> start_worker(const TempDir& dir, const std::string& backend, const std::string& name,
                                      std::vector<std::string> extra = {}) {
    return std::make_unique<Process>(cat(cat({DROVER_WORKER_EXE, "--broker", backend}, k_fast), extra),
                                     dir.file(name + ".log"));
}

// Submits the tasks in `tasks` detached to `sink`; returns the producer.
std::unique_ptr<Process> submit(const TempDir& dir, const std::string& frontend, const std::string& tasks,
                                const std::string& sink, const std::string& out) {
    return std::make_unique<Process>(
        std::vector<std::string>{DROVER_PRODUCER_EXE, "--broker", frontend, "submit", "--reply-to", sink},
        dir.file(out), tasks);
}

// The ids a producer's output says were accepted.
std::set<std::string> accepted_ids(const std::string& path) {
    std::set<std::string> ids;
    for (auto& l : read_json_lines(path))
        if (l.value("status", "") == "accepted") ids.insert(l["id"].get<std::string>());
    return ids;
}

// The sink's outcomes by id; every id at most once and one of `known`.
std::map<std::string, json> sink_ledger(const std::string& path, const std::set<std::string>& known) {
    std::map<std::string, json> by_id;
    for (auto& l : read_json_lines(path)) {
        INFO(l.dump());
        const auto id = l["id"].get<std::string>();
        CHECK(known.count(id) == 1);  // nothing unexpected
        CHECK(by_id.count(id) == 0);  // nothing twice
        by_id[id] = l;
    }
    return by_id;
}

// Waits until the sink's file holds every id of `ids` (or the timeout passes).
bool wait_sink(const std::string& path, const std::set<std::string>& ids, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        std::set<std::string> seen;
        for (auto& l : read_json_lines(path)) seen.insert(l["id"].get<std::string>());
        if (std::includes(seen.begin(), seen.end(), ids.begin(), ids.end())) return true;
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(50ms);
    }
}

// The one segment file of a journal directory.
std::string only_segment(const std::string& dir) {
    std::vector<std::string> found;
    for (const auto& f : std::filesystem::directory_iterator(dir))
        if (f.path().extension() == ".drj" && std::filesystem::file_size(f.path()) > 32)
            found.push_back(f.path().string());
    REQUIRE(found.size() == 1);
    return found.front();
}

// The offsets where each record of a segment starts (after its 32-byte header).
std::vector<std::uint64_t> record_offsets(const std::string& segment) {
    const std::string bytes = read_file(segment);
    std::vector<std::uint64_t> at;
    std::uint64_t off = 32;
    while (off + 8 <= bytes.size()) {
        std::uint32_t n = 0;
        for (int i = 3; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(bytes[off + i]);
        if (off + 8 + n > bytes.size()) break;
        at.push_back(off);
        off += 8 + n;
    }
    REQUIRE(off == bytes.size());
    return at;
}

}  // namespace

TEST_CASE("durable: detached tasks survive a kill -9 of the broker, their producer long gone", "[e2e]") {
    TempDir dir;
    DurableBroker broker(dir);
    REQUIRE(broker.start());
    std::string sink_address;
    auto sink = start_sink(dir, broker.frontend(), 500, sink_address);
    REQUIRE(!sink_address.empty());
    write_tasks(dir.file("tasks.jsonl"), 500, "sleep_ms", {1});
    auto producer = submit(dir, broker.frontend(), dir.file("tasks.jsonl"), sink_address, "accepted.jsonl");
    REQUIRE(producer->wait(20s) == 0);
    const auto ids = accepted_ids(dir.file("accepted.jsonl"));
    REQUIRE(ids.size() == 500);
    broker.kill9();  // no worker ever ran them: they are on disk only
    REQUIRE(broker.start());
    CHECK(read_file(broker.log()).find("recovered=500") != std::string::npos);
    auto worker = start_worker(dir, broker.backend(), "worker", {"-c", "4"});
    REQUIRE(sink->wait(30s) == 0);
    const auto by_id = sink_ledger(dir.file("sink.jsonl"), ids);
    CHECK(by_id.size() == ids.size());
    for (const auto& [id, l] : by_id) CHECK(l["status"] == "ok");
}

TEST_CASE("durable: kill -9 of the broker at random moments under a stream of detached tasks", "[e2e]") {
    // 20 cycles of: start, a producer submits 1,000 detached tasks while a
    // worker runs them, kill -9 after 0-300 ms (mid-SUBMIT at times). A
    // producer killed with the broker may lose lines of its output: ids
    // accepted but not printed may arrive too, never twice. Ledger at the sink.
    constexpr int k_cycles = 20, k_chunk = 1000;
    TempDir dir;
    DurableBroker broker(dir);
    REQUIRE(broker.start());
    std::string sink_address;
    auto sink = start_sink(dir, broker.frontend(), 0, sink_address);
    REQUIRE(!sink_address.empty());
    auto worker = start_worker(dir, broker.backend(), "worker", {"-c", "4"});
    std::mt19937 rng(std::random_device{}());
    std::set<std::string> submitted, accepted;
    for (int cycle = 0; cycle < k_cycles; ++cycle) {
        if (cycle > 0) REQUIRE(broker.start());
        const std::string tasks = dir.file("tasks" + std::to_string(cycle) + ".jsonl");
        const auto ids = write_tasks(tasks, k_chunk, "sleep_ms", {1}, "c" + std::to_string(cycle) + "-");
        submitted.insert(ids.begin(), ids.end());
        const std::string out = "accepted" + std::to_string(cycle) + ".jsonl";
        auto producer = submit(dir, broker.frontend(), tasks, sink_address, out);
        std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 300)(rng)));
        broker.kill9();
        if (!producer->wait(100ms)) producer.reset();  // waiting on the dead broker: kill -9 too
        const auto ok = accepted_ids(dir.file(out));
        accepted.insert(ok.begin(), ok.end());
    }
    REQUIRE(broker.start());
    const bool all = wait_sink(dir.file("sink.jsonl"), accepted, 60s);
    std::this_thread::sleep_for(500ms);  // a duplicate would come now
    const auto by_id = sink_ledger(dir.file("sink.jsonl"), submitted);
    std::size_t missing = 0;
    for (const auto& id : accepted) missing += by_id.count(id) == 0;
    for (const auto& [id, l] : by_id) CHECK(l["status"] == "ok");
    WARN("kill -9 cycles: " << k_cycles << ", submitted " << submitted.size() << ", accepted " << accepted.size()
                            << ", at the sink " << by_id.size() << ", accepted but missing " << missing);
    CHECK(all);
    CHECK(missing == 0);
    CHECK(accepted.size() >= k_chunk);  // the test did stress something
}

TEST_CASE("durable: a live producer's detached and attached tasks survive a kill -9 of the broker", "[e2e]") {
    // One in-process client submits 300 attached and 300 detached tasks
    // (to a drover-sink), the broker is killed mid-stream and started again
    // on the same ports. Without a journal only the producer can bring the
    // detached tasks back: it keeps each accepted one until its sink settles it.
    const std::string journal = GENERATE(as<std::string>{}, "none", "");
    CAPTURE(journal);
    constexpr int k_each = 300;
    TempDir dir;
    DurableBroker broker(dir, {}, journal);
    REQUIRE(broker.start());
    std::string sink_address;
    auto sink = start_sink(dir, broker.frontend(), k_each, sink_address);
    REQUIRE(!sink_address.empty());
    auto worker = start_worker(dir, broker.backend(), "worker", {"-c", "4"});
    REQUIRE(wait_for_workers(broker.frontend(), 1, 10s));

    zmq::context_t ctx;
    drover::ClientOptions o;
    o.broker = broker.frontend();
    o.heartbeat = 200ms;
    o.liveness = 3;
    drover::Client client(ctx, o);
    std::mutex mu;
    std::map<std::string, std::vector<drover::Result>> ends;  // id -> outcomes delivered
    std::set<std::string> detached;
    for (int i = 0; i < k_each; ++i) {
        const auto keep = [&](drover::Result&& r) {
            std::lock_guard lock(mu);
            ends[r.id].push_back(std::move(r));
        };
        drover::TaskOptions d;
        d.id = "d-" + std::to_string(i);
        d.reply_to = sink_address;
        detached.insert(d.id);
        client.submit_packed("sleep_ms", drover::pack_args(10), keep, d);
        client.submit_packed("sleep_ms", drover::pack_args(10), keep);
    }
    std::this_thread::sleep_for(300ms);  // 600 tasks of 10 ms on 4 slots take 1.5 s: most are queued
    broker.kill9();
    std::this_thread::sleep_for(300ms);
    REQUIRE(broker.start());
    REQUIRE(client.wait_all_for(30s));
    REQUIRE(sink->wait(30s) == 0);  // --expect: every detached id once

    std::lock_guard lock(mu);
    CHECK(ends.size() == 2 * k_each);
    for (const auto& [id, rs] : ends) {
        INFO(id);
        REQUIRE(rs.size() == 1);  // one outcome (ACCEPTED for a detached task) per task
        CHECK(rs[0].ok());
        CHECK(rs[0].accepted_only == (detached.count(id) == 1));
    }
    const auto by_id = sink_ledger(dir.file("sink.jsonl"), detached);
    CHECK(by_id.size() == detached.size());
    for (const auto& [id, l] : by_id) CHECK(l["status"] == "ok");
    if (journal == "none")
        CHECK(read_file(broker.log()).find("recovered=") == std::string::npos);  // the producer brought them back
}

TEST_CASE("durable: a steady stream keeps the journal within 4 segments of 1 MiB", "[e2e]") {
    // 200,000 echo tasks (about 10 MiB of journal) through a broker whose
    // segments roll at 1 MiB: settled segments go as they close, so the
    // journal's size, sampled through the run, stays under 4 MiB.
    constexpr int k_tasks = 200'000;
    constexpr std::uintmax_t k_bound = 4u << 20;
    TempDir dir;
    DurableBroker broker(dir, {"--journal-segment-mib", "1"});
    REQUIRE(broker.start());
    auto worker = start_worker(dir, broker.backend(), "worker", {"-c", "2"});
    REQUIRE(wait_for_workers(broker.frontend(), 1, 10s));
    zmq::context_t ctx;
    drover::ClientOptions o;
    o.broker = broker.frontend();
    o.window = 2000;
    drover::Client client(ctx, o);
    std::atomic<int> ok{0};
    std::set<std::string> segments;  // every segment file seen
    std::uintmax_t largest = 0;
    const auto sample = [&] {
        std::uintmax_t bytes = 0;
        for (const auto& f : std::filesystem::directory_iterator(broker.journal())) {
            if (f.path().extension() != ".drj") continue;
            segments.insert(f.path().filename().string());
            // The broker may delete a settled segment between the listing and this look.
            std::error_code gone;
            const auto size = std::filesystem::file_size(f.path(), gone);
            if (!gone) bytes += size;
        }
        largest = std::max(largest, bytes);
    };
    for (int i = 0; i < k_tasks; ++i) {
        client.submit_packed("echo", drover::pack_args(i), [&](drover::Result&& r) { ok += r.ok(); });
        if (i % 5000 == 0) sample();
    }
    REQUIRE(client.wait_all_for(120s));
    sample();
    CHECK(ok == k_tasks);
    WARN("journal: " << segments.size() << " segments of 1 MiB written, at most " << largest << " bytes on disk");
    CHECK(segments.size() >= 6);  // the run did fill segments
    CHECK(largest < k_bound);
}

TEST_CASE("durable: SIGTERM and restart keep the queued tasks, and without a journal the loss is said", "[e2e]") {
    TempDir dir;
    DurableBroker broker(dir);
    REQUIRE(broker.start());
    std::string sink_address;
    auto sink = start_sink(dir, broker.frontend(), 300, sink_address);
    write_tasks(dir.file("tasks.jsonl"), 300, "sleep_ms", {1});
    auto producer = submit(dir, broker.frontend(), dir.file("tasks.jsonl"), sink_address, "accepted.jsonl");
    REQUIRE(producer->wait(20s) == 0);
    const auto ids = accepted_ids(dir.file("accepted.jsonl"));
    REQUIRE(ids.size() == 300);
    broker.process().signal(SIGTERM);
    REQUIRE(broker.process().wait(10s) == 0);
    CHECK(read_file(broker.log()).find("broker.journal_closed held=300") != std::string::npos);
    REQUIRE(broker.start());
    auto worker = start_worker(dir, broker.backend(), "worker", {"-c", "4"});
    REQUIRE(sink->wait(30s) == 0);
    CHECK(sink_ledger(dir.file("sink.jsonl"), ids).size() == ids.size());

    // No journal: memory only, said at start, and the loss said at SIGTERM.
    TempDir plain;
    BrokerProcess memory(plain, k_fast);
    write_tasks(plain.file("tasks.jsonl"), 20, "sleep_ms", {1});
    auto p2 = submit(plain, memory.frontend, plain.file("tasks.jsonl"), sink_address, "accepted.jsonl");
    REQUIRE(p2->wait(20s) == 0);
    memory.process->signal(SIGTERM);
    REQUIRE(memory.process->wait(10s) == 0);
    const auto log = read_file(plain.file("broker.log.err"));
    CHECK(log.find("broker.memory_only") != std::string::npos);
    CHECK(log.find("broker.tasks_lost detached=20") != std::string::npos);
}

TEST_CASE("durable: a poison task keeps its deaths across broker restarts and ends lost", "[e2e]") {
    // Each solo worker dies running it; the broker is killed after each of
    // the first two deaths. Without the deaths on disk it would never end.
    TempDir dir;
    DurableBroker broker(dir);
    REQUIRE(broker.start());
    std::string sink_address;
    auto sink = start_sink(dir, broker.frontend(), 1, sink_address);
    const auto ids = write_tasks(dir.file("tasks.jsonl"), 1, "crash", json::array(), "poison");
    auto producer = submit(dir, broker.frontend(), dir.file("tasks.jsonl"), sink_address, "accepted.jsonl");
    REQUIRE(producer->wait(20s) == 0);
    for (int death = 1; death <= 3; ++death) {
        INFO("death " << death);
        auto worker = start_worker(dir, broker.backend(), "worker" + std::to_string(death), {"--pool", "solo"});
        REQUIRE(worker->wait(20s).has_value());  // it ran the task and died
        const auto status = wait_status(
            broker.frontend(), [](const json& st) { return st["workers"].empty(); },
            10s);  // removed: its death counted
        REQUIRE(status);
        REQUIRE((*status)["workers"].empty());
        if (death == 3) break;
        std::this_thread::sleep_for(100ms);  // past the batch sync of its death
        broker.kill9();
        REQUIRE(broker.start());
    }
    REQUIRE(sink->wait(20s) == 0);
    const auto by_id = sink_ledger(dir.file("sink.jsonl"), ids);
    REQUIRE(by_id.size() == 1);
    CHECK(by_id.at("poison0")["status"] == "lost");
    CHECK(by_id.at("poison0")["error"] == "worker died 3 times");
}

TEST_CASE("durable: a journal cut in its last record starts, and damage in the middle is refused", "[e2e]") {
    TempDir dir;
    DurableBroker broker(dir);
    REQUIRE(broker.start());
    std::string sink_address;
    auto sink = start_sink(dir, broker.frontend(), 0, sink_address);
    // Two SUBMITs in two commits: two records at least.
    write_tasks(dir.file("a.jsonl"), 100, "sleep_ms", {1}, "a");
    write_tasks(dir.file("b.jsonl"), 100, "sleep_ms", {1}, "b");
    auto first = submit(dir, broker.frontend(), dir.file("a.jsonl"), sink_address, "a.out");
    REQUIRE(first->wait(20s) == 0);
    auto second = submit(dir, broker.frontend(), dir.file("b.jsonl"), sink_address, "b.out");
    REQUIRE(second->wait(20s) == 0);
    const auto a_ids = accepted_ids(dir.file("a.out"));
    REQUIRE(a_ids.size() == 100);
    broker.kill9();
    const auto segment = only_segment(broker.journal());
    const auto records = record_offsets(segment);
    REQUIRE(records.size() >= 2);
    const auto size = std::filesystem::file_size(segment);
    {
        // A copy, damaged in the middle (a byte of the first record's body).
        std::filesystem::copy(broker.journal(), dir.file("damaged"));
        const std::string damaged_segment =
            dir.file("damaged") + "/" + std::filesystem::path(segment).filename().string();
        std::fstream f(damaged_segment, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(static_cast<std::streamoff>(records[0] + 12));
        f.put('\x5a' ^ read_file(damaged_segment)[records[0] + 12]);
        f.close();
        std::filesystem::remove(dir.file("damaged") + "/LOCK");
        Process refused({DROVER_BROKER_EXE, "--frontend", "tcp://127.0.0.1:*", "--backend", "tcp://127.0.0.1:*",
                         "--journal", dir.file("damaged")},
                        dir.file("refused.log"));
        const auto rc = refused.wait(10s);
        REQUIRE(rc.has_value());
        CHECK(*rc != 0);
        const auto err = read_file(dir.file("refused.log.err"));
        INFO(err);
        CHECK(err.find(std::filesystem::path(segment).filename().string()) != std::string::npos);
        CHECK(err.find(std::to_string(records[0])) != std::string::npos);
        CHECK(err.find("--journal-repair") != std::string::npos);
    }
    // The original, cut at a random byte inside its last record.
    std::mt19937 rng(std::random_device{}());
    const auto cut = std::uniform_int_distribution<std::uint64_t>(records.back() + 1, size - 1)(rng);
    INFO("cut at " << cut << " of " << size << ", last record at " << records.back());
    std::filesystem::resize_file(segment, cut);
    REQUIRE(broker.start());
    const auto status = wait_status(
        broker.frontend(), [](const json&) { return true; }, 5s);
    REQUIRE(status);
    CHECK((*status)["journal"]["torn_tails"] == 1);
    CHECK((*status)["journal"]["recovered"].get<int>() >= 100);
    auto worker = start_worker(dir, broker.backend(), "worker", {"-c", "4"});
    CHECK(wait_sink(dir.file("sink.jsonl"), a_ids, 30s));
    std::set<std::string> known = a_ids;
    for (const auto& id : accepted_ids(dir.file("b.out"))) known.insert(id);
    sink_ledger(dir.file("sink.jsonl"), known);
}

TEST_CASE("durable: a full disk rejects new tasks journal_unavailable, loses none, and recovers", "[e2e]") {
    TempDir dir;
    const std::string fs_dir = dir.file("fs");
    std::filesystem::create_directory(fs_dir);
    if (::geteuid() != 0 || std::system(("mount -t tmpfs -o size=4m tmpfs " + fs_dir + " 2>/dev/null").c_str()) != 0) {
        WARN("skipped: mounting a small tmpfs needs root");
        return;
    }
    struct Unmount {
        std::string path;
        ~Unmount() { (void)std::system(("umount " + path).c_str()); }
    } unmount{fs_dir};
    DurableBroker broker(dir, {}, fs_dir + "/journal");
    REQUIRE(broker.start());
    std::string sink_address;
    auto sink = start_sink(dir, broker.frontend(), 0, sink_address);
    // Fill the disk to the last byte.
    (void)std::system(("dd if=/dev/zero of=" + fs_dir + "/filler bs=4k 2>/dev/null").c_str());
    const auto before = write_tasks(dir.file("first.jsonl"), 200, "sleep_ms", {1}, "f");
    auto first = submit(dir, broker.frontend(), dir.file("first.jsonl"), sink_address, "first.out");
    const auto down = wait_status(
        broker.frontend(), [](const json& st) { return !st["journal"]["available"].get<bool>(); }, 10s);
    REQUIRE(down);
    REQUIRE(!(*down)["journal"]["available"].get<bool>());
    write_tasks(dir.file("second.jsonl"), 50, "sleep_ms", {1}, "s");
    auto second = submit(dir, broker.frontend(), dir.file("second.jsonl"), sink_address, "second.out");
    (void)second->wait(20s);
    const auto second_out = read_json_lines(dir.file("second.out"));
    CHECK(second_out.size() == 50);
    for (const auto& l : second_out) {
        INFO(l.dump());
        CHECK(l["status"] == "rejected");
        CHECK(l.dump().find("journal_unavailable") != std::string::npos);
    }
    CHECK(first->running());  // its ACCEPTED waits for the disk
    std::filesystem::remove(fs_dir + "/filler");
    // The first producer's tasks that reached the broker before its journal
    // failed wait for the disk and are accepted; any sent after that (they
    // may go in later SUBMITs) are rejected journal_unavailable. None is lost.
    REQUIRE(first->wait(20s).has_value());
    const auto accepted = accepted_ids(dir.file("first.out"));
    CHECK(!accepted.empty());
    std::size_t refused = 0;
    for (const auto& l : read_json_lines(dir.file("first.out"))) {
        if (l.value("status", "") != "rejected") continue;
        INFO(l.dump());
        CHECK(l.dump().find("journal_unavailable") != std::string::npos);
        ++refused;
    }
    CHECK(accepted.size() + refused == 200);
    auto worker = start_worker(dir, broker.backend(), "worker", {"-c", "4"});
    CHECK(wait_sink(dir.file("sink.jsonl"), accepted, 30s));
    std::set<std::string> known = before;
    CHECK(sink_ledger(dir.file("sink.jsonl"), known).size() == accepted.size());
    CHECK(read_file(broker.log()).find("broker.journal_available") != std::string::npos);
}
