// Multi-host end-to-end: broker, producer and workers on different "machines"
// (network namespaces on one bridge, see netns.hpp), with link cuts, a slow and
// stalling link (relay.hpp), host restarts and the remote-workers script. Each
// test ends with a ledger check: every submitted id exactly one outcome, none
// for unknown ids, the expected status.
//
// Needs root for namespaces; without it each test WARNs "skipped: ..." and passes.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <sys/stat.h>
#include <unistd.h>

#include "drover/client/client.hpp"
#include "netns.hpp"
#include "process.hpp"
#include "relay.hpp"

using namespace drover::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Host roles in a 4-host network.
constexpr std::size_t A = 0, B = 1, C = 2, D = 3;
constexpr int k_frontend_port = 5555, k_backend_port = 5556;
// Short heartbeats (200 ms x 3) where a test waits for a death.
const std::vector<std::string> k_fast = {"--heartbeat-ms", "200", "--liveness", "3"};

// Creates the network or, where namespaces are refused, WARNs the skip and
// returns from the test (Catch2 2.13 has no SKIP).
#define MULTIHOST_NETWORK(var, hosts)                                   \
    std::string var##_why;                                              \
    auto var##_ptr = Network::try_create((hosts), var##_why);           \
    if (!var##_ptr) {                                                   \
        WARN("skipped: network namespaces unavailable: " << var##_why); \
        return;                                                         \
    }                                                                   \
    Network& var = *var##_ptr

// The programs of one test across the hosts of a Network. `secure` turns
// CurveZMQ on everywhere: one drover-keygen --fleet, then --security DIR on
// every command line this builds.
class Fleet {
public:
    Fleet(Network& net, bool secure) : net_(net), secure_(secure) {
        if (secure_) {
            keys_ = dir.file("fleet");
            run_command({DROVER_KEYGEN_EXE, "--fleet", keys_});
        }
    }
    Network& net() { return net_; }
    TempDir dir;

    [[nodiscard]] std::vector<std::string> security() const {
        return secure_ ? std::vector<std::string>{"--security", keys_} : std::vector<std::string>{};
    }
    [[nodiscard]] const std::string& frontend() const { return frontend_; }
    [[nodiscard]] const std::string& backend() const { return backend_; }

    // The broker on host `h`, on fixed ports (each namespace has its own).
    void start_broker(std::size_t h, const std::vector<std::string>& extra = {}) {
        broker_host_ = h;
        frontend_ = net_.host(h).endpoint(k_frontend_port);
        backend_ = net_.host(h).endpoint(k_backend_port);
        const auto ep_file = dir.file("broker.json");
        broker = net_.host(h).run(concat(concat({DROVER_BROKER_EXE, "--frontend", frontend_, "--backend", backend_,
                                                 "--endpoints-file", ep_file},
                                                security()),
                                         extra),
                                  dir.file("broker.log"));
        if (!wait_json_file(ep_file, 10s))
            throw std::runtime_error("broker did not start: " + read_file(dir.file("broker.log.err")));
    }

    // A worker on host `h` named "host<Letter>" (its results' worker ids start with that).
    std::unique_ptr<Process> worker(std::size_t h, const std::string& pool, int count,
                                    const std::vector<std::string>& extra = {}, const std::string& broker_ep = {}) {
        const auto log = dir.file("worker-" + host_name(h) + "-" + std::to_string(++started_) + ".log");
        return net_.host(h).run(
            concat(concat({DROVER_WORKER_EXE, "--broker", broker_ep.empty() ? backend_ : broker_ep, "--pool", pool,
                           "-c", std::to_string(count), "--host-name", host_name(h)},
                          security()),
                   extra),
            log);
    }

    // drover-producer submit on host `h`: tasks from `tasks`, outcomes to `out`.
    std::unique_ptr<Process> producer(std::size_t h, const std::string& tasks, const std::string& out,
                                      const std::vector<std::string>& extra = {}) {
        return net_.host(h).run(
            concat(concat(concat({DROVER_PRODUCER_EXE, "--broker", frontend_}, security()), extra), {"submit"}), out,
            tasks);
    }

    // One STATUS, asked from the broker's host (drover-broker status).
    std::optional<json> status() const {
        std::string out;
        const int rc = net_.host(broker_host_)
                           .exec_rc(concat({DROVER_BROKER_EXE, "status", "--broker", frontend_, "--timeout-ms", "1000"},
                                           security()),
                                    &out, 5s);
        if (rc != 0) return std::nullopt;
        try {
            return json::parse(out);
        } catch (const json::exception&) {
            return std::nullopt;
        }
    }

    // Polls STATUS until `done` holds or `timeout` passes; returns the last one read.
    std::optional<json> wait_status(const std::function<bool(const json&)>& done,
                                    std::chrono::milliseconds timeout) const {
        std::optional<json> last;
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            if (auto s = status()) {
                last = std::move(s);
                if (done(*last)) break;
            }
            std::this_thread::sleep_for(50ms);
        }
        return last;
    }

    static std::string host_name(std::size_t h) { return std::string("host") + static_cast<char>('A' + h); }

    std::unique_ptr<Process> broker;

private:
    Network& net_;
    bool secure_;
    std::string keys_, frontend_, backend_;
    std::size_t broker_host_ = 0;
    int started_ = 0;
};

// host's entry in STATUS "hosts", or null.
json host_entry(const json& s, std::size_t h) {
    const auto name = Fleet::host_name(h);
    return s.contains("hosts") && s["hosts"].contains(name) ? s["hosts"][name] : json();
}
std::uint64_t host_num(const json& s, std::size_t h, const char* field) {
    const auto e = host_entry(s, h);
    return e.is_null() ? 0 : e[field].get<std::uint64_t>();
}

// The ledger: each id exactly one outcome with `status`, none unknown.
// Returns the outcomes by id.
std::map<std::string, json> ledger(const std::string& path, const std::set<std::string>& ids,
                                   const std::string& status = "ok") {
    std::map<std::string, json> by_id;
    std::size_t unknown = 0, dup = 0, wrong = 0;
    for (auto& l : read_json_lines(path)) {
        const auto id = l.value("id", std::string());
        if (ids.count(id) == 0) {
            ++unknown;
            UNSCOPED_INFO("unknown id: " << l.dump());
        } else if (by_id.count(id) != 0) {
            ++dup;
            UNSCOPED_INFO("duplicate: " << l.dump());
        } else if (l.value("status", std::string()) != status) {
            ++wrong;
            UNSCOPED_INFO("status: " << l.dump());
        }
        by_id.emplace(id, l);
    }
    CHECK(unknown == 0);
    CHECK(dup == 0);
    CHECK(wrong == 0);
    CHECK(by_id.size() == ids.size());
    return by_id;
}

// Work per host according to the outcomes' worker field ("hostC:..." etc.).
std::map<std::string, std::size_t> work_by_host(const std::map<std::string, json>& by_id) {
    std::map<std::string, std::size_t> n;
    for (const auto& [id, l] : by_id) {
        const auto w = l.value("worker", std::string());
        ++n[w.substr(0, w.find(':'))];
    }
    return n;
}

std::string describe(const std::optional<json>& s) { return s ? s->dump() : "no status"; }

// The fleet most tests use: the broker on A, a threads worker on C and a
// processes worker on D (2 slots each), all with `extra` flags.
struct WorkersCD {
    std::unique_ptr<Process> c, d;
};
WorkersCD start_broker_and_workers(Fleet& fleet, const std::vector<std::string>& extra = {}) {
    fleet.start_broker(A, extra);
    return {fleet.worker(C, "threads", 2, extra), fleet.worker(D, "processes", 2, extra)};
}

// ---------------------------------------------------------------------------

void fleet_across_hosts(bool secure) {
    MULTIHOST_NETWORK(net, 4);
    Fleet fleet(net, secure);
    auto workers = start_broker_and_workers(fleet);
    const auto ready = fleet.wait_status(
        [](const json& s) { return !host_entry(s, C).is_null() && !host_entry(s, D).is_null(); }, 15s);
    INFO(describe(ready));
    REQUIRE(ready);
    REQUIRE(!host_entry(*ready, C).is_null());
    REQUIRE(!host_entry(*ready, D).is_null());
    CHECK(host_entry(*ready, C)["pools"] == json::array({"threads"}));
    CHECK(host_entry(*ready, D)["pools"] == json::array({"processes"}));

    const auto ids = write_tasks(fleet.dir.file("tasks.jsonl"), 2000, "sum_random", {20000});
    auto producer = fleet.producer(B, fleet.dir.file("tasks.jsonl"), fleet.dir.file("out.jsonl"));
    const auto rc = producer->wait(60s);
    INFO(read_file(fleet.dir.file("out.jsonl.err")));
    REQUIRE(rc == 0);
    const auto by_id = ledger(fleet.dir.file("out.jsonl"), ids);
    for (const auto& [id, l] : by_id) {
        const auto sum = l.value("result", std::int64_t{0});
        if (sum < 20000 || sum > 100 * 20000) FAIL_CHECK("sum out of range: " << l.dump());
    }
    const auto by_host = work_by_host(by_id);
    INFO("work by host: " << json(by_host).dump());
    CHECK(by_host.size() == 2);
    CHECK(by_host.count("hostC") == 1);
    CHECK(by_host.count("hostD") == 1);
    const auto after = fleet.status();
    REQUIRE(after);
    CHECK(host_num(*after, C, "done") + host_num(*after, D, "done") >= 2000);
    CHECK((*after)["totals"]["workers_expired"] == 0);
}

void partition(bool secure) {
    MULTIHOST_NETWORK(net, 4);
    Fleet fleet(net, secure);
    auto workers = start_broker_and_workers(fleet, k_fast);
    REQUIRE(fleet.wait_status([](const json& s) { return s["workers"].size() >= 2; }, 15s));

    const auto ids = write_tasks(fleet.dir.file("tasks.jsonl"), 100, "sleep_ms", {100});
    auto producer = fleet.producer(B, fleet.dir.file("tasks.jsonl"), fleet.dir.file("out.jsonl"), k_fast);
    // Cut C while it holds tasks.
    const auto holding = fleet.wait_status([](const json& s) { return host_num(s, C, "held") > 0; }, 10s);
    INFO("before cut: " << describe(holding));
    REQUIRE(holding);
    REQUIRE(host_num(*holding, C, "held") > 0);
    const auto redispatched_before = (*holding)["totals"]["redispatched"].get<std::uint64_t>();
    const auto cut_at = std::chrono::steady_clock::now();
    net.cut(C);
    // Declared dead within the liveness window (600 ms, plus status polling slack).
    const auto gone = fleet.wait_status(
        [](const json& s) { return host_entry(s, C).is_null() && s["totals"]["workers_expired"] >= 1; }, 15s);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - cut_at);
    INFO("after cut (" << took.count() << " ms): " << describe(gone));
    REQUIRE(gone);
    CHECK(host_entry(*gone, C).is_null());
    CHECK((*gone)["totals"]["workers_expired"] >= 1);
    CHECK((*gone)["totals"]["redispatched"].get<std::uint64_t>() > redispatched_before);
    // How long it took is a figure for the log, not a check: a slow machine
    // must not fail this test (the wait above bounds it at 15 s).
    WARN("partitioned host declared dead and its tasks re-dispatched " << took.count() << " ms after the cut");
    // Let C finish its (now re-dispatched) tasks behind the cut: late results.
    std::this_thread::sleep_for(std::max(0ms, 1500ms - took));
    CHECK(producer->running());  // the rejoin below happens while results still arrive
    net.restore(C);
    const auto back = fleet.wait_status([](const json& s) { return !host_entry(s, C).is_null(); }, 15s);
    INFO("after restore: " << describe(back));
    CHECK((back && !host_entry(*back, C).is_null()));

    const auto rc = producer->wait(60s);
    INFO(read_file(fleet.dir.file("out.jsonl.err")));
    REQUIRE(rc == 0);
    const auto by_id = ledger(fleet.dir.file("out.jsonl"), ids);
    const auto by_host = work_by_host(by_id);
    INFO("work by host: " << json(by_host).dump());
    CHECK(by_host.count("hostD") == 1);
    // The tasks C held were run again: their one outcome is a second attempt
    // (from D, as C's own results sat behind the cut and came late, if at all).
    std::size_t rerun = 0;
    for (const auto& [id, l] : by_id)
        if (l.value("attempts", 1) >= 2) {
            ++rerun;
            CHECK(l.value("worker", std::string()).rfind("hostD", 0) == 0);
        }
    CHECK(rerun >= 1);
}

// The producer's sink listens where no worker can reach it (host B's own
// loopback, as behind NAT): results come through the broker, each once.
void unreachable_sink(bool secure) {
    MULTIHOST_NETWORK(net, 4);
    Fleet fleet(net, secure);
    auto workers = start_broker_and_workers(fleet, k_fast);
    REQUIRE(fleet.wait_status([](const json& s) { return s["workers"].size() >= 3; }, 15s));
    const auto ids = write_tasks(fleet.dir.file("tasks.jsonl"), 300, "sum_random", {20000});
    auto producer = fleet.producer(B, fleet.dir.file("tasks.jsonl"), fleet.dir.file("out.jsonl"),
                                   concat({"--sink", "tcp://127.0.0.1:7000"}, k_fast));
    const auto rc = producer->wait(60s);
    const auto err = read_file(fleet.dir.file("out.jsonl.err"));
    INFO(err);
    REQUIRE(rc == 0);
    const auto by_id = ledger(fleet.dir.file("out.jsonl"), ids);
    CHECK(work_by_host(by_id).size() == 2);
    CHECK(err.find("client.results_via_broker") != std::string::npos);
    const auto after = fleet.wait_status([](const json& s) { return s["held"] == 0; }, 10s);
    INFO(describe(after));
    REQUIRE(after);
    CHECK((*after)["totals"]["results_forwarded"] == 300);
    CHECK((*after)["totals"]["settled"] == 300);
}

}  // namespace

TEST_CASE("a producer whose sink no worker can reach gets every result through the broker", "[multihost]") {
    unreachable_sink(false);
}

TEST_CASE("secure: a producer whose sink no worker can reach gets every result through the broker", "[multihost]") {
    unreachable_sink(true);
}

TEST_CASE("workers on two hosts share 2,000 tasks from a producer on a third, broker on a fourth", "[multihost]") {
    fleet_across_hosts(false);
}

TEST_CASE("secure: workers on two hosts share 2,000 tasks from a producer on a third, broker on a fourth",
          "[multihost][security]") {
    fleet_across_hosts(true);
}

TEST_CASE("a partitioned host's tasks move to another host, it rejoins, and its late results are dropped",
          "[multihost]") {
    partition(false);
}

TEST_CASE("secure: a partitioned host's tasks move to another host, it rejoins, and its late results are dropped",
          "[multihost][security]") {
    partition(true);
}

TEST_CASE("slow, stalling links (100 +- 20 ms, 500 ms stalls) do not get a live worker declared dead", "[multihost]") {
    MULTIHOST_NETWORK(net, 4);
    Fleet fleet(net, false);
    fleet.start_broker(A);
    // C reaches the broker only through the relay, which runs in A's namespace.
    constexpr int relay_port = 6556;
    Relay relay(net.host(A).name(), net.host(A).address(), relay_port, net.host(A).address(), k_backend_port);
    relay.set_delay(Relay::Dir::both, 100ms, 20ms);
    auto wc = fleet.worker(C, "threads", 2, {}, net.host(A).endpoint(relay_port));
    auto wd = fleet.worker(D, "processes", 2);
    REQUIRE(fleet.wait_status([](const json& s) { return !host_entry(s, C).is_null() && !host_entry(s, D).is_null(); },
                              15s));

    // Results go straight from the workers to the producer's sink: that path
    // is slow and stalls too, through a second relay on B (sink on B:7000,
    // advertised to the workers as the relay B:7001).
    constexpr int sink_port = 7000, sink_relay_port = 7001;
    Relay sink_relay(net.host(B).name(), net.host(B).address(), sink_relay_port, net.host(B).address(), sink_port);
    sink_relay.set_delay(Relay::Dir::both, 100ms, 20ms);

    const auto ids = write_tasks(fleet.dir.file("tasks.jsonl"), 300, "sleep_ms", {20});
    auto producer = fleet.producer(
        B, fleet.dir.file("tasks.jsonl"), fleet.dir.file("out.jsonl"),
        {"--sink", net.host(B).endpoint(sink_port), "--sink-advertise", net.host(B).endpoint(sink_relay_port)});
    std::mt19937 rng(std::random_device{}());
    int stalls = 0;
    while (producer->running()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(200, 700)(rng)));
        if (!producer->running()) break;
        relay.stall(500ms);
        if (stalls % 2 == 1) sink_relay.stall(500ms);
        ++stalls;
        std::this_thread::sleep_for(500ms);
        if (stalls > 60) break;  // 60 s: the producer hangs
    }
    const auto rc = producer->wait(30s);
    INFO(read_file(fleet.dir.file("out.jsonl.err")));
    REQUIRE(rc == 0);
    INFO("stalls: " << stalls << ", relay connections " << relay.connections());
    CHECK(stalls >= 2);
    const auto by_id = ledger(fleet.dir.file("out.jsonl"), ids);
    const auto by_host = work_by_host(by_id);
    INFO("work by host: " << json(by_host).dump());
    CHECK(by_host.count("hostC") == 1);  // the slow host still did work
    const auto s = fleet.status();
    INFO(describe(s));
    REQUIRE(s);
    CHECK((*s)["totals"]["workers_expired"] == 0);
    CHECK(!host_entry(*s, C).is_null());
    CHECK(relay.connections() >= 1);
    CHECK(relay.bytes(Relay::Dir::up) > 0);
    CHECK(relay.bytes(Relay::Dir::down) > 0);
    CHECK(sink_relay.connections() >= 2);  // both worker hosts sent results through it
    CHECK(sink_relay.bytes(Relay::Dir::up) > 0);
}

TEST_CASE("connections reset and refused by a relay: the worker comes back and every task ends once", "[multihost]") {
    MULTIHOST_NETWORK(net, 4);
    Fleet fleet(net, false);
    fleet.start_broker(A, k_fast);
    constexpr int relay_port = 6556;
    Relay relay(net.host(A).name(), net.host(A).address(), relay_port, net.host(A).address(), k_backend_port);
    auto wc = fleet.worker(C, "threads", 2, k_fast, net.host(A).endpoint(relay_port));
    auto wd = fleet.worker(D, "processes", 2, k_fast);
    REQUIRE(fleet.wait_status([](const json& s) { return !host_entry(s, C).is_null() && !host_entry(s, D).is_null(); },
                              15s));

    const auto ids = write_tasks(fleet.dir.file("tasks.jsonl"), 300, "sleep_ms", {20});
    auto producer = fleet.producer(B, fleet.dir.file("tasks.jsonl"), fleet.dir.file("out.jsonl"), k_fast);
    REQUIRE(fleet.wait_status([](const json& s) { return host_num(s, C, "held") > 0; }, 10s));
    relay.reset_all();  // RST both ways while C holds tasks
    const auto reset_at = std::chrono::steady_clock::now();
    while (relay.connections() < 2 && std::chrono::steady_clock::now() - reset_at < 10s)
        std::this_thread::sleep_for(20ms);
    CHECK(relay.connections() >= 2);  // C connected again
    const auto back = fleet.wait_status([](const json& s) { return host_num(s, C, "held") > 0; }, 10s);
    INFO("after reset: " << describe(back));
    CHECK((back && host_num(*back, C, "held") > 0));  // and gets work again
    relay.cut();                                      // and now refused outright for a while
    std::this_thread::sleep_for(1s);
    const auto cut = fleet.status();
    INFO("during cut: " << describe(cut));
    CHECK((cut && host_entry(*cut, C).is_null()));
    relay.restore();
    const auto again = fleet.wait_status([](const json& s) { return !host_entry(s, C).is_null(); }, 10s);
    INFO("after restore: " << describe(again));
    CHECK((again && !host_entry(*again, C).is_null()));

    const auto rc = producer->wait(60s);
    INFO(read_file(fleet.dir.file("out.jsonl.err")));
    REQUIRE(rc == 0);
    ledger(fleet.dir.file("out.jsonl"), ids);
}

TEST_CASE("a host that loses every process and restarts them registers again and gets work", "[multihost]") {
    MULTIHOST_NETWORK(net, 4);
    Fleet fleet(net, false);
    auto workers = start_broker_and_workers(fleet, k_fast);
    REQUIRE(fleet.wait_status([](const json& s) { return !host_entry(s, C).is_null() && !host_entry(s, D).is_null(); },
                              15s));

    const auto ids = write_tasks(fleet.dir.file("tasks.jsonl"), 400, "sleep_ms", {25});
    auto producer = fleet.producer(B, fleet.dir.file("tasks.jsonl"), fleet.dir.file("out.jsonl"), k_fast);
    const auto busy = fleet.wait_status([](const json& s) { return host_num(s, D, "done") > 0; }, 10s);
    INFO("before: " << describe(busy));
    REQUIRE(busy);
    REQUIRE(host_num(*busy, D, "done") > 0);
    const auto pids_before = net.host(D).pids();
    CHECK(pids_before.size() >= 3);  // the worker and its two children
    net.host(D).kill_all();
    CHECK(net.host(D).pids().empty());
    // The old D is declared dead (its tasks re-dispatched) ...
    const auto dead = fleet.wait_status([](const json& s) { return host_entry(s, D).is_null(); }, 5s);
    INFO("after kill: " << describe(dead));
    CHECK((dead && host_entry(*dead, D).is_null()));
    // ... and the restarted D registers and takes work.
    workers.d = fleet.worker(D, "processes", 2, k_fast);
    const auto again = fleet.wait_status([](const json& s) { return host_num(s, D, "done") > 0; }, 10s);
    INFO("after restart: " << describe(again));
    REQUIRE(again);
    CHECK(host_num(*again, D, "done") > 0);
    CHECK(host_entry(*again, D)["workers"] >= 1);

    const auto rc = producer->wait(60s);
    INFO(read_file(fleet.dir.file("out.jsonl.err")));
    REQUIRE(rc == 0);
    ledger(fleet.dir.file("out.jsonl"), ids);
    // What the dead D held ran again elsewhere. (Its closed connections tell
    // the broker at once, so it need not wait for the heartbeats to expire.)
    const auto s = fleet.status();
    REQUIRE(s);
    CHECK((*s)["totals"]["redispatched"] >= 1);
}

namespace {

void remote_workers_script(bool secure) {
    MULTIHOST_NETWORK(net, 4);
    Fleet fleet(net, secure);
    fleet.start_broker(A);
    const auto hosts_file = fleet.dir.file("hosts.txt");
    write_file(hosts_file,
               "# namespaced hosts\n" + net.host(C).name() + " threads 2\n" + net.host(D).name() + " processes 2\n");
    const auto run_dir = fleet.dir.file("run");
    const std::string script = std::string(DROVER_SCRIPTS_DIR) + "/start-remote-workers.sh";
    {
        // A worker that exits at once (a bad flag) fails the script, with its log's end.
        const auto bad_hosts = fleet.dir.file("bad-hosts.txt");
        write_file(bad_hosts, net.host(C).name() + " fibers 2\n");
        std::string out;
        const int rc = run_command_rc(concat({"/bin/bash", script, bad_hosts, "--broker", fleet.backend(), "--via",
                                              "ip netns exec", "--remote-bin", DROVER_WORKER_EXE, "--run-dir",
                                              fleet.dir.file("bad-run"), "--log-dir", fleet.dir.path()},
                                             fleet.security()),
                                      &out);
        INFO(out);
        CHECK(rc == 1);
        CHECK(out.find("exited at once") != std::string::npos);
        CHECK(out.find("not in {solo") != std::string::npos);  // the worker's own message, from its log
    }
    const auto started =
        run_command(concat({"/bin/bash", script, hosts_file, "--broker", fleet.backend(), "--via", "ip netns exec",
                            "--remote-bin", DROVER_WORKER_EXE, "--run-dir", run_dir, "--log-dir", fleet.dir.path()},
                           fleet.security()));
    INFO(started);
    // With --via the script names each worker after its hosts-file host.
    const auto c_name = net.host(C).name(), d_name = net.host(D).name();
    const auto ready = fleet.wait_status(
        [&](const json& s) {
            return s["hosts"].contains(c_name) && s["hosts"].contains(d_name) &&
                   s["hosts"][d_name]["workers"] == 2;  // a processes pool: each child registers
        },
        15s);
    INFO(describe(ready));
    REQUIRE(ready);
    REQUIRE((*ready)["hosts"].contains(c_name));
    REQUIRE((*ready)["hosts"].contains(d_name));
    CHECK((*ready)["hosts"][c_name]["slots"] == 2);
    CHECK((*ready)["hosts"][d_name]["slots"] == 2);
    CHECK((*ready)["workers"].size() == 3);
    // And each registered worker's pid lives in its host's namespace.
    std::set<pid_t> registered;
    for (const auto& w : (*ready)["workers"]) registered.insert(w["pid"].get<pid_t>());
    std::set<pid_t> in_hosts;
    for (const auto h : {C, D})
        for (const auto p : net.host(h).pids()) in_hosts.insert(p);
    for (const auto p : registered) CHECK(in_hosts.count(p) == 1);

    const auto ids = write_tasks(fleet.dir.file("tasks.jsonl"), 500, "sum_random", {20000});
    auto producer = fleet.producer(B, fleet.dir.file("tasks.jsonl"), fleet.dir.file("out.jsonl"));
    const auto rc = producer->wait(60s);
    INFO(read_file(fleet.dir.file("out.jsonl.err")));
    REQUIRE(rc == 0);
    ledger(fleet.dir.file("out.jsonl"), ids);
    // Each host's worker logs where --log-dir said (the test's directory, not /tmp).
    CHECK(read_file(fleet.dir.file("drover-worker-" + c_name + ".log")).find("worker.started") != std::string::npos);
    CHECK(read_file(fleet.dir.file("drover-worker-" + d_name + ".log")).find("supervisor.started") !=
          std::string::npos);

    const auto stopped =
        run_command({"/bin/bash", script, "stop", "--run-dir", run_dir});  // the start's --via, kept in run_dir
    INFO(stopped);
    const auto none = fleet.wait_status([](const json& s) { return s["workers"].empty(); }, 10s);
    INFO(describe(none));
    CHECK((none && (*none)["workers"].empty()));
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline && !(net.host(C).pids().empty() && net.host(D).pids().empty()))
        std::this_thread::sleep_for(50ms);
    CHECK(net.host(C).pids().empty());
    CHECK(net.host(D).pids().empty());
}

}  // namespace

TEST_CASE("start-remote-workers.sh starts workers on the namespaced hosts and stop stops them all",
          "[multihost][script]") {
    remote_workers_script(false);
}

TEST_CASE("secure: start-remote-workers.sh --security starts workers on the namespaced hosts and stop stops them all",
          "[multihost][script][security]") {
    remote_workers_script(true);
}

TEST_CASE("start-remote-workers.sh --commands on two namespaced hosts: sha256sum of 200 files as run here",
          "[multihost][script][command]") {
    MULTIHOST_NETWORK(net, 4);
    Fleet fleet(net, false);
    fleet.start_broker(A);
    ::mkdir(fleet.dir.file("files").c_str(), 0755);
    std::set<std::string> ids;
    std::string lines;
    for (int i = 0; i < 200; ++i) {
        std::string content;
        for (int k = 0; k <= i * 37 % 500; ++k) content += std::to_string(i * k) + (k % 7 ? " " : "\n");
        const auto path = fleet.dir.file("files/f " + std::to_string(i) + ".txt");  // a blank in every name
        write_file(path, content);
        const std::string id = "f" + std::to_string(i);
        ids.insert(id);
        lines += json{{"id", id}, {"task", "sha"}, {"args", json::array({path})}}.dump() + "\n";
    }
    write_file(fleet.dir.file("tasks.jsonl"), lines);
    write_file(fleet.dir.file("commands.json"), R"({"sha": {"argv": "sha256sum -- {0}"}})");
    write_file(fleet.dir.file("hosts.txt"),
               net.host(C).name() + " threads 2\n" + net.host(D).name() + " processes 2\n");
    const std::string script = std::string(DROVER_SCRIPTS_DIR) + "/start-remote-workers.sh";
    const auto run_dir = fleet.dir.file("run");
    const auto started = run_command({"/bin/bash", script, fleet.dir.file("hosts.txt"), "--broker", fleet.backend(),
                                      "--via", "ip netns exec", "--remote-bin", DROVER_WORKER_EXE, "--run-dir", run_dir,
                                      "--log-dir", fleet.dir.path(), "--commands", fleet.dir.file("commands.json")});
    INFO(started);
    const auto ready = fleet.wait_status([](const json& s) { return s["workers"].size() == 3; }, 15s);
    INFO(describe(ready));
    REQUIRE(ready);

    auto producer = fleet.producer(B, fleet.dir.file("tasks.jsonl"), fleet.dir.file("out.jsonl"));
    const auto rc = producer->wait(60s);
    INFO(read_file(fleet.dir.file("out.jsonl.err")));
    REQUIRE(rc == 0);
    const std::string local = "cd '" + fleet.dir.path() + "' && sha256sum -- files/*.txt > local.sums";
    REQUIRE(std::system(local.c_str()) == 0);
    std::map<std::string, std::string> sums;  // path -> hash
    std::istringstream in(read_file(fleet.dir.file("local.sums")));
    for (std::string line; std::getline(in, line);) sums[fleet.dir.path() + "/" + line.substr(66)] = line.substr(0, 64);
    REQUIRE(sums.size() == 200);
    std::set<std::string> seen, hosts;
    for (const auto& o : read_json_lines(fleet.dir.file("out.jsonl"))) {
        INFO(o.dump());
        REQUIRE(o["status"] == "ok");
        CHECK(seen.insert(o["id"].get<std::string>()).second);  // each id once
        const std::string line = o["result"]["stdout"];
        CHECK(sums.at(line.substr(66, line.size() - 67)) == line.substr(0, 64));
        hosts.insert(o["worker"].get<std::string>().substr(0, o["worker"].get<std::string>().rfind(':')));
    }
    CHECK(seen == ids);
    CHECK(hosts.size() == 2);  // both hosts ran some
    (void)run_command({"/bin/bash", script, "stop", "--run-dir", run_dir});
}

// Not a namespaced test: broker, worker and producer on loopback, with the
// relay between the worker and the producer's sink. A connection reset drops
// what the relay holds: outcomes the worker has sent and forgotten. The
// worker then holds none of those tasks while the broker holds them
// unsettled; after the grace (4 liveness windows) the broker runs them again,
// and every task ends exactly once at the sink.
TEST_CASE("Outcomes lost in a reset sink connection: the tasks run again and each ends once",
          "[multihost][relay][unsettled]") {
    TempDir dir;
    BrokerProcess broker(dir, {"--heartbeat-ms", "200"});  // a grace of 4 x 3 x 200 ms = 2.4 s
    Process worker({DROVER_WORKER_EXE, "--broker", broker.backend, "--heartbeat-ms", "100"}, dir.file("worker.log"));
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    const int sink_port = free_tcp_port();
    const int relay_port = free_tcp_port();
    Relay relay("", "127.0.0.1", relay_port, "127.0.0.1", sink_port);

    zmq::context_t ctx;
    drover::ClientOptions o;
    o.broker = broker.frontend;
    o.sink = "tcp://127.0.0.1:" + std::to_string(sink_port);
    o.sink_advertise = "tcp://127.0.0.1:" + std::to_string(relay_port);
    o.heartbeat = 100ms;
    drover::Client client(ctx, o);
    std::mutex mu;
    std::map<std::string, int> ends;  // id -> outcomes delivered
    std::map<std::string, drover::Result> results;
    const auto submit = [&](std::int64_t i) {
        client.submit_packed("echo", drover::pack_args(i), [&](drover::Result&& r) {
            std::lock_guard lock(mu);
            ++ends[r.id];
            results[r.id] = std::move(r);
        });
    };
    // Through the relay twice: the worker's first socket to a sink sends only
    // once connected, then gives way to one that queues (SinkSockets), whose
    // connection the second result proves up.
    submit(-1);
    client.wait_all();
    submit(-2);
    client.wait_all();
    REQUIRE(ends.size() == 2);

    relay.stall(800ms);  // holds what the worker sends, then lets traffic through again (within the grace)
    const auto before = relay.received(Relay::Dir::up);
    constexpr int n = 20;
    for (int i = 0; i < n; ++i) submit(i);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (relay.received(Relay::Dir::up) == before && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(10ms);
    REQUIRE(relay.received(Relay::Dir::up) > before);  // the outcomes left the worker
    std::this_thread::sleep_for(300ms);                // and the rest (20 echo tasks take a few ms)
    relay.reset_all();                                 // drops the held outcomes; the worker's socket connects again

    const auto until = std::chrono::steady_clock::now() + 30s;
    while (client.unfinished() > 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(20ms);
    const bool finished = client.unfinished() == 0;
    const auto status = wait_status(
        broker.frontend, [](const json& s) { return s["totals"]["recovered"].get<int>() > 0; }, 5s);
    INFO(read_file(dir.file("worker.log.err")));
    REQUIRE(finished);
    std::lock_guard lock(mu);
    CHECK(ends.size() == n + 2);
    for (const auto& [id, count] : ends) CHECK(count == 1);
    for (const auto& [id, r] : results) {
        CAPTURE(id);
        CHECK(r.ok());
    }
    REQUIRE(status);
    INFO((*status)["totals"].dump());
    INFO(read_file(dir.file("broker.log.err")));
    CHECK((*status)["totals"]["recovered"].get<int>() >= 1);
    CHECK(read_file(dir.file("broker.log.err")).find("worker.unsettled") != std::string::npos);
}
