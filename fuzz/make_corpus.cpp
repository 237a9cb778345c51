// Writes decode_fuzz's seed inputs: a real message of every DRV4 command, results and task lines nested to the data
// depth limit and past it.
//
// The seeds are committed in fuzz/corpus/; after a protocol change, refresh them with
//   cmake --build build --target drover_fuzz_corpus && build/fuzz/drover_fuzz_corpus fuzz/corpus
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <msgpack.hpp>
#include <nlohmann/json.hpp>

#include "drover/common/protocol.hpp"
#include "fuzz_frames.hpp"
#include "internal/unpack.hpp"

using namespace drover::proto;

namespace {

template <class T>
std::string packed(const T& value) {
    msgpack::sbuffer buf;
    msgpack::pack(buf, value);
    return std::string(buf.data(), buf.size());
}

Task task(std::string id, std::string name, std::string args) {
    Task t;
    t.id = std::move(id);
    t.name = std::move(name);
    t.args = std::move(args);
    t.max_attempts = 3;
    t.timeout_ms = 1500;
    t.reply_to = "tcp://10.0.0.1:40123";
    return t;
}

Outcome outcome(std::string id, Status status) {
    Outcome o;
    o.id = std::move(id);
    o.task = "sum_random";
    o.status = status;
    if (status == Status::ok) o.result = packed(50498237);
    else o.error = "boom";
    o.attempt = 1;
    o.worker = "host-a:4242";
    o.elapsed_us = 5610;
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: drover_fuzz_corpus DIR   writes one seed file a message into DIR\n";
        return 2;
    }
    const std::string dir = argv[1];
    bool ok = true;
    auto write_frames = [&](const std::string& name, const std::vector<std::string>& frames) {
        std::ofstream out(dir + "/" + name, std::ios::binary);
        out << drover::fuzz::join_frames(frames);
        ok = ok && out.good();
    };
    auto write_seed = [&](const std::string& name, Command c, std::optional<std::string> body) {
        std::vector<std::string> frames{std::string(view(make_header(c)))};
        if (body) frames.push_back(std::move(*body));
        write_frames(name, frames);
    };

    write_seed("hello", Command::hello,
               encode(Hello{"host-a:4242.1", "host-a", 4242, "processes", 4, {"sum_random", "echo"}}));
    write_seed("ready", Command::ready, encode(Ready{8}));
    Tasks dispatch{{task("p1:7", "sum_random", packed(std::vector<int>{1000000, 7}))}};
    dispatch.tasks[0].attempt = 2;
    dispatch.tasks[0].detached = true;
    write_seed("dispatch", Command::dispatch, encode(dispatch));
    write_seed("heartbeat", Command::heartbeat, std::nullopt);
    write_seed("heartbeat-instance", Command::heartbeat, encode_heartbeat("b-5f3a9c"));
    write_seed("heartbeat-held", Command::heartbeat, encode_worker_heartbeat(3));
    write_seed("bye", Command::bye, std::nullopt);
    write_seed("bye-empty-map", Command::bye, encode_empty());
    write_seed("reset", Command::reset, std::nullopt);
    write_seed("lost", Command::lost, encode(Lost{"host-a:4242.3"}));
    const Tasks submit{{task("job-1", "sum_random", packed(std::vector<int>{1000000, 1})),
                        task("job-2", "hello", packed(std::vector<std::string>{"bob"}))}};
    write_seed("submit", Command::submit, encode(submit));
    write_seed("accepted", Command::accepted, encode(Ids{{"job-1", "job-2"}}));
    write_seed("rejected", Command::rejected, encode(Rejected{{"job-3"}, "queue_full"}));
    write_seed("settle", Command::settle, encode(Ids{{"job-1"}}));
    write_seed("cancel", Command::cancel, encode(Ids{{"job-2"}}));
    write_seed("status", Command::status, std::nullopt);
    write_seed("error", Command::error, encode(Error{"wrong_version", "DRV3 is not DRV4", 0x10}));
    const auto status = nlohmann::json::to_msgpack({{"queued", 3}, {"workers", {{{"id", "w1"}, {"credits", 2}}}}});
    write_seed("status-reply", Command::status_reply, std::string(status.begin(), status.end()));
    write_seed("result", Command::result,
               encode(Results{{outcome("job-1", Status::ok), outcome("job-2", Status::error)}}));
    // Results and task lines at the depth limit and one level past it.
    const auto nested = [](std::size_t depth) { return std::string(depth, '\x91') + '\x01'; };
    auto at_limit = outcome("job-4", Status::ok), past_limit = outcome("job-5", Status::ok);
    at_limit.result = nested(drover::k_max_data_depth);
    past_limit.result = nested(drover::k_max_data_depth + 1);
    write_seed("result-deep", Command::result, encode(Results{{at_limit, past_limit}}));
    const auto json_nested = [](std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); };
    write_frames("task-line", {R"({"id":"j1","task":"hello","args":["[{\"]"],"max_attempts":2,"timeout_ms":500})"});
    write_frames("task-line-deep", {R"({"task":"echo","args":)" + json_nested(drover::k_max_data_depth) + "}"});
    if (!ok) {
        std::cerr << "drover_fuzz_corpus: cannot write into " << dir << "\n";
        return 1;
    }
    return 0;
}
