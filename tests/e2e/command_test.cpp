// Command tasks over the real programs: drover-worker --command/--commands,
// tasks submitted as JSON lines through drover-producer submit.
#include <catch2/catch.hpp>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>

#include <sys/stat.h>
#include <unistd.h>

#include "cluster_fixture.hpp"

using namespace drover::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Submits `lines` (one JSON task a line) and returns the outcomes by id once the producer ends.
std::map<std::string, json> submit(const TempDir& dir, const std::string& frontend, const std::string& lines,
                                   const std::string& name = "tasks") {
    write_file(dir.file(name + ".jsonl"), lines);
    Process producer = start_producer(dir, frontend, {"submit"}, name + ".out", name + ".jsonl");
    REQUIRE(producer.wait(60s).has_value());
    std::map<std::string, json> by_id;
    for (auto& l : read_json_lines(dir.file(name + ".out")))
        if (l.contains("id")) by_id[l["id"].is_string() ? l["id"].get<std::string>() : l["id"].dump()] = l;
    return by_id;
}

std::string task_line(const std::string& id, const std::string& task, const json& args, const json& extra = {}) {
    json j = {{"id", id}, {"task", task}, {"args", args}};
    if (extra.is_object()) j.update(extra);
    return j.dump() + "\n";
}

std::string error_of(const json& outcome) { return outcome.value("error", std::string()); }

// The state letter and parent of process `pid` (a /proc entry's name), from
// its /proc stat; {0, 0} if it is gone.
std::pair<char, pid_t> state_of(const std::string& pid) {
    const auto stat = read_file("/proc/" + pid + "/stat");
    const auto close = stat.rfind(')');  // the name before it may hold spaces and ')'
    if (close == std::string::npos) return {0, 0};
    std::istringstream in(stat.substr(close + 1));
    char state = 0;
    pid_t ppid = 0;
    in >> state >> ppid;
    return {state, ppid};
}

pid_t parent_of(pid_t pid) { return state_of(std::to_string(pid)).second; }

// Whether process group `pgid` is gone (no member left), waiting up to `limit`.
bool group_gone(pid_t pgid, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (true) {
        if (::kill(-pgid, 0) == -1 && errno == ESRCH) return true;
        if (std::chrono::steady_clock::now() >= until) return false;
        std::this_thread::sleep_for(20ms);
    }
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

TEST_CASE("sha256sum of 200 files through 2 command workers matches sha256sum run here", "[e2e][command]") {
    TempDir dir;
    BrokerProcess broker(dir);
    ::mkdir(dir.file("files").c_str(), 0755);
    std::string lines;
    for (int i = 0; i < 200; ++i) {
        std::string content;
        for (int k = 0; k <= i * 37 % 500; ++k) content += std::to_string(i * k) + (k % 7 ? " " : "\n");
        const auto path = dir.file("files/f " + std::to_string(i) + ".txt");  // a blank in every name
        write_file(path, content);
        lines += task_line("f" + std::to_string(i), "sha", json::array({path}));
    }
    auto w1 = start_worker(dir, broker.backend, "w1.log", {"--command", "sha=sha256sum -- {}"});
    auto w2 = start_worker(dir, broker.backend, "w2.log",
                           {"--pool", "processes", "-c", "2", "--command", "sha=sha256sum -- {}"});
    REQUIRE(wait_for_workers(broker.frontend, 2, 10s));
    const auto out = submit(dir, broker.frontend, lines);
    REQUIRE(out.size() == 200);
    std::string local_args = "cd " + dir.path() + " && sha256sum -- files/*.txt > local.sums";
    REQUIRE(std::system(local_args.c_str()) == 0);
    std::map<std::string, std::string> local;  // path -> hash
    std::istringstream sums(read_file(dir.file("local.sums")));
    for (std::string line; std::getline(sums, line);) local[dir.path() + "/" + line.substr(66)] = line.substr(0, 64);
    REQUIRE(local.size() == 200);
    for (const auto& [id, o] : out) {
        REQUIRE(o["status"] == "ok");
        CHECK(o["result"]["exit"] == 0);
        const std::string line = o["result"]["stdout"];
        const std::string path = line.substr(66, line.size() - 67);
        CHECK(local.at(path) == line.substr(0, 64));
    }
}

TEST_CASE("command arguments are never shell syntax, and exit codes, signals and missing programs map to errors",
          "[e2e][command]") {
    TempDir dir;
    BrokerProcess broker(dir);
    auto w = start_worker(
        dir, broker.backend, "w.log",
        {"-c", "2", "--pool", "threads", "--command", "say=echo {}", "--command", "shq=sh -c 'printf %s \"$1\"' sh {0}",
         "--command", "run=sh -c {0}", "--command", "nope=/no/such/program", "--command", "big=head -c {0} /dev/zero"});
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    const std::string a = dir.file("a"), b = dir.file("b"), c = dir.file("c");
    std::string lines = task_line("i1", "say", {"; touch " + a, "$(touch " + b + ")", "`touch " + c + "`"}) +
                        task_line("i2", "shq", {"$(touch " + b + "); touch " + c}) +
                        task_line("i3", "say", {"x", 42, true, 1.5}) +
                        task_line("e1", "run", {"echo bad >&2; exit 3"}) + task_line("e2", "run", {"kill -KILL $$"}) +
                        task_line("e3", "nope", json::array()) + task_line("e4", "shq", json::array()) +
                        task_line("e5", "say", json::array({json::array({1})})) + task_line("t1", "big", {"3000000"});
    auto out = submit(dir, broker.frontend, lines);
    REQUIRE(out.size() == 9);
    CHECK(out["i1"]["result"]["stdout"] == "; touch " + a + " $(touch " + b + ") `touch " + c + "`\n");
    CHECK(out["i2"]["result"]["stdout"] == "$(touch " + b + "); touch " + c);
    CHECK((!exists(a) && !exists(b) && !exists(c)));
    CHECK(out["i3"]["result"]["stdout"] == "x 42 true 1.5\n");
    CHECK(out["e1"]["status"] == "error");
    CHECK(error_of(out["e1"]) == "exit code 3; stderr: bad");
    CHECK(error_of(out["e2"]) == "killed by signal 9 (SIGKILL)");
    CHECK(error_of(out["e3"]) == "cannot run '/no/such/program': No such file or directory");
    CHECK(error_of(out["e4"]).find("placeholder {0}") != std::string::npos);
    CHECK(error_of(out["e5"]).find("argument 1 is an array") != std::string::npos);
    REQUIRE(out["t1"]["status"] == "ok");
    CHECK(out["t1"]["result"]["stdout"].get<std::string>().size() == 1 << 20);
    CHECK(out["t1"]["result"]["stdout_truncated"] == true);
    CHECK(w.running());
}

TEST_CASE("a command's timeout kills its whole process group, in every pool", "[e2e][command]") {
    TempDir dir;
    BrokerProcess broker(dir);
    for (const std::string pool : {"solo", "threads", "processes"}) {
        DYNAMIC_SECTION(pool) {
            const auto pidfile = dir.file("pgid." + pool);
            auto w = start_worker(
                dir, broker.backend, "w." + pool + ".log",
                {"--pool", pool, "-c", "1", "--command", "slow=sh -c 'echo $$ > \"$0\"; sleep 30 & sleep 30' {0}"});
            REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
            const auto t0 = std::chrono::steady_clock::now();
            auto out = submit(dir, broker.frontend,
                              task_line("s", "slow", {pidfile}, {{"timeout_ms", 500}, {"max_attempts", 1}}), pool);
            REQUIRE(out.size() == 1);
            CHECK(out["s"]["status"] == "timeout");
            CHECK(std::chrono::steady_clock::now() - t0 < 10s);
            const auto pgid = std::stoi(read_file(pidfile));
            CHECK(group_gone(pgid, 5s));  // the sleep in the background went with it
            w.signal(SIGKILL);
            w.wait(5s);
            REQUIRE(wait_status(
                broker.frontend, [](const json& s) { return s["workers"].empty(); }, 10s));
        }
    }
}

TEST_CASE("SIGTERM of a worker lets its running commands finish and report", "[e2e][command]") {
    TempDir dir;
    BrokerProcess broker(dir);
    auto w = start_worker(dir, broker.backend, "w.log", {"--pool", "threads", "-c", "2", "--command", "nap=sleep"});
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    write_file(dir.file("tasks.jsonl"), task_line("n1", "nap", {"1.5"}) + task_line("n2", "nap", {"1.5"}));
    Process producer = start_producer(dir, broker.frontend, {"submit"}, "out.jsonl", "tasks.jsonl");
    const auto both_held = [](const json& s) { return s["workers"].size() == 1 && s["workers"][0]["held"] == 2; };
    const auto st = wait_status(broker.frontend, both_held, 20s);
    REQUIRE(st);
    REQUIRE(both_held(*st));
    std::this_thread::sleep_for(200ms);  // held from their DISPATCH on: time for both commands to start
    w.signal(SIGTERM);
    REQUIRE(producer.wait(20s) == 0);
    const auto lines = read_json_lines(dir.file("out.jsonl"));
    REQUIRE(lines.size() == 2);
    for (const auto& l : lines) CHECK(l["status"] == "ok");
    CHECK(w.wait(10s) == 0);
}

TEST_CASE("a commands file is checked at start, and --list-tasks shows the commands", "[e2e][command]") {
    TempDir dir;
    write_file(dir.file("good.json"), R"({"up": {"argv": ["tr", "a-z", "A-Z"], "stdin": "arg"}})");
    write_file(dir.file("bad.json"), R"({"up": {"argv": "tr a-z A-Z", "stdn": "arg"}})");
    Process list(
        {DROVER_WORKER_EXE, "--commands", dir.file("good.json"), "--command", "h=sha256sum -- {}", "--list-tasks"},
        dir.file("list.out"));
    REQUIRE(list.wait(10s) == 0);
    const auto listed = read_file(dir.file("list.out"));
    CHECK(listed.find("h  command: sha256sum -- {}") != std::string::npos);
    CHECK(listed.find("up  command: tr a-z A-Z  [stdin: last argument]") != std::string::npos);
    Process bad({DROVER_WORKER_EXE, "--commands", dir.file("bad.json")}, dir.file("bad.out"));
    REQUIRE(bad.wait(10s) == 2);
    CHECK(read_file(dir.file("bad.out.err")).find("unknown field \"stdn\"") != std::string::npos);
    Process clash({DROVER_WORKER_EXE, "--command", "echo=/bin/echo"}, dir.file("clash.out"));
    REQUIRE(clash.wait(10s) == 2);

    BrokerProcess broker(dir);
    auto w = start_worker(dir, broker.backend, "w.log", {"--commands", dir.file("good.json")});
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    auto out = submit(dir, broker.frontend, task_line("u", "up", {"hello\n"}));
    CHECK(out["u"]["result"]["stdout"] == "HELLO\n");
}

TEST_CASE("a second SIGTERM of a worker kills its commands' process groups, in every pool", "[e2e][command]") {
    TempDir dir;
    BrokerProcess broker(dir);
    for (const std::string pool : {"threads", "processes"}) {
        DYNAMIC_SECTION(pool) {
            const auto pidfile = dir.file("pgid2." + pool);
            auto w = start_worker(
                dir, broker.backend, "w2." + pool + ".log",
                {"--pool", pool, "-c", "1", "--command", "slow=sh -c 'echo $$ > \"$0\"; sleep 30 & sleep 30' {0}"});
            REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
            write_file(dir.file("slow.jsonl"), task_line("s", "slow", {pidfile}));
            Process producer = start_producer(dir, broker.frontend, {"submit"}, "slow.out", "slow.jsonl");
            REQUIRE(!wait_line_file(pidfile, 10s).empty());
            const auto pgid = std::stoi(read_file(pidfile));
            w.signal(SIGTERM);
            std::this_thread::sleep_for(300ms);
            CHECK(::kill(-pgid, 0) == 0);  // the first lets it run
            w.signal(SIGTERM);
            CHECK(w.wait(10s).has_value());
            CHECK(group_gone(pgid, 5s));
            producer.signal(SIGKILL);
        }
    }
}

TEST_CASE("a processes pool ends the commands of a child that was killed, and of children it stops at once",
          "[e2e][command]") {
    TempDir dir;
    BrokerProcess broker(dir);
    const auto pidfile = dir.file("pgid3");
    auto w = start_worker(
        dir, broker.backend, "w3.log",
        {"--pool", "processes", "-c", "1", "--command", "slow=sh -c 'echo $$ > \"$0\"; sleep 30 & sleep 30' {0}"});
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    write_file(dir.file("slow.jsonl"), task_line("s", "slow", {pidfile}, {{"max_attempts", 1}}));
    Process producer = start_producer(dir, broker.frontend, {"submit"}, "slow.out", "slow.jsonl");
    REQUIRE(!wait_line_file(pidfile, 10s).empty());
    auto pgid = std::stoi(read_file(pidfile));
    // The child running it dies as on an OOM kill: its command, now the supervisor's, dies with it.
    const pid_t child = parent_of(pgid);  // the worker child that runs the command
    REQUIRE(child > 1);
    ::kill(child, SIGKILL);
    CHECK(group_gone(pgid, 5s));
    CHECK(producer.wait(20s) == 1);  // the task ends lost: its one attempt died
    // Three stop requests at once: the second ends the commands, the third kills the children.
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    std::remove(pidfile.c_str());
    Process again = start_producer(dir, broker.frontend, {"submit"}, "slow2.out", "slow.jsonl");
    REQUIRE(!wait_line_file(pidfile, 10s).empty());
    pgid = std::stoi(read_file(pidfile));
    for (int i = 0; i < 3; ++i) {
        w.signal(SIGTERM);
        std::this_thread::sleep_for(100ms);
    }
    CHECK(w.wait(10s).has_value());
    CHECK(group_gone(pgid, 5s));
    again.signal(SIGKILL);
}

TEST_CASE("a process that leaves its command's group and outlives its parent is reaped, not left a zombie",
          "[e2e][command]") {
    TempDir dir;
    BrokerProcess broker(dir);
    // The command starts a process in a session of its own and exits (after the process left its group):
    // that process comes to the worker.
    auto w = start_worker(
        dir, broker.backend, "w.log",
        {"--pool", "solo", "--command", "escape=sh -c 'setsid sleep 0.5 >/dev/null 2>&1 & sleep 0.2; exit 0'"});
    REQUIRE(wait_for_workers(broker.frontend, 1, 10s));
    write_file(dir.file("escape.jsonl"), task_line("e", "escape", json::array()));
    Process producer = start_producer(dir, broker.frontend, {"submit"}, "escape.out", "escape.jsonl");
    REQUIRE(producer.wait(20s) == 0);
    const auto zombies = [&] {
        int n = 0;
        for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
            const auto name = entry.path().filename().string();
            if (name.find_first_not_of("0123456789") != std::string::npos) continue;
            const auto [state, ppid] = state_of(name);
            if (ppid == w.pid() && state == 'Z') ++n;
        }
        return n;
    };
    // The escaped sleep ends 0.3 s after the task; the worker reaps once a second.
    const auto until = std::chrono::steady_clock::now() + 5s;
    std::this_thread::sleep_for(500ms);
    while (zombies() > 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(100ms);
    CHECK(zombies() == 0);
    CHECK(parent_of(w.pid()) > 0);  // the worker itself still runs
}
