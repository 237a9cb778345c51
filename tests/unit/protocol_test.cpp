// Unit tests of the DRV4 wire protocol: headers, body round trips and
// bounded decoding of malformed input.
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <msgpack.hpp>

#include <spdlog/sinks/ostream_sink.h>

#include "drover/common/protocol.hpp"
#include "internal/net.hpp"

using namespace drover::proto;

namespace {

// Builds msgpack bytes with msgpack-cxx.
struct Body {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk{buf};

    Body& map(std::uint32_t n) {
        pk.pack_map(n);
        return *this;
    }
    Body& array(std::uint32_t n) {
        pk.pack_array(n);
        return *this;
    }
    Body& str(const std::string& s) {
        pk.pack(s);
        return *this;
    }
    Body& bin(const std::string& s) {
        pk.pack_bin(static_cast<std::uint32_t>(s.size()));
        pk.pack_bin_body(s.data(), static_cast<std::uint32_t>(s.size()));
        return *this;
    }
    template <class T>
    Body& value(const T& v) {
        pk.pack(v);
        return *this;
    }
    Body& nil() {
        pk.pack_nil();
        return *this;
    }
    [[nodiscard]] std::string bytes() const { return std::string(buf.data(), buf.size()); }
};

std::string header_bytes(std::string_view protocol, std::uint8_t command) {
    std::string h(protocol);
    h.push_back(static_cast<char>(command));
    return h;
}

Task sample_task(std::string id) {
    Task t;
    t.id = std::move(id);
    t.name = "sum_random";
    t.args = std::string("\x92\x01\x00", 3);  // [1, 0], with a NUL byte in it
    t.attempt = 2;
    t.max_attempts = 5;
    t.timeout_ms = 1500;
    t.reply_to = "tcp://10.0.0.1:5557";
    t.detached = true;
    return t;
}

// An echo task with arguments [1] and fields at their defaults.
Task echo_task(std::string id, std::string reply_to) {
    Task t;
    t.id = std::move(id);
    t.name = "echo";
    t.args = "\x01";
    t.reply_to = std::move(reply_to);
    return t;
}

// An ok outcome of echo with fields at their defaults.
Outcome echo_outcome(std::string id, std::string worker) {
    Outcome o;
    o.id = std::move(id);
    o.task = "echo";
    o.result = "\x01";
    o.worker = std::move(worker);
    return o;
}

// Every decoder that needs fields, by name.
struct NamedDecoder {
    const char* name;
    bool (*decode)(std::string_view, DecodeError&);
};

template <class T>
bool to_error(Decoded<T> d, DecodeError& e) {
    if (d.ok()) return true;
    e = d.error();
    return false;
}

const std::vector<NamedDecoder>& decoders_with_fields() {
    static const std::vector<NamedDecoder> all = {
        {"hello", [](std::string_view b, DecodeError& e) { return to_error(decode_hello(b), e); }},
        {"ready", [](std::string_view b, DecodeError& e) { return to_error(decode_ready(b), e); }},
        {"lost", [](std::string_view b, DecodeError& e) { return to_error(decode_lost(b), e); }},
        {"tasks", [](std::string_view b, DecodeError& e) { return to_error(decode_tasks(b), e); }},
        {"ids", [](std::string_view b, DecodeError& e) { return to_error(decode_ids(b), e); }},
        {"rejected", [](std::string_view b, DecodeError& e) { return to_error(decode_rejected(b), e); }},
        {"results", [](std::string_view b, DecodeError& e) { return to_error(decode_results(b), e); }},
        {"result views", [](std::string_view b, DecodeError& e) { return to_error(decode_result_views(b), e); }},
    };
    return all;
}

}  // namespace

// Header ---------------------------------------------------------------

TEST_CASE("make_header writes DRV4 and the command byte, and parse_header reads it back", "[protocol][header]") {
    for (auto c : {Command::hello, Command::ready, Command::dispatch, Command::heartbeat, Command::bye, Command::reset,
                   Command::lost, Command::submit, Command::accepted, Command::rejected, Command::settle,
                   Command::cancel, Command::status, Command::status_reply, Command::settled, Command::result}) {
        CAPTURE(command_name(c));
        const auto h = make_header(c);
        REQUIRE(h.size() == k_header_size);
        CHECK(view(h).substr(0, 4) == "DRV4");
        CHECK(static_cast<std::uint8_t>(view(h)[4]) == static_cast<std::uint8_t>(c));
        auto parsed = parse_header(h);
        REQUIRE(parsed.ok());
        CHECK(*parsed == c);
        CHECK(std::string(command_name(c)) != "?");
    }
}

TEST_CASE("parse_header accepts a hand-built header", "[protocol][header]") {
    const auto h = header_bytes("DRV4", 0x20);
    auto parsed = parse_header(h.data(), h.size());
    REQUIRE(parsed.ok());
    CHECK(*parsed == Command::result);
}

TEST_CASE("parse_header rejects a header of the wrong size", "[protocol][header]") {
    const std::string good = header_bytes("DRV4", 0x01);
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{4}}) {
        CAPTURE(n);
        auto parsed = parse_header(good.data(), n);
        REQUIRE_FALSE(parsed.ok());
        CHECK(parsed.error() == DecodeError::bad_header);
    }
    const std::string longer = good + "x";
    auto parsed = parse_header(longer.data(), longer.size());
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.error() == DecodeError::bad_header);
}

TEST_CASE("parse_header rejects another protocol name", "[protocol][header]") {
    for (const char* name : {"XXXX", "drv2", "DRX2"}) {
        CAPTURE(name);
        const auto h = header_bytes(name, 0x01);
        auto parsed = parse_header(h.data(), h.size());
        REQUIRE_FALSE(parsed.ok());
        CHECK(parsed.error() == DecodeError::bad_header);
    }
}

TEST_CASE("parse_header tells another version of the protocol apart", "[protocol][header]") {
    // DRV3 is the version before: a peer of an older release, named as such in the logs.
    for (const char* name : {"DRV1", "DRV2", "DRV3", "DRV5"}) {
        CAPTURE(name);
        const auto h = header_bytes(name, 0x01);
        auto parsed = parse_header(h.data(), h.size());
        REQUIRE_FALSE(parsed.ok());
        CHECK(parsed.error() == DecodeError::wrong_version);
        CHECK(std::string(decode_error_name(parsed.error())) == "wrong_version");
    }
}

TEST_CASE("parse_header rejects an unknown command byte", "[protocol][header]") {
    for (std::uint8_t c : {std::uint8_t{0x00}, std::uint8_t{0x09}, std::uint8_t{0x0f}, std::uint8_t{0x18},
                           std::uint8_t{0x21}, std::uint8_t{0xff}}) {
        CAPTURE(static_cast<int>(c));
        const auto h = header_bytes("DRV4", c);
        auto parsed = parse_header(h.data(), h.size());
        REQUIRE_FALSE(parsed.ok());
        CHECK(parsed.error() == DecodeError::unknown_command);
    }
}

TEST_CASE("status names round trip through parse_status", "[protocol]") {
    for (auto s : {Status::ok, Status::error, Status::timeout, Status::lost, Status::cancelled, Status::rejected}) {
        auto parsed = parse_status(status_name(s));
        REQUIRE(parsed.has_value());
        CHECK(*parsed == s);
    }
    CHECK_FALSE(parse_status("OK").has_value());
    CHECK_FALSE(parse_status("").has_value());
    CHECK(std::string(decode_error_name(DecodeError::trailing_bytes)) == "trailing_bytes");
    CHECK(std::string(decode_error_name(DecodeError::too_deep)) == "too_deep");
}

// Round trips ------------------------------------------------------------

TEST_CASE("Hello survives encode and decode", "[protocol][roundtrip]") {
    Hello h;
    h.worker = "w-1";
    h.host = "node7.example";
    h.pid = 4'000'000'000LL;
    h.pool = "gpu";
    h.slots = 16;
    h.tasks = {"sum_random", "hello", "echo"};
    h.max_message_bytes = 5'000'000'000ULL;
    auto d = decode_hello(encode(h));
    REQUIRE(d.ok());
    CHECK(d->max_message_bytes == 5'000'000'000ULL);
    CHECK(d->worker == "w-1");
    CHECK(d->host == "node7.example");
    CHECK(d->pid == 4'000'000'000LL);
    CHECK(d->pool == "gpu");
    CHECK(d->slots == 16);
    CHECK(d->tasks == std::vector<std::string>{"sum_random", "hello", "echo"});
}

TEST_CASE("Hello with a negative pid and no tasks survives encode and decode", "[protocol][roundtrip]") {
    Hello h;
    h.worker = "w";
    h.pid = -42;
    auto d = decode_hello(encode(h));
    REQUIRE(d.ok());
    CHECK(d->pid == -42);
    CHECK(d->tasks.empty());
    CHECK(d->slots == 0);
}

TEST_CASE("Ready survives encode and decode, up to the largest credit count", "[protocol][roundtrip]") {
    for (std::uint32_t credits : {0u, 1u, 127u, 128u, 65536u, std::numeric_limits<std::uint32_t>::max()}) {
        CAPTURE(credits);
        auto d = decode_ready(encode(Ready{credits, 0, {}}));
        REQUIRE(d.ok());
        CHECK(d->credits == credits);
    }
}

TEST_CASE("Lost survives encode and decode", "[protocol][roundtrip]") {
    auto d = decode_lost(encode(Lost{"worker-17"}));
    REQUIRE(d.ok());
    CHECK(d->worker == "worker-17");
}

TEST_CASE("Tasks survive encode and decode with every field", "[protocol][roundtrip]") {
    Tasks m;
    m.tasks.push_back(sample_task("t-1"));
    Task plain;
    plain.id = "t-2";
    plain.name = "hello";
    plain.reply_to = "inproc://sink";
    m.tasks.push_back(plain);

    auto d = decode_tasks(encode(m));
    REQUIRE(d.ok());
    REQUIRE(d->tasks.size() == 2);
    const Task& a = d->tasks[0];
    CHECK(a.id == "t-1");
    CHECK(a.name == "sum_random");
    CHECK(a.args == std::string("\x92\x01\x00", 3));
    CHECK(a.attempt == 2);
    CHECK(a.max_attempts == 5);
    CHECK(a.timeout_ms == 1500);
    CHECK(a.reply_to == "tcp://10.0.0.1:5557");
    CHECK(a.detached);
    const Task& b = d->tasks[1];
    CHECK(b.id == "t-2");
    CHECK(b.name == "hello");
    CHECK(b.args.empty());
    CHECK(b.attempt == 0);
    CHECK(b.max_attempts == 3);
    CHECK(b.timeout_ms == 0);
    CHECK(b.reply_to == "inproc://sink");
    CHECK_FALSE(b.detached);
}

TEST_CASE("An empty batch of tasks survives encode and decode", "[protocol][roundtrip]") {
    auto d = decode_tasks(encode(Tasks{}));
    REQUIRE(d.ok());
    CHECK(d->tasks.empty());
}

TEST_CASE("A large batch of tasks survives encode and decode", "[protocol][roundtrip]") {
    Tasks m;
    for (int i = 0; i < 1000; ++i) m.tasks.push_back(sample_task("id-" + std::to_string(i)));
    auto d = decode_tasks(encode(m));
    REQUIRE(d.ok());
    REQUIRE(d->tasks.size() == 1000);
    CHECK(d->tasks.front().id == "id-0");
    CHECK(d->tasks.back().id == "id-999");
}

// The fields of one item of a batch, as msgpack-c reads the encoded body.
using Fields = std::map<std::string, msgpack::object>;
Fields item_fields(const msgpack::object& body, const std::string& list, std::size_t i) {
    return body.as<Fields>().at(list).as<std::vector<msgpack::object>>().at(i).as<Fields>();
}

TEST_CASE("A batch's shared reply_to is written once, fields at their defaults not at all", "[protocol][compact]") {
    Tasks m;
    for (int i = 0; i < 3; ++i) m.tasks.push_back(echo_task("t-" + std::to_string(i), "tcp://127.0.0.1:40000"));
    m.tasks[2].reply_to = "tcp://10.0.0.9:5557";  // its own
    m.tasks[1].timeout_ms = 250;
    const auto bytes = encode(m);
    const auto oh = msgpack::unpack(bytes.data(), bytes.size());
    const auto top = oh.get().as<Fields>();
    CHECK(top.at("reply_to").as<std::string>() == "tcp://127.0.0.1:40000");
    const auto first = item_fields(oh.get(), "tasks", 0);
    CHECK(first.size() == 3);  // id, name, args
    CHECK(first.count("reply_to") == 0);
    CHECK(first.count("max_attempts") == 0);
    CHECK(item_fields(oh.get(), "tasks", 1).size() == 4);  // and timeout_ms
    CHECK(item_fields(oh.get(), "tasks", 2).at("reply_to").as<std::string>() == "tcp://10.0.0.9:5557");

    auto d = decode_tasks(bytes);
    REQUIRE(d.ok());
    REQUIRE(d->tasks.size() == 3);
    CHECK(d->tasks[0].reply_to == "tcp://127.0.0.1:40000");
    CHECK(d->tasks[1].reply_to == "tcp://127.0.0.1:40000");
    CHECK(d->tasks[1].timeout_ms == 250);
    CHECK(d->tasks[2].reply_to == "tcp://10.0.0.9:5557");
    CHECK(d->tasks[0].max_attempts == k_default_max_attempts);
}

TEST_CASE("decode_tasks can leave the batch's reply_to out of its tasks and point at it", "[protocol][compact]") {
    Tasks m;
    m.tasks = {echo_task("a", "tcp://127.0.0.1:40000"), echo_task("b", "tcp://10.0.0.9:5557"),
               echo_task("c", "tcp://127.0.0.1:40000")};
    const auto bytes = encode(m);
    std::string_view batch;
    auto d = decode_tasks(bytes, batch);
    REQUIRE(d.ok());
    CHECK(batch == "tcp://127.0.0.1:40000");
    CHECK(batch.data() >= bytes.data());  // a view into the body
    CHECK(batch.data() < bytes.data() + bytes.size());
    CHECK(d->tasks[0].reply_to.empty());
    CHECK(d->tasks[1].reply_to == "tcp://10.0.0.9:5557");
    CHECK(d->tasks[2].reply_to.empty());
}

TEST_CASE("A task with no reply_to in a batch of others keeps none", "[protocol][compact]") {
    Tasks m;
    m.tasks = {echo_task("a", "tcp://127.0.0.1:40000"), echo_task("b", "")};
    auto d = decode_tasks(encode(m));
    REQUIRE(d.ok());
    CHECK(d->tasks[0].reply_to == "tcp://127.0.0.1:40000");
    CHECK(d->tasks[1].reply_to.empty());
}

TEST_CASE("A batch's reply_to given before its tasks applies as well", "[protocol][compact]") {
    Body b;
    b.map(2).str("reply_to").str("ipc:///tmp/s").str("tasks").array(2);
    b.map(2).str("id").str("x").str("name").str("echo");
    b.map(3).str("id").str("y").str("name").str("echo").str("reply_to").str("ipc:///tmp/own");
    auto d = decode_tasks(b.bytes());
    REQUIRE(d.ok());
    CHECK(d->tasks[0].reply_to == "ipc:///tmp/s");
    CHECK(d->tasks[1].reply_to == "ipc:///tmp/own");

    Body wrong;
    wrong.map(2).str("tasks").array(0).str("reply_to").value(5);
    auto e = decode_tasks(wrong.bytes());
    REQUIRE_FALSE(e.ok());
    CHECK(e.error() == DecodeError::bad_body);
}

TEST_CASE("A batch's shared worker is written once, and outcomes with another or none keep theirs",
          "[protocol][compact]") {
    Results m;
    for (int i = 0; i < 3; ++i) m.results.push_back(echo_outcome("r-" + std::to_string(i), "host:12"));
    m.results[2].worker = "host:13";
    const auto bytes = encode(m);
    const auto oh = msgpack::unpack(bytes.data(), bytes.size());
    const auto top = oh.get().as<Fields>();
    CHECK(top.at("worker").as<std::string>() == "host:12");
    CHECK(item_fields(oh.get(), "results", 0).size() == 4);  // id, task, status, result
    auto d = decode_results(bytes);
    REQUIRE(d.ok());
    CHECK(d->results[0].worker == "host:12");
    CHECK(d->results[1].worker == "host:12");
    CHECK(d->results[2].worker == "host:13");
    CHECK(d->results[0].attempt == 0);
    CHECK(d->results[0].error.empty());

    m.results[1].worker.clear();  // a broker-made outcome has no worker
    auto none = decode_results(encode(m));
    REQUIRE(none.ok());
    CHECK(none->results[0].worker == "host:12");
    CHECK(none->results[1].worker.empty());
    CHECK(none->results[2].worker == "host:13");
}

TEST_CASE("encode_message writes the bytes encode writes, for small and big batches", "[protocol][message]") {
    const auto bytes = [](const zmq::message_t& m) {
        return std::string(static_cast<const char*>(m.data()), m.size());
    };
    // Lone small ones stay under the size a message copies; a 64 KiB one does not.
    for (const std::size_t arg_bytes : {std::size_t{0}, std::size_t{1}, std::size_t{65536}}) {
        std::vector<Task> tasks;
        std::vector<TaskRef> refs;
        for (int i = 0; i < (arg_bytes == 0 ? 1 : 3); ++i) {
            tasks.push_back(echo_task("t" + std::to_string(i), "tcp://10.0.0.2:7000"));
            tasks.back().args = std::string(arg_bytes, static_cast<char>('a' + i));
        }
        for (const auto& t : tasks)
            refs.push_back(TaskRef{t.id, t.name, t.args, t.reply_to, t.attempt, t.max_attempts, t.timeout_ms,
                                   t.detached, t.retry_on_error, t.secret, t.token});
        const auto message = encode_message(refs.data(), refs.size());
        CHECK(bytes(message) == encode(refs.data(), refs.size()));
        auto back = decode_tasks(bytes(message));
        REQUIRE(back);
        REQUIRE(back->tasks.size() == tasks.size());
        CHECK(back->tasks.back().args == tasks.back().args);

        std::vector<Outcome> outcomes;
        for (const auto& t : tasks) {
            outcomes.push_back(echo_outcome(t.id, "host:1"));
            outcomes.back().result = t.args;
        }
        const auto results = encode_message(outcomes.data(), outcomes.size());
        CHECK(bytes(results) == encode(outcomes.data(), outcomes.size()));
        auto decoded = decode_results(bytes(results));
        REQUIRE(decoded);
        CHECK(decoded->results.back().result == outcomes.back().result);
    }
}

TEST_CASE("Ids survive encode and decode", "[protocol][roundtrip]") {
    Ids m{{"a", "b", std::string("c\0d", 3), ""}};
    auto d = decode_ids(encode(m));
    REQUIRE(d.ok());
    CHECK(d->ids == m.ids);

    auto empty = decode_ids(encode(Ids{}));
    REQUIRE(empty.ok());
    CHECK(empty->ids.empty());
}

TEST_CASE("Rejected survives encode and decode", "[protocol][roundtrip]") {
    Rejected m{{"x", "y"}, "queue_full"};
    auto d = decode_rejected(encode(m));
    REQUIRE(d.ok());
    CHECK(d->ids == std::vector<std::string>{"x", "y"});
    CHECK(d->reason == "queue_full");
}

TEST_CASE("decode_result_views reads what decode_results reads, as views into the body", "[protocol][compact]") {
    Results m;
    for (int i = 0; i < 4; ++i) m.results.push_back(echo_outcome("r-" + std::to_string(i), "host:12"));
    m.results[1].worker = "host:13";
    m.results[2].worker.clear();
    m.results[3].status = Status::error;
    m.results[3].result.clear();
    m.results[3].error = "boom";
    m.results[3].attempt = 2;
    m.results[3].elapsed_us = 123456;
    const auto bytes = encode(m);
    auto full = decode_results(bytes);
    auto views = decode_result_views(bytes);
    REQUIRE(full.ok());
    REQUIRE(views.ok());
    REQUIRE(views->size() == full->results.size());
    for (std::size_t i = 0; i < views->size(); ++i) {
        const auto& v = (*views)[i];
        const auto& o = full->results[i];
        CAPTURE(i);
        CHECK(v.id == o.id);
        CHECK(v.task == o.task);
        CHECK(v.status == o.status);
        CHECK(v.result == o.result);
        CHECK(v.error == o.error);
        CHECK(v.attempt == o.attempt);
        CHECK(v.worker == o.worker);
        CHECK(v.elapsed_us == o.elapsed_us);
        CHECK(v.id.data() >= bytes.data());
        CHECK(v.id.data() < bytes.data() + bytes.size());
    }
    CHECK((*views)[0].worker == "host:12");
    CHECK((*views)[1].worker == "host:13");
    CHECK((*views)[2].worker.empty());  // a broker-made outcome has none
    CHECK((*views)[3].error == "boom");
}

TEST_CASE("Results survive encode and decode with every status", "[protocol][roundtrip]") {
    const std::vector<Status> all = {Status::ok,   Status::error,     Status::timeout,
                                     Status::lost, Status::cancelled, Status::rejected};
    Results m;
    std::uint32_t n = 0;
    for (auto s : all) {
        Outcome o;
        o.id = std::string("id-") + status_name(s);
        o.task = "echo";
        o.status = s;
        if (s == Status::ok) o.result = std::string("\x93\x01\x00\xc0", 4);
        else o.error = std::string("why: ") + status_name(s);
        o.attempt = ++n;
        o.worker = "w-" + std::to_string(n);
        o.elapsed_us = std::uint64_t{1} << 40;
        m.results.push_back(o);
    }
    auto d = decode_results(encode(m));
    REQUIRE(d.ok());
    REQUIRE(d->results.size() == all.size());
    for (std::size_t i = 0; i < all.size(); ++i) {
        const Outcome& o = d->results[i];
        CAPTURE(status_name(all[i]));
        CHECK(o.status == all[i]);
        CHECK(o.id == std::string("id-") + status_name(all[i]));
        CHECK(o.task == "echo");
        if (all[i] == Status::ok) {
            CHECK(o.result == std::string("\x93\x01\x00\xc0", 4));
            CHECK(o.error.empty());
        } else {
            CHECK(o.result.empty());
            CHECK(o.error == std::string("why: ") + status_name(all[i]));
        }
        CHECK(o.attempt == i + 1);
        CHECK(o.worker == "w-" + std::to_string(i + 1));
        CHECK(o.elapsed_us == (std::uint64_t{1} << 40));
    }
}

TEST_CASE("A heartbeat body carries the broker instance", "[protocol][roundtrip]") {
    auto d = decode_heartbeat(encode_heartbeat("instance-abc"));
    REQUIRE(d.ok());
    CHECK(*d == "instance-abc");

    auto none = decode_heartbeat("");
    REQUIRE(none.ok());
    CHECK(none->empty());

    auto from_empty_map = decode_heartbeat(encode_empty());
    REQUIRE(from_empty_map.ok());
    CHECK(from_empty_map->empty());
}

TEST_CASE("A worker's heartbeat body carries the tasks it holds, or nothing", "[protocol][roundtrip]") {
    for (const std::uint32_t held : {0u, 7u, 0xffffffffu}) {
        auto d = decode_worker_heartbeat(encode_worker_heartbeat(held));
        REQUIRE(d.ok());
        REQUIRE(d->has_value());
        CHECK(**d == held);
    }
    auto none = decode_worker_heartbeat("");
    REQUIRE(none.ok());
    CHECK_FALSE(none->has_value());
    auto from_empty_map = decode_worker_heartbeat(encode_empty());
    REQUIRE(from_empty_map.ok());
    CHECK_FALSE(from_empty_map->has_value());
    auto negative = decode_worker_heartbeat(Body().map(1).str("held").value(-1).bytes());
    REQUIRE_FALSE(negative.ok());
    CHECK(negative.error() == DecodeError::bad_body);
}

TEST_CASE("Unknown fields are ignored on decode", "[protocol][roundtrip]") {
    const auto body =
        Body().map(3).str("future").array(2).value(1).value(2).str("credits").value(7u).str("x").nil().bytes();
    auto d = decode_ready(body);
    REQUIRE(d.ok());
    CHECK(d->credits == 7);
}

// decode_empty -------------------------------------------------------------

TEST_CASE("decode_empty accepts no body, an empty map and any well-formed map", "[protocol][empty]") {
    CHECK(decode_empty("").ok());
    CHECK(decode_empty(encode_empty()).ok());
    CHECK(decode_empty(std::string("\x80", 1)).ok());
    CHECK(decode_empty(Body().map(1).str("instance").str("abc").bytes()).ok());
}

TEST_CASE("decode_empty rejects a body that is not a map", "[protocol][empty]") {
    auto array = decode_empty(Body().array(0).bytes());
    REQUIRE_FALSE(array.ok());
    CHECK(array.error() == DecodeError::bad_body);

    auto garbage = decode_empty("\xc1");
    REQUIRE_FALSE(garbage.ok());
    CHECK(garbage.error() == DecodeError::bad_body);

    auto trailing = decode_empty(encode_empty() + encode_empty());
    REQUIRE_FALSE(trailing.ok());
    CHECK(trailing.error() == DecodeError::trailing_bytes);
}

// Malformed input ------------------------------------------------------------

TEST_CASE("An empty body is rejected by every decoder that needs fields", "[protocol][malformed]") {
    for (const auto& d : decoders_with_fields()) {
        CAPTURE(d.name);
        DecodeError e = DecodeError::bad_frames;
        REQUIRE_FALSE(d.decode("", e));
        CHECK(e == DecodeError::bad_body);
    }
}

TEST_CASE("An empty map is rejected by every decoder that needs fields", "[protocol][malformed]") {
    for (const auto& d : decoders_with_fields()) {
        CAPTURE(d.name);
        DecodeError e = DecodeError::bad_frames;
        REQUIRE_FALSE(d.decode(encode_empty(), e));
        CHECK(e == DecodeError::bad_body);
    }
}

TEST_CASE("Bytes that are not msgpack are rejected as bad_body", "[protocol][malformed]") {
    const std::string garbage[] = {std::string("\xc1"), std::string("\xc1\xc1\xc1\xc1"), std::string("\x81\xc1\x01")};
    for (const auto& g : garbage) {
        for (const auto& d : decoders_with_fields()) {
            CAPTURE(d.name, g.size());
            DecodeError e = DecodeError::bad_frames;
            REQUIRE_FALSE(d.decode(g, e));
            CHECK(e == DecodeError::bad_body);
        }
    }
    // Plain text is never a valid body, whatever it happens to parse as.
    for (const auto& d : decoders_with_fields()) {
        CAPTURE(d.name);
        DecodeError e = DecodeError::bad_frames;
        CHECK_FALSE(d.decode("this is not msgpack at all", e));
    }
}

TEST_CASE("A truncated body is rejected", "[protocol][malformed]") {
    SECTION("the last bytes cut off") {
        const std::string hello = encode(Hello{"w", "h", 1, "p", 2, {"a", "b"}});
        for (std::size_t cut : {std::size_t{1}, std::size_t{2}, std::size_t{3}}) {
            CAPTURE(cut);
            auto d = decode_hello(std::string_view(hello).substr(0, hello.size() - cut));
            REQUIRE_FALSE(d.ok());
            CHECK(d.error() == DecodeError::bad_body);
        }
        const std::string ready = encode(Ready{100000, 0, {}});
        auto r = decode_ready(std::string_view(ready).substr(0, ready.size() - 1));
        REQUIRE_FALSE(r.ok());
        CHECK(r.error() == DecodeError::bad_body);
    }
    SECTION("every proper prefix of a batch of tasks") {
        const std::string body = encode(Tasks{{sample_task("a"), sample_task("b")}});
        for (std::size_t n = 0; n < body.size(); ++n) {
            CAPTURE(n);
            auto d = decode_tasks(std::string_view(body).substr(0, n));
            REQUIRE_FALSE(d.ok());
            // A cut inside a string or container is bad_body; a string header
            // that claims more bytes than the frame holds may be too_deep.
            CHECK((d.error() == DecodeError::bad_body || d.error() == DecodeError::too_deep));
        }
    }
    SECTION("every proper prefix of a batch of results") {
        Outcome o;
        o.id = "r";
        o.task = "echo";
        o.result = "\x01";
        const std::string body = encode(Results{{o, o}});
        for (std::size_t n = 0; n < body.size(); ++n) {
            CAPTURE(n);
            auto d = decode_results(std::string_view(body).substr(0, n));
            REQUIRE_FALSE(d.ok());
            CHECK((d.error() == DecodeError::bad_body || d.error() == DecodeError::too_deep));
        }
    }
}

TEST_CASE("A body that is an array instead of a map is rejected", "[protocol][malformed]") {
    const auto array = Body().array(2).str("credits").value(5).bytes();
    for (const auto& d : decoders_with_fields()) {
        CAPTURE(d.name);
        DecodeError e = DecodeError::bad_frames;
        REQUIRE_FALSE(d.decode(array, e));
        CHECK(e == DecodeError::bad_body);
    }
    auto scalar = decode_ready(Body().value(5).bytes());
    REQUIRE_FALSE(scalar.ok());
    CHECK(scalar.error() == DecodeError::bad_body);
}

TEST_CASE("A field of the wrong type makes the message invalid", "[protocol][malformed]") {
    auto expect_bad = [](auto decoded) {
        REQUIRE_FALSE(decoded.ok());
        CHECK(decoded.error() == DecodeError::bad_body);
    };
    SECTION("a string where an int is expected") {
        expect_bad(decode_ready(Body().map(1).str("credits").str("5").bytes()));
        expect_bad(decode_hello(Body().map(2).str("worker").str("w").str("pid").str("12").bytes()));
    }
    SECTION("a negative credits value") { expect_bad(decode_ready(Body().map(1).str("credits").value(-1).bytes())); }
    SECTION("credits past 32 bits") {
        expect_bad(decode_ready(Body().map(1).str("credits").value(std::uint64_t{1} << 32).bytes()));
    }
    SECTION("a float where an int is expected") {
        expect_bad(decode_ready(Body().map(1).str("credits").value(1.5).bytes()));
    }
    SECTION("an int where a string is expected") {
        expect_bad(decode_lost(Body().map(1).str("worker").value(7).bytes()));
        expect_bad(decode_ids(Body().map(1).str("ids").array(2).str("a").value(2).bytes()));
    }
    SECTION("a map where a list is expected") {
        expect_bad(decode_ids(Body().map(1).str("ids").map(0).bytes()));
        expect_bad(decode_tasks(Body().map(1).str("tasks").map(0).bytes()));
        expect_bad(decode_results(Body().map(1).str("results").str("x").bytes()));
    }
    SECTION("a task that is not a map") {
        expect_bad(decode_tasks(Body().map(1).str("tasks").array(1).str("t").bytes()));
    }
    SECTION("a task with detached given as an int") {
        expect_bad(decode_tasks(Body()
                                    .map(1)
                                    .str("tasks")
                                    .array(1)
                                    .map(3)
                                    .str("id")
                                    .str("a")
                                    .str("name")
                                    .str("n")
                                    .str("detached")
                                    .value(1)
                                    .bytes()));
    }
    SECTION("a task with a negative max_attempts") {
        expect_bad(decode_tasks(Body()
                                    .map(1)
                                    .str("tasks")
                                    .array(1)
                                    .map(3)
                                    .str("id")
                                    .str("a")
                                    .str("name")
                                    .str("n")
                                    .str("max_attempts")
                                    .value(-3)
                                    .bytes()));
    }
    SECTION("an outcome with an unknown status") {
        expect_bad(decode_results(
            Body().map(1).str("results").array(1).map(2).str("id").str("a").str("status").str("weird").bytes()));
    }
    SECTION("a non-string key is ignored, not mistaken for a field") {
        auto d = decode_ready(Body().map(2).value(1).value(2).str("credits").value(3).bytes());
        REQUIRE(d.ok());
        CHECK(d->credits == 3);
    }
}

TEST_CASE("A missing required field makes the message invalid", "[protocol][malformed]") {
    auto expect_bad = [](auto decoded) {
        REQUIRE_FALSE(decoded.ok());
        CHECK(decoded.error() == DecodeError::bad_body);
    };
    SECTION("a task without id") {
        expect_bad(decode_tasks(
            Body().map(1).str("tasks").array(1).map(2).str("name").str("n").str("reply_to").str("r").bytes()));
    }
    SECTION("a task with an empty id") {
        expect_bad(
            decode_tasks(Body().map(1).str("tasks").array(1).map(2).str("id").str("").str("name").str("n").bytes()));
    }
    SECTION("a task without name") {
        expect_bad(decode_tasks(Body().map(1).str("tasks").array(1).map(1).str("id").str("a").bytes()));
    }
    SECTION("a valid task next to one without id") {
        expect_bad(decode_tasks(Body()
                                    .map(1)
                                    .str("tasks")
                                    .array(2)
                                    .map(2)
                                    .str("id")
                                    .str("a")
                                    .str("name")
                                    .str("n")
                                    .map(1)
                                    .str("name")
                                    .str("n")
                                    .bytes()));
    }
    SECTION("an outcome without status") {
        expect_bad(decode_results(Body().map(1).str("results").array(1).map(1).str("id").str("a").bytes()));
    }
    SECTION("an outcome without id") {
        expect_bad(decode_results(Body().map(1).str("results").array(1).map(1).str("status").str("ok").bytes()));
    }
    SECTION("hello without worker") { expect_bad(decode_hello(Body().map(1).str("host").str("h").bytes())); }
    SECTION("rejected without ids") {
        expect_bad(decode_rejected(Body().map(1).str("reason").str("queue_full").bytes()));
    }
    SECTION("a task with only the required fields is fine") {
        auto d =
            decode_tasks(Body().map(1).str("tasks").array(1).map(2).str("id").str("a").str("name").str("n").bytes());
        REQUIRE(d.ok());
        REQUIRE(d->tasks.size() == 1);
        CHECK(d->tasks[0].id == "a");
        CHECK(d->tasks[0].max_attempts == 3);
    }
}

TEST_CASE("Bytes after a valid body are rejected as trailing_bytes", "[protocol][malformed]") {
    const std::string suffixes[] = {std::string(1, '\0'), std::string("\xc0"), encode(Ready{1, 0, {}})};
    for (const auto& suffix : suffixes) {
        CAPTURE(suffix.size());
        auto ready = decode_ready(encode(Ready{1, 0, {}}) + suffix);
        REQUIRE_FALSE(ready.ok());
        CHECK(ready.error() == DecodeError::trailing_bytes);

        auto tasks = decode_tasks(encode(Tasks{{sample_task("a")}}) + suffix);
        REQUIRE_FALSE(tasks.ok());
        CHECK(tasks.error() == DecodeError::trailing_bytes);

        auto results = decode_results(encode(Results{{Outcome{"a", "t", Status::ok, "\xc0", "", 1, "w", 1}}}) + suffix);
        REQUIRE_FALSE(results.ok());
        CHECK(results.error() == DecodeError::trailing_bytes);

        auto heartbeat = decode_heartbeat(encode_heartbeat("i") + suffix);
        REQUIRE_FALSE(heartbeat.ok());
        CHECK(heartbeat.error() == DecodeError::trailing_bytes);
    }
}

TEST_CASE("A 5-byte body claiming four billion elements fails at once without allocating",
          "[protocol][malformed][limits]") {
    const std::string huge_array("\xdd\xff\xff\xff\xff", 5);
    const std::string huge_map("\xdf\xff\xff\xff\xff", 5);
    const auto start = std::chrono::steady_clock::now();
    for (const auto& body : {huge_array, huge_map}) {
        for (const auto& d : decoders_with_fields()) {
            CAPTURE(d.name, static_cast<int>(static_cast<unsigned char>(body[0])));
            DecodeError e = DecodeError::bad_frames;
            REQUIRE_FALSE(d.decode(body, e));
            // too_deep means the size limit fired before any allocation for
            // the elements (a failed 64 GB allocation would be bad_body).
            CHECK(e == DecodeError::too_deep);
        }
        auto empty = decode_empty(body);
        REQUIRE_FALSE(empty.ok());
        CHECK(empty.error() == DecodeError::too_deep);
        CHECK_FALSE(is_valid_msgpack(body));
    }
    // The same claim inside a field of a real map.
    const std::string in_field = Body().map(1).str("tasks").bytes() + huge_array;
    auto tasks = decode_tasks(in_field);
    REQUIRE_FALSE(tasks.ok());
    CHECK(tasks.error() == DecodeError::too_deep);
    // A string that claims four billion bytes.
    auto str = decode_lost(Body().map(1).str("worker").bytes() + std::string("\xdb\xff\xff\xff\xff", 5));
    REQUIRE_FALSE(str.ok());
    CHECK((str.error() == DecodeError::too_deep || str.error() == DecodeError::bad_body));

    // Rejected without walking the claimed billions: a loop over them would
    // take minutes, so this bound does not depend on the machine's speed.
    const auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(elapsed < std::chrono::seconds(10));
}

TEST_CASE("A 1000-deep nesting of arrays inside a map field is rejected", "[protocol][malformed][limits]") {
    std::string nested = Body().map(1).str("tasks").bytes();
    nested.append(1000, static_cast<char>(0x91));  // fixarray of one element, 1000 times
    nested.push_back(static_cast<char>(0xc0));     // nil at the bottom
    const auto start = std::chrono::steady_clock::now();

    auto tasks = decode_tasks(nested);
    REQUIRE_FALSE(tasks.ok());
    CHECK((tasks.error() == DecodeError::too_deep || tasks.error() == DecodeError::bad_body));
    CHECK(tasks.error() == DecodeError::too_deep);

    auto empty = decode_empty(nested);
    REQUIRE_FALSE(empty.ok());
    CHECK(empty.error() == DecodeError::too_deep);

    std::string ids = Body().map(1).str("ids").bytes();
    ids.append(1000, static_cast<char>(0x91));
    ids.push_back(static_cast<char>(0xc0));
    auto d = decode_ids(ids);
    REQUIRE_FALSE(d.ok());
    CHECK(d.error() == DecodeError::too_deep);

    CHECK(std::chrono::steady_clock::now() - start < std::chrono::milliseconds(200));
}

TEST_CASE("is_valid_msgpack checks one whole value within the depth limit", "[protocol][limits]") {
    CHECK(is_valid_msgpack(Body().array(3).value(1).str("two").map(0).bytes()));
    CHECK(is_valid_msgpack(Body().value(42).bytes()));
    CHECK_FALSE(is_valid_msgpack(""));
    CHECK_FALSE(is_valid_msgpack("\xc1"));
    CHECK_FALSE(is_valid_msgpack(Body().value(1).value(2).bytes()));  // two values

    std::string deep(10, static_cast<char>(0x91));
    deep.push_back(static_cast<char>(0xc0));
    CHECK(is_valid_msgpack(deep));
    CHECK_FALSE(is_valid_msgpack(deep, 4));

    std::string very_deep(1000, static_cast<char>(0x91));
    very_deep.push_back(static_cast<char>(0xc0));
    CHECK_FALSE(is_valid_msgpack(very_deep));
}

TEST_CASE("ERROR round-trips, and its header is an ERROR's in every protocol version", "[protocol][error]") {
    Error e;
    e.reason = "wrong_version";
    e.detail = "DRV3 is not DRV4";
    e.command = 0x10;
    auto d = decode_error(encode(e));
    REQUIRE(d.ok());
    CHECK(d->reason == "wrong_version");
    CHECK(d->detail == "DRV3 is not DRV4");
    CHECK(d->command == std::optional<std::uint8_t>(0x10));
    CHECK(d->protocol == "DRV4");
    // Only reason is required; a later version's fields are ignored.
    auto minimal = decode_error(
        Body().map(3).str("reason").str("bad_body").str("protocol").str("DRV9").str("hint").value(1).bytes());
    REQUIRE(minimal.ok());
    CHECK(minimal->protocol == "DRV9");
    CHECK_FALSE(minimal->command);
    CHECK_FALSE(decode_error(Body().map(1).str("protocol").str("DRV4").bytes()).ok());
    CHECK_FALSE(decode_error(Body().map(2).str("reason").str("x").str("command").value(300).bytes()).ok());

    for (const auto* version : {"DRV4", "DRV3", "DRV5", "DRV\x01"}) {
        const auto h = header_bytes(version, 0x7f);
        CHECK(is_error_header(h.data(), h.size()));
    }
    const auto own = make_header(Command::error);
    CHECK(is_error_header(own));
    CHECK(view(own) == std::string_view("DRV4\x7f", 5));
    CHECK(parse_header(own).ok());
    const auto other = header_bytes("DRV5", 0x7f);
    CHECK(parse_header(other.data(), other.size()).error() == DecodeError::wrong_version);
    for (const auto& not_error : {header_bytes("DRV4", 0x10), header_bytes("XRV4", 0x7f), std::string("DRV4\x7f!")})
        CHECK_FALSE(is_error_header(not_error.data(), not_error.size()));
}

TEST_CASE("a client logs the broker's ERRORs once for each reason", "[protocol][error]") {
    std::ostringstream out;
    auto logger = std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::ostream_sink_st>(out));
    drover::BrokerErrors errors;
    Error e;
    e.reason = "bad_body";
    e.command = static_cast<std::uint8_t>(Command::submit);
    CHECK(errors.log(logger, "client.broker_error", encode(e)));
    CHECK_FALSE(errors.log(logger, "client.broker_error", encode(e)));
    e.reason = "wrong_version";
    CHECK(errors.log(logger, "client.broker_error", encode(e)));
    CHECK(errors.log(logger, "client.broker_error", "\xc1"));  // not an ERROR body: said once too
    CHECK_FALSE(errors.log(logger, "client.broker_error", "\xc1"));
    const auto text = out.str();
    CHECK(text.find("reason=bad_body command=SUBMIT") != std::string::npos);
    CHECK(text.find("reason=wrong_version") != std::string::npos);
    CHECK(text.find("reason=unreadable") != std::string::npos);
}

namespace {

// `bytes` unpacked by msgpack-c and packed again by its packer: the
// canonical form (each value in the smallest form that holds it).
std::string repacked(const std::string& bytes) {
    const auto handle = msgpack::unpack(bytes.data(), bytes.size());
    msgpack::sbuffer out;
    msgpack::pack(out, handle.get());
    return std::string(out.data(), out.size());
}

}  // namespace

TEST_CASE("every encoder writes each value in the form msgpack-c's packer picks, at every size boundary",
          "[protocol][canonical]") {
    // Integers on each side of every boundary of msgpack's forms.
    const std::vector<std::uint64_t> u64s{0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296, UINT64_MAX};
    const std::vector<std::uint32_t> u32s{0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295};
    // Strings and bytes of each header size: fixstr, 8, 16 and 32 bits.
    const std::vector<std::size_t> lengths{1, 31, 32, 255, 256, 65535, 65536};

    std::vector<Task> tasks;
    for (std::size_t i = 0; i < u32s.size(); ++i) {
        Task t;
        t.id = "t" + std::to_string(i);
        t.name = std::string(lengths[i % lengths.size()], 'n');
        t.args = std::string(lengths[(i + 3) % lengths.size()], '\x01');
        t.attempt = u32s[i];
        t.max_attempts = u32s[(i + 1) % u32s.size()];
        t.timeout_ms = u32s[(i + 2) % u32s.size()];
        t.reply_to = i % 2 ? "tcp://a:1" : "tcp://b:2";
        t.detached = i % 2 == 0;
        t.retry_on_error = i % 3 == 0;
        t.secret = std::string(16, 's');
        t.token = u64s[i % u64s.size()];
        t.start = i % 4 == 0;
        tasks.push_back(t);
    }
    // 3 and 16 items: a list header of 4 and 16 bits.
    for (std::size_t n : {std::size_t{3}, std::size_t{16}}) {
        Tasks m;
        for (std::size_t i = 0; i < n; ++i) m.tasks.push_back(tasks[i % tasks.size()]);
        const auto bytes = encode(m);
        CHECK(bytes == repacked(bytes));
    }
    // 65,536 small items: a list header of 32 bits.
    Tasks many;
    many.tasks.resize(65536);
    for (auto& t : many.tasks) {
        t.id = "i";
        t.name = "n";
        t.secret = std::string(16, 's');
    }
    const auto many_bytes = encode(many);
    CHECK(many_bytes == repacked(many_bytes));

    std::vector<Outcome> outcomes;
    for (std::size_t i = 0; i < u64s.size(); ++i) {
        Outcome o;
        o.id = std::string(lengths[i % lengths.size()], 'i');
        o.task = "echo";
        o.status = i % 2 ? Status::ok : Status::error;
        o.result = std::string(lengths[(i + 1) % lengths.size()], '\x02');
        o.error = i % 2 ? "" : std::string(lengths[(i + 2) % lengths.size()], 'e');
        o.attempt = u32s[i % u32s.size()];
        o.worker = i % 3 ? "w1" : std::string(40, 'w');
        o.elapsed_us = u64s[(i + 1) % u64s.size()];
        o.token = u64s[i];
        outcomes.push_back(o);
    }
    const auto results = encode(outcomes.data(), outcomes.size());
    CHECK(results == repacked(results));

    Hello h;
    h.worker = "w";
    h.host = std::string(300, 'h');
    h.tasks = {"a", std::string(70000, 'b')};
    h.lost_key = std::string(16, 'k');
    for (const std::int64_t pid : {std::int64_t{1}, std::int64_t{128}, std::int64_t{70000}, std::int64_t{-1},
                                   std::int64_t{-33}, std::int64_t{-129}, std::int64_t{-40000},
                                   std::int64_t{-3000000000}, std::numeric_limits<std::int64_t>::max()}) {
        h.pid = pid;
        for (const std::uint64_t bytes : u64s) {
            h.max_message_bytes = bytes;
            const auto hello = encode(h);
            CHECK(hello == repacked(hello));
        }
    }

    Ready r{65536, 128, {}};
    for (std::size_t i = 0; i < 20; ++i) r.run_ns.emplace_back("name" + std::to_string(i), u64s[i % u64s.size()]);
    const auto ready = encode(r);
    CHECK(ready == repacked(ready));

    Settle s;
    for (std::size_t i = 0; i < 70000; ++i) s.ids.push_back("id" + std::to_string(i));
    s.timed_out = 65536;
    const auto settle = encode(s);
    CHECK(settle == repacked(settle));
    const auto heartbeat = encode_worker_heartbeat(4294967295u);
    CHECK(heartbeat == repacked(heartbeat));
}
