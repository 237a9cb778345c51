// Writes the DRV4 golden vectors from the real encoders: the JSON file that
// the unit tests (tests/unit/vectors_test.cpp) and other languages' clients
// check themselves against, and the byte-exact examples of the protocol
// document between its "<!-- vector NAME -->" and "<!-- end vector -->" markers.
//
//   build/tests/drover_protocol_vectors tests/vectors/protocol.json docs/protocol.md
//
// Every vector tells one story: a producer whose sink key is 00 01 .. 0f
// submits tasks 81234567.1 to .3 and a detached task report-7 for a
// standalone sink whose key is a0 a1 .. af; worker node-3:4242 runs them.
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <msgpack.hpp>

#include "drover/common/protocol.hpp"
#include "internal/proof.hpp"
#include "wire_json.hpp"

namespace {

using namespace drover;
using proto::Command;
using vectors::Json;

const std::string k_sink_key = from_hex_text("000102030405060708090a0b0c0d0e0f");
const std::string k_standalone_key = from_hex_text("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
const std::string k_reply_to = "tcp://10.0.0.5:41234";
const std::string k_standalone = "tcp://10.0.0.7:7000";
const std::string k_detached_id = "report-7";

// The sink key of a task of the story.
const std::string& key_of(const std::string& id) { return id == k_detached_id ? k_standalone_key : k_sink_key; }
std::string secret_of(const std::string& id) { return task_secret(key_of(id), id); }

template <class... A>
std::string args(const A&... a) {
    msgpack::sbuffer b;
    msgpack::pack(b, std::make_tuple(a...));
    return std::string(b.data(), b.size());
}
template <class T>
std::string value(const T& v) {
    msgpack::sbuffer b;
    msgpack::pack(b, v);
    return std::string(b.data(), b.size());
}

proto::Task task(const std::string& id, const std::string& name, std::string arguments) {
    proto::Task t;
    t.id = id;
    t.name = name;
    t.args = std::move(arguments);
    t.reply_to = id == k_detached_id ? k_standalone : k_reply_to;
    t.detached = id == k_detached_id;
    return t;
}

// As the producer sends it: with its secret.
proto::Task submitted(proto::Task t) {
    t.secret = secret_of(t.id);
    return t;
}

// As the broker dispatches attempt `attempt`: with its token.
proto::Task dispatched(proto::Task t, std::uint32_t attempt, bool start) {
    t.attempt = attempt;
    t.token = attempt_token(secret_of(t.id), attempt);
    t.start = start;
    return t;
}

proto::Outcome outcome(const std::string& id, const std::string& name, proto::Status status, std::uint32_t attempt,
                       const std::string& worker) {
    proto::Outcome o;
    o.id = id;
    o.task = name;
    o.status = status;
    o.attempt = attempt;
    o.worker = worker;
    o.token = worker == "broker" ? broker_token(secret_of(id), attempt) : attempt_token(secret_of(id), attempt);
    return o;
}

struct Vector {
    std::string name;
    Command command;
    std::optional<std::string> body;  // nullopt: the header frame alone
};

// A supervisor's key for LOST reports: 16 bytes, 0x10 to 0x1f.
const std::string k_lost_key = "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f";

std::vector<Vector> worker_vectors() {
    std::vector<Vector> v;
    v.push_back({"hello", Command::hello,
                 proto::encode(proto::Hello{
                     "node-3:4242", "node-3", 4242, "threads", 2, {"echo", "sum_random"}, 0, 16 * 1024 * 1024, 0})});
    // A processes-pool child registering again: it holds a task, and gives its supervisor's key for LOST.
    v.push_back(
        {"hello-holding", Command::hello,
         proto::encode(proto::Hello{
             "node-3:4250", "node-3", 4250, "processes", 1, {"sum_random"}, 1, 16 * 1024 * 1024, 1, k_lost_key})});
    v.push_back({"ready", Command::ready, proto::encode(proto::Ready{4, 2, {{"sum_random", 5'200'000}}})});
    v.push_back({"ready-plain", Command::ready, proto::encode(proto::Ready{8, 0, {}})});
    proto::Tasks dispatch;
    dispatch.tasks.push_back(dispatched(task("81234567.1", "sum_random", args(1'000'000)), 1, true));
    auto second = task("81234567.2", "sum_random", args(1'000'000, 7));
    second.max_attempts = 5;
    second.timeout_ms = 30'000;
    second.retry_on_error = true;
    dispatch.tasks.push_back(dispatched(second, 2, false));
    dispatch.tasks.push_back(dispatched(task(k_detached_id, "echo", value(std::string("hi"))), 1, false));
    v.push_back({"dispatch", Command::dispatch, proto::encode(dispatch)});
    v.push_back({"heartbeat-worker", Command::heartbeat, proto::encode_worker_heartbeat(2)});
    v.push_back({"heartbeat-broker", Command::heartbeat, proto::encode_heartbeat("5f3a9c0d1e2b4a68")});
    v.push_back({"heartbeat-empty", Command::heartbeat, std::nullopt});
    v.push_back({"bye-worker", Command::bye, proto::encode(proto::Ids{{"81234567.2"}})});
    v.push_back({"bye-empty", Command::bye, std::nullopt});
    v.push_back({"reset", Command::reset, std::nullopt});
    v.push_back({"lost", Command::lost, proto::encode(proto::Lost{"node-3:4250", k_lost_key})});
    v.push_back({"retry", Command::retry, proto::encode(proto::Ids{{"81234567.2"}})});
    v.push_back({"return", Command::give_back, proto::encode(proto::Ids{{"81234567.3"}})});
    return v;
}

std::vector<Vector> result_vectors() {
    std::vector<Vector> v;
    auto ok = outcome("81234567.1", "sum_random", proto::Status::ok, 1, "node-3:4242/0");
    ok.result = value(50'512);
    ok.elapsed_us = 8'123;
    auto error = outcome("81234567.2", "sum_random", proto::Status::error, 2, "node-3:4242/0");
    error.error = "n must be >= 0";
    error.elapsed_us = 15;
    v.push_back({"result", Command::result, proto::encode(proto::Results{{ok, error}})});
    auto gone = outcome("81234567.3", "ping", proto::Status::cancelled, 0, "broker");
    gone.error = std::string(proto::k_producer_gone);
    v.push_back({"result-broker", Command::result, proto::encode(proto::Results{{gone}})});
    auto detached = outcome(k_detached_id, "echo", proto::Status::ok, 1, "node-3:4242/1");
    detached.result = value(std::string("hi"));
    detached.elapsed_us = 2;
    v.push_back({"result-detached", Command::result, proto::encode(proto::Results{{detached}})});
    return v;
}

std::vector<Vector> producer_vectors() {
    std::vector<Vector> v;
    v.push_back({"submit-one-task", Command::submit,
                 proto::encode(proto::Tasks{{submitted(task("81234567.1", "sum_random", args(1'000'000)))}})});
    proto::Tasks batch;
    auto second = task("81234567.2", "sum_random", args(1'000'000, 7));
    second.max_attempts = 5;
    second.timeout_ms = 30'000;
    second.retry_on_error = true;
    batch.tasks.push_back(submitted(second));
    batch.tasks.push_back(submitted(task("81234567.3", "ping", "")));
    batch.tasks.push_back(submitted(task(k_detached_id, "echo", value(std::string("hi")))));
    v.push_back({"submit-batch", Command::submit, proto::encode(batch)});
    v.push_back({"accepted", Command::accepted, proto::encode(proto::Ids{{k_detached_id}})});
    v.push_back({"rejected", Command::rejected, proto::encode(proto::Rejected{{"81234567.4"}, "queue_full"})});
    v.push_back(
        {"rejected-invalid", Command::rejected,
         proto::encode(proto::Rejected{
             {"81234567.5"}, "invalid: field 'max_attempts': expected an unsigned 32-bit integer, got a float"})});
    v.push_back(
        {"settle", Command::settle, proto::encode(proto::Settle{{"81234567.1", "81234567.2", "81234567.3"}, 0, {}})});
    v.push_back({"settle-proofs", Command::settle,
                 proto::encode(proto::Settle{{k_detached_id}, 0, {settle_proof(secret_of(k_detached_id))}})});
    v.push_back({"settled", Command::settled, proto::encode(proto::Ids{{k_detached_id}})});
    v.push_back({"cancel", Command::cancel, proto::encode(proto::Ids{{"81234567.4"}})});
    v.push_back({"status", Command::status, std::nullopt});
    v.push_back({"error", Command::error,
                 proto::encode(proto::Error{"wrong_version",
                                            "this broker speaks DRV4 and the message is DRV3: run one drover release "
                                            "(one protocol version) on the broker, its workers and its producers",
                                            0x10})});
    v.push_back({"error-no-command", Command::error,
                 proto::encode(proto::Error{
                     "bad_header", "the first frame is not a DRV4 header: 5 bytes, \"DRV4\" and a command byte", {}})});
    return v;
}

Json message_json(const Vector& v) {
    Json frames = Json::array({to_hex_text(proto::view(proto::make_header(v.command)))});
    if (v.body) frames.push_back(to_hex_text(*v.body));
    return Json{{"name", v.name},
                {"command", proto::command_name(v.command)},
                {"frames", frames},
                {"body", v.body ? vectors::to_wire_json(*v.body) : Json(nullptr)}};
}

Json proof_json(const std::string& id, std::uint32_t attempt) {
    const std::string secret = secret_of(id);
    return Json{{"sink_key", to_hex_text(key_of(id))},
                {"id", id},
                {"task_secret", to_hex_text(secret)},
                {"attempt", attempt},
                {"attempt_token", attempt_token(secret, attempt)},
                {"broker_token", broker_token(secret, attempt)},
                {"settle_proof", settle_proof(secret)}};
}

// "44 52 56 34 10": a frame's bytes, 16 a line, each line after the first
// indented as deep as `indent`.
std::string spaced_hex(const std::string& hex, std::size_t indent) {
    std::string out;
    for (std::size_t i = 0; i < hex.size(); i += 2) {
        if (i > 0) out += (i % 32 == 0) ? "\n" + std::string(indent, ' ') : " ";
        out += hex.substr(i, 2);
    }
    return out;
}

// The example of one vector, as the document shows it.
std::string render(const Json& v) {
    std::string out = "```text\n";
    const auto& frames = v["frames"];
    out += "header  " + spaced_hex(frames[0].get<std::string>(), 8) + "\n";
    if (frames.size() > 1) out += "body    " + spaced_hex(frames[1].get<std::string>(), 8) + "\n";
    out += "```\n";
    if (!v["body"].is_null()) out += "```json\n" + v["body"].dump() + "\n```\n";
    return out;
}

// Replaces the text between each vector's markers in `doc`; returns the
// names of vectors without markers.
std::vector<std::string> fill_document(std::string& doc, const Json& messages) {
    std::vector<std::string> missing;
    for (const auto& v : messages) {
        const std::string begin = "<!-- vector " + v["name"].get<std::string>() + " -->\n";
        const auto at = doc.find(begin);
        const auto end = at == std::string::npos ? at : doc.find("<!-- end vector -->", at);
        if (end == std::string::npos) {
            missing.push_back(v["name"].get<std::string>());
            continue;
        }
        doc.replace(at + begin.size(), end - at - begin.size(), render(v));
    }
    return missing;
}

// A JSON array with one element a line: the file diffs by vector.
std::string one_a_line(const Json& array) {
    std::string out = "[";
    for (std::size_t i = 0; i < array.size(); ++i) out += (i ? ",\n  " : "\n  ") + array[i].dump();
    return out + "\n ]";
}

// The proofs as the rows of the document's table.
std::string proof_rows(const Json& proofs) {
    std::string out;
    for (const auto& p : proofs)
        out += "| `" + p["sink_key"].get<std::string>() + "` | `" + p["id"].get<std::string>() + "` | `" +
               p["task_secret"].get<std::string>() + "` | " + p["attempt"].dump() + " | " + p["attempt_token"].dump() +
               " | " + p["broker_token"].dump() + " | " + p["settle_proof"].dump() + " |\n";
    return out;
}

// Replaces the text between "<!-- proofs -->" and "<!-- end proofs -->".
bool fill_proofs(std::string& doc, const Json& proofs) {
    const std::string begin = "<!-- proofs -->\n";
    const auto at = doc.find(begin);
    const auto end = at == std::string::npos ? at : doc.find("<!-- end proofs -->", at);
    if (end == std::string::npos) return false;
    doc.replace(at + begin.size(), end - at - begin.size(), proof_rows(proofs));
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: drover_protocol_vectors VECTORS.json PROTOCOL.md\n";
        return 2;
    }
    Json messages = Json::array();
    for (const auto& group : {worker_vectors(), result_vectors(), producer_vectors()})
        for (const auto& v : group) messages.push_back(message_json(v));
    Json proofs = Json::array();
    for (const auto& [id, attempt] : std::vector<std::pair<std::string, std::uint32_t>>{
             {"81234567.1", 1}, {"81234567.2", 2}, {"81234567.3", 0}, {k_detached_id, 1}})
        proofs.push_back(proof_json(id, attempt));
    std::ofstream(argv[1]) << "{\"messages\": " << one_a_line(messages) << ",\n \"proofs\": " << one_a_line(proofs)
                           << "}\n";
    std::ifstream in(argv[2]);
    std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (const auto& name : fill_document(doc, messages))
        std::cerr << "drover_protocol_vectors: no <!-- vector " << name << " --> in " << argv[2] << "\n";
    if (!fill_proofs(doc, proofs)) std::cerr << "drover_protocol_vectors: no <!-- proofs --> in " << argv[2] << "\n";
    std::ofstream(argv[2]) << doc;
    return 0;
}
