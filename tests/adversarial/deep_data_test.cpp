// Deeply nested data: a dispatched worker that returns a result nested
// 200,000 deep, a task line nested 100,000 deep, a status reply nested
// 200,000 deep. Each ends as one task's error (or one line rejected), naming
// the limit, and every process goes on.
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <string>
#include <thread>

#include <csignal>

#include <sys/wait.h>
#include <unistd.h>
#include <zmq.hpp>

#include "../e2e/cluster_fixture.hpp"
#include "drover/client/status.hpp"
#include "drover/common/protocol.hpp"
#include "raw_peer.hpp"

using namespace drover::test;
using namespace std::chrono_literals;
using nlohmann::json;
namespace proto = drover::proto;
using Catch::Matchers::Contains;

namespace {

// 200,000 nested one-element arrays around 1: msgpack of 200,001 bytes.
const std::string k_deep_result = std::string(200000, '\x91') + "\x01";

// A worker key holder's process, not a drover worker: it registers for the
// task "deep" and answers each dispatched attempt (its token copied, so the
// outcome is genuine) with k_deep_result, by RESULT to the broker. Its own
// thread heartbeats meanwhile, so the broker keeps it however slow the test.
class DeepWorker {
public:
    DeepWorker(zmq::context_t& ctx, const std::string& backend)
        : peer_(ctx, zmq::socket_type::dealer, backend, "deep-w"), thread_([this] { run(); }) {}
    ~DeepWorker() {
        stop_ = true;
        thread_.join();
    }

    // Waits until `n` tasks in all have been answered.
    bool answered(int n, std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (answered_.load() < n && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
        return answered_.load() >= n;
    }

private:
    void hello() {
        (void)peer_.send(proto::Command::hello, proto::encode(solo_hello("deep-w", "outsider", {"deep"})));
        (void)peer_.send(proto::Command::ready, proto::encode(proto::Ready{100, 100, {}}));
    }

    void run() {
        hello();
        while (!stop_) {
            (void)peer_.send(proto::Command::heartbeat, proto::encode_worker_heartbeat(0));
            auto m = peer_.receive(200ms);
            if (!m) continue;
            if (m->first == proto::Command::reset) hello();
            if (m->first != proto::Command::dispatch) continue;
            auto tasks = proto::decode_tasks(m->second);
            if (!tasks) continue;
            proto::Results results;
            for (const auto& t : tasks->tasks) {
                proto::Outcome o;
                o.id = t.id;
                o.task = t.name;
                o.status = proto::Status::ok;
                o.result = k_deep_result;
                o.attempt = t.attempt;
                o.worker = "deep-w";
                o.elapsed_us = 10;
                o.token = t.token;
                results.results.push_back(std::move(o));
            }
            if (peer_.send(proto::Command::result, proto::encode(results)))
                answered_ += static_cast<int>(results.results.size());
        }
    }

    RawPeer peer_;
    std::atomic<bool> stop_{false};
    std::atomic<int> answered_{0};
    std::thread thread_;
};

std::string hello_lines(const std::string& prefix, int count) {
    std::string text;
    for (int i = 0; i < count; ++i)
        text += json{{"id", prefix + std::to_string(i)}, {"task", "hello"}, {"args", {"x"}}}.dump() + "\n";
    return text;
}

// The task line of "deep" with id `id`, the one DeepWorker answers.
std::string deep_line(const std::string& id) { return R"({"id":")" + id + R"(","task":"deep","args":[]})" + "\n"; }

// Waits until the JSON-lines file at `path` has at least `n` lines; returns them.
std::vector<json> wait_lines(const std::string& path, std::size_t n, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto lines = read_json_lines(path);
    while (lines.size() < n && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(50ms);
        lines = read_json_lines(path);
    }
    return lines;
}

std::map<std::string, json> by_id(const std::vector<json>& lines) {
    std::map<std::string, json> out;
    for (const auto& l : lines) out[l.contains("id") ? l["id"].get<std::string>() : "line " + l["line"].dump()] = l;
    return out;
}

void check_deep_error(const json& line) {
    INFO(line.dump());
    CHECK(line["status"] == "error");
    CHECK_THAT(line["error"].get<std::string>(), Contains("nested deeper than 256 levels (limit)"));
}

// Every line but the deep one(s) is an ok hello.
void check_others_ok(const std::map<std::string, json>& lines, const std::string& deep_id) {
    for (const auto& [id, l] : lines) {
        if (id == deep_id) continue;
        INFO(l.dump());
        CHECK(l["status"] == "ok");
        CHECK(l["result"] == "Hello, x!");
    }
}

}  // namespace

TEST_CASE(
    "a result nested 200,000 deep ends its task as an error at drover-sink and at a live producer, "
    "and both go on",
    "[adversarial][depth]") {
    TempDir dir;
    BrokerProcess broker(dir);
    Process worker = start_worker(dir, broker.backend, "worker.log");
    zmq::context_t ctx;
    DeepWorker deep(ctx, broker.backend);
    REQUIRE(wait_for_workers(broker.frontend, 2, 20s));
    SinkProcess sink(dir, broker.frontend);
    const auto sink_ep = sink.address(10s);
    // Submits the task lines `tasks` through dir/`name`.jsonl with `args` after "submit".
    const auto submit = [&](const std::string& name, const std::string& tasks, const std::vector<std::string>& args,
                            const std::string& out) {
        write_file(dir.file(name + ".jsonl"), tasks);
        return start_producer(dir, broker.frontend, concat({"submit"}, args), out, name + ".jsonl");
    };

    // To drover-sink: one deep task among ten good ones.
    Process to_sink = submit("to-sink", hello_lines("a", 5) + deep_line("deep-a") + hello_lines("b", 5),
                             {"--reply-to", sink_ep}, "accepted.jsonl");
    REQUIRE(deep.answered(1, 60s));
    REQUIRE(to_sink.wait(60s) == 0);
    auto lines = by_id(wait_lines(sink.out_path(), 11, 60s));
    INFO(sink.log());
    REQUIRE(sink.running());
    REQUIRE(lines.size() == 11);
    check_deep_error(lines["deep-a"]);
    check_others_ok(lines, "deep-a");

    // To a live producer: the same, its outcomes on its own stdout.
    Process live =
        submit("live", hello_lines("c", 5) + deep_line("deep-c") + hello_lines("d", 5), {}, "live-out.jsonl");
    REQUIRE(deep.answered(2, 60s));
    const auto rc = live.wait(60s);
    INFO("exit status " << rc.value_or(-1));
    INFO(read_file(dir.file("live-out.jsonl.err")));
    REQUIRE(rc == 1);  // one task did not end ok
    lines = by_id(read_json_lines(dir.file("live-out.jsonl")));
    REQUIRE(lines.size() == 11);
    check_deep_error(lines["deep-c"]);
    check_others_ok(lines, "deep-c");

    // Later tasks still flow to the sink, another deep one among them.
    Process later =
        submit("later", deep_line("deep-e") + hello_lines("e", 10), {"--reply-to", sink_ep}, "accepted-later.jsonl");
    REQUIRE(deep.answered(3, 60s));
    REQUIRE(later.wait(60s) == 0);
    lines = by_id(wait_lines(sink.out_path(), 22, 60s));
    REQUIRE(sink.running());
    REQUIRE(lines.size() == 22);
    check_deep_error(lines["deep-e"]);
    CHECK(lines["e9"]["status"] == "ok");
    CHECK(sink.log().find("sink.result_too_deep") != std::string::npos);
    CHECK(broker.process->running());
}

TEST_CASE("drover-producer submit rejects a task line nested 100,000 deep and runs the others",
          "[adversarial][depth]") {
    TempDir dir;
    BrokerProcess broker(dir);
    Process worker = start_worker(dir, broker.backend, "worker.log");
    REQUIRE(wait_for_workers(broker.frontend, 1, 20s));
    const auto nested = [](std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); };
    // Line 6 is 100,000 deep; line 7 is 256 deep with its own object, the most allowed.
    write_file(dir.file("tasks.jsonl"), hello_lines("a", 5) + R"({"id":"deep","task":"echo","args":[)" +
                                            nested(100000) + "]}\n" + R"({"id":"edge","task":"echo","args":)" +
                                            nested(255) + "}\n" + hello_lines("b", 5));
    Process producer = start_producer(dir, broker.frontend, {"submit"}, "out.jsonl", "tasks.jsonl");
    const auto rc = producer.wait(60s);
    INFO("exit status " << rc.value_or(-1));
    INFO(read_file(dir.file("out.jsonl.err")));
    REQUIRE(rc == 1);  // a line was rejected
    auto lines = by_id(read_json_lines(dir.file("out.jsonl")));
    REQUIRE(lines.size() == 12);
    REQUIRE(lines.count("line 6") == 1);
    CHECK(lines["line 6"]["status"] == "rejected");
    CHECK(lines["line 6"]["error"] == "task line nested deeper than 256 levels (limit)");
    CHECK(lines["edge"]["status"] == "ok");
    CHECK(lines["edge"]["result"] == json::parse(nested(254)));  // echo: the single argument back
    lines.erase("line 6");
    check_others_ok(lines, "edge");
    CHECK(worker.running());
}

TEST_CASE("a status reply nested 200,000 deep is refused by fetch_status", "[adversarial][depth]") {
    // fetch_status runs in a child, so that a crash is an exit status here.
    const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_tcp_port());
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        std::signal(SIGSEGV, SIG_DFL);  // not Catch's handler: a crash ends the child
        std::signal(SIGBUS, SIG_DFL);
        zmq::context_t ctx;
        const auto status = drover::fetch_status(ctx, endpoint, 10000ms);
        ::_exit(status ? 1 : 0);
    }
    // A fake broker on that frontend: answers STATUS with a deep body.
    zmq::context_t ctx;
    zmq::socket_t fake(ctx, zmq::socket_type::router);
    fake.set(zmq::sockopt::linger, 0);
    fake.bind(endpoint);
    zmq::pollitem_t item{fake.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, 10s) > 0) {
        zmq::message_t identity, rest;
        (void)fake.recv(identity);
        while (fake.get(zmq::sockopt::rcvmore)) (void)fake.recv(rest);
        auto header = proto::make_header(proto::Command::status_reply);
        fake.send(identity, zmq::send_flags::sndmore);
        fake.send(header, zmq::send_flags::sndmore);
        fake.send(zmq::buffer(k_deep_result), zmq::send_flags::none);
    }
    int st = 0;
    for (int i = 0; i < 600 && ::waitpid(child, &st, WNOHANG) == 0; ++i) std::this_thread::sleep_for(50ms);
    if (::waitpid(child, &st, WNOHANG) == 0) {
        ::kill(child, SIGKILL);
        ::waitpid(child, &st, 0);
        FAIL("fetch_status did not return");
    }
    INFO("child " << (WIFSIGNALED(st) ? "killed by signal " + std::to_string(WTERMSIG(st))
                                      : "exit status " + std::to_string(WEXITSTATUS(st))));
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);  // returned, with no status
}
