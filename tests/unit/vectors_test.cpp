// The golden vectors (tests/vectors/protocol.json) against the real
// protocol: each decodes with its command's decoder to what its JSON says,
// encodes back to the same bytes, its tokens and proofs are what proof.cpp
// computes, and its bytes appear in docs/protocol.md.
#include <cctype>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>

#include <catch2/catch.hpp>

#include "drover/common/protocol.hpp"
#include "internal/proof.hpp"
#include "wire_json.hpp"

using namespace drover;
using proto::Command;
using vectors::Json;

namespace {

std::string read_source(const std::string& path) {
    std::ifstream in(std::string(DROVER_SOURCE_DIR) + "/" + path);
    REQUIRE(in);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

const Json& golden() {
    static const Json j = Json::parse(read_source("tests/vectors/protocol.json"));
    return j;
}

Json bin(std::string_view bytes) { return Json{{"bin", to_hex_text(bytes)}}; }

Json task_json(const proto::Task& t) {
    Json j{{"id", t.id}, {"name", t.name}};
    if (!t.args.empty()) j["args"] = bin(t.args);
    if (t.attempt != 0) j["attempt"] = t.attempt;
    if (t.max_attempts != proto::k_default_max_attempts) j["max_attempts"] = t.max_attempts;
    if (t.timeout_ms != 0) j["timeout_ms"] = t.timeout_ms;
    if (!t.reply_to.empty()) j["reply_to"] = t.reply_to;
    if (t.detached) j["detached"] = true;
    if (t.retry_on_error) j["retry_on_error"] = true;
    if (!t.secret.empty()) j["secret"] = bin(t.secret);
    if (t.token != 0) j["token"] = t.token;
    if (t.start) j["start"] = true;
    return j;
}

// A batch's tasks as decoded with their batch's reply_to apart.
Json tasks_json(const proto::Tasks& m, std::string_view batch_reply_to) {
    Json tasks = Json::array();
    for (const auto& t : m.tasks) tasks.push_back(task_json(t));
    Json j{{"tasks", tasks}};
    if (!batch_reply_to.empty()) j["reply_to"] = batch_reply_to;
    return j;
}

Json outcome_json(const proto::Outcome& o, const std::string& batch_worker) {
    Json j{{"id", o.id}};
    if (!o.task.empty()) j["task"] = o.task;
    j["status"] = proto::status_name(o.status);
    if (!o.result.empty()) j["result"] = bin(o.result);
    if (!o.error.empty()) j["error"] = o.error;
    if (o.attempt != 0) j["attempt"] = o.attempt;
    if (o.worker != batch_worker) j["worker"] = o.worker;
    if (o.elapsed_us != 0) j["elapsed_us"] = o.elapsed_us;
    if (o.token != 0) j["token"] = o.token;
    return j;
}

// Outcomes as decoded (each with its worker): the batch's worker is the one they share.
Json results_json(const proto::Results& m) {
    const std::string shared = m.results.empty() ? "" : m.results.front().worker;
    Json results = Json::array();
    for (const auto& o : m.results) results.push_back(outcome_json(o, shared));
    Json j{{"results", results}};
    if (!shared.empty()) j["worker"] = shared;
    return j;
}

Json hello_json(const proto::Hello& h) {
    Json j{
        {"worker", h.worker}, {"host", h.host},   {"pid", h.pid},           {"pool", h.pool},
        {"slots", h.slots},   {"tasks", h.tasks}, {"restarts", h.restarts}, {"max_message_bytes", h.max_message_bytes}};
    if (h.held != 0) j["held"] = h.held;
    if (!h.lost_key.empty()) j["lost_key"] = bin(h.lost_key);
    return j;
}

Json ready_json(const proto::Ready& r) {
    Json j{{"credits", r.credits}};
    if (r.starts != 0) j["starts"] = r.starts;
    if (!r.run_ns.empty()) {
        Json run_ns = Json::object();
        for (const auto& [name, ns] : r.run_ns) run_ns[name] = ns;
        j["run_ns"] = run_ns;
    }
    return j;
}

Json settle_json(const proto::Settle& s) {
    Json j{{"ids", s.ids}, {"timed_out", s.timed_out}};
    if (!s.proofs.empty()) {
        std::string bytes;
        for (const auto p : s.proofs)
            for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>(p >> (8 * i)));  // little-endian
        j["proofs"] = bin(bytes);
    }
    return j;
}

Json error_json(const proto::Error& e) {
    Json j{{"reason", e.reason}};
    if (!e.detail.empty()) j["detail"] = e.detail;
    if (e.command) j["command"] = *e.command;
    j["protocol"] = e.protocol;
    return j;
}

// What decoding a body with its command's decoder gave: the value as JSON
// (the vector's body JSON, field by field) and its encoding again.
struct Decoded {
    Json fields;
    std::string encoded;
};

template <class T>
T ok(proto::Decoded<T> d) {
    INFO("decode error: " << proto::decode_error_name(d.error()));
    REQUIRE(d.ok());
    return std::move(*d);
}

Decoded decode_tasks(Command c, const std::string& body) {
    std::string_view batch;
    auto m = ok(c == Command::submit ? proto::decode_submit(body, batch) : proto::decode_tasks(body, batch));
    for (const auto& t : m.tasks) CHECK(t.problem.empty());
    Decoded d{tasks_json(m, batch), ""};
    for (auto& t : m.tasks)
        if (t.reply_to.empty()) t.reply_to = batch;
    d.encoded = proto::encode(m);
    return d;
}

Decoded decode_heartbeat(const std::string& body) {
    if (body.empty()) return {nullptr, ""};
    if (const auto held = ok(proto::decode_worker_heartbeat(body)))
        return {Json{{"held", *held}}, proto::encode_worker_heartbeat(*held)};
    const auto instance = ok(proto::decode_heartbeat(body));
    return {Json{{"instance", instance}}, proto::encode_heartbeat(instance)};
}

Decoded decode_ids(const std::string& body) {
    const auto m = ok(proto::decode_ids(body));
    return {Json{{"ids", m.ids}}, proto::encode(m)};
}

Decoded decode(Command c, const std::string& body) {
    switch (c) {
        case Command::hello: {
            const auto m = ok(proto::decode_hello(body));
            return {hello_json(m), proto::encode(m)};
        }
        case Command::ready: {
            const auto m = ok(proto::decode_ready(body));
            return {ready_json(m), proto::encode(m)};
        }
        case Command::dispatch:
        case Command::submit: return decode_tasks(c, body);
        case Command::heartbeat: return decode_heartbeat(body);
        case Command::bye:
            if (body.empty()) return {nullptr, ""};
            return decode_ids(body);
        case Command::lost: {
            const auto m = ok(proto::decode_lost(body));
            Json j{{"worker", m.worker}};
            if (!m.key.empty()) j["key"] = bin(m.key);
            return {j, proto::encode(m)};
        }
        case Command::settle: {
            const auto m = ok(proto::decode_settle(body));
            return {settle_json(m), proto::encode(m)};
        }
        case Command::rejected: {
            const auto m = ok(proto::decode_rejected(body));
            return {Json{{"ids", m.ids}, {"reason", m.reason}}, proto::encode(m)};
        }
        case Command::result: {
            const auto m = ok(proto::decode_results(body));
            return {results_json(m), proto::encode(m)};
        }
        case Command::error: {
            const auto m = ok(proto::decode_error(body));
            return {error_json(m), proto::encode(m)};
        }
        case Command::reset:
        case Command::status:
        case Command::status_reply: CHECK(ok(proto::decode_empty(body))); return {nullptr, ""};
        default: return decode_ids(body);  // ACCEPTED, SETTLED, CANCEL, RETRY, RETURN
    }
}

std::string hex_field(const Json& j) { return from_hex_text(j.get<std::string>()); }

// The proofs table: by id, its entry.
std::map<std::string, Json> proofs_by_id() {
    std::map<std::string, Json> out;
    for (const auto& p : golden()["proofs"]) out[p["id"].get<std::string>()] = p;
    return out;
}

}  // namespace

TEST_CASE("every golden vector decodes as its JSON says and encodes back to its bytes", "[protocol][vectors]") {
    std::set<std::string> commands;
    for (const auto& v : golden()["messages"]) {
        const auto name = v["name"].get<std::string>();
        INFO("vector " << name);
        const auto& frames = v["frames"];
        REQUIRE((frames.size() == 1 || frames.size() == 2));
        const std::string header = hex_field(frames[0]);
        auto cmd = proto::parse_header(header.data(), header.size());
        REQUIRE(cmd.ok());
        CHECK(proto::command_name(*cmd) == v["command"].get<std::string>());
        commands.insert(proto::command_name(*cmd));
        const std::string body = frames.size() == 2 ? hex_field(frames[1]) : std::string();
        CHECK((frames.size() == 1 || !body.empty()));
        CHECK(vectors::to_wire_json(body) == v["body"]);
        const auto decoded = decode(*cmd, body);
        CHECK(decoded.fields == v["body"]);
        CHECK(to_hex_text(decoded.encoded) == to_hex_text(body));
    }
    for (const auto* c : {"HELLO", "READY", "DISPATCH", "HEARTBEAT", "BYE", "RESET", "LOST", "RETRY", "RETURN",
                          "SUBMIT", "ACCEPTED", "REJECTED", "SETTLE", "SETTLED", "CANCEL", "STATUS", "RESULT", "ERROR"})
        CHECK(commands.count(c) == 1);
}

TEST_CASE("the golden proofs are what proof.cpp computes, and the vectors' secrets, tokens and proofs are theirs",
          "[protocol][vectors]") {
    for (const auto& p : golden()["proofs"]) {
        INFO("proof for " << p["id"]);
        const std::string secret = task_secret(hex_field(p["sink_key"]), p["id"].get<std::string>());
        CHECK(to_hex_text(secret) == p["task_secret"].get<std::string>());
        const auto attempt = p["attempt"].get<std::uint32_t>();
        CHECK(attempt_token(secret, attempt) == p["attempt_token"].get<std::uint64_t>());
        CHECK(broker_token(secret, attempt) == p["broker_token"].get<std::uint64_t>());
        CHECK(settle_proof(secret) == p["settle_proof"].get<std::uint64_t>());
    }
    const auto proofs = proofs_by_id();
    const auto secret_of = [&](const std::string& id) {
        REQUIRE(proofs.count(id) == 1);
        return hex_field(proofs.at(id)["task_secret"]);
    };
    for (const auto& v : golden()["messages"]) {
        INFO("vector " << v["name"]);
        const auto& body = v["body"];
        if (body.is_null()) continue;
        const bool batch = v["command"] == "SUBMIT" || v["command"] == "DISPATCH";
        for (const auto& t : batch ? body["tasks"] : Json::array()) {
            const auto id = t["id"].get<std::string>();
            if (t.contains("secret")) CHECK(t["secret"]["bin"].get<std::string>() == to_hex_text(secret_of(id)));
            if (t.contains("token"))
                CHECK(t["token"] == attempt_token(secret_of(id), t["attempt"].get<std::uint32_t>()));
        }
        for (const auto& o : body.value("results", Json::array())) {
            const auto id = o["id"].get<std::string>();
            const auto worker = o.value("worker", body.value("worker", std::string()));
            const auto attempt = o.value("attempt", 0u);
            CHECK(genuine(secret_of(id), attempt, worker == "broker", o["token"].get<std::uint64_t>()));
        }
        if (v["command"] == "SETTLE" && body.contains("proofs")) {
            const auto settle = ok(proto::decode_settle(hex_field(v["frames"][1])));
            for (std::size_t i = 0; i < settle.ids.size(); ++i)
                CHECK(settle.proofs[i] == settle_proof(secret_of(settle.ids[i])));
        }
    }
}

TEST_CASE("every golden vector's bytes appear in docs/protocol.md", "[protocol][vectors]") {
    // The document shows frames as spaced hex, wrapped: compared without whitespace.
    std::string doc;
    for (const char c : read_source("docs/protocol.md"))
        if (!std::isspace(static_cast<unsigned char>(c))) doc.push_back(c);
    for (const auto& v : golden()["messages"]) {
        INFO("vector " << v["name"]);
        CHECK(doc.find("<!--vector" + v["name"].get<std::string>() + "-->") != std::string::npos);
        for (const auto& frame : v["frames"]) CHECK(doc.find(frame.get<std::string>()) != std::string::npos);
    }
}
