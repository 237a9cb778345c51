// Unit tests of the fast JSON-lines edge: the simdjson task-line parser and
// the hand printer of results, each against the nlohmann path it replaces.
#include <random>
#include <string>

#include <catch2/catch.hpp>

#include "drover/client/json_lines.hpp"
#include "internal/unpack.hpp"

namespace {

// The fast parse (with its fallback) and the nlohmann reference agree on
// `line`: the same fields, or the same error.
void check_same_parse(const std::string& line) {
    INFO("line: " << line);
    std::string fast_error, ref_error;
    const auto fast = drover::parse_task_line(line, fast_error);
    const auto ref = drover::parse_task_line_reference(line, ref_error);
    REQUIRE(fast.has_value() == ref.has_value());
    if (!fast) {
        CHECK(fast_error == ref_error);
        return;
    }
    CHECK(fast->task == ref->task);
    CHECK(fast->args == ref->args);
    CHECK(fast->id_json == ref->id_json);
    CHECK(fast->id_wire == ref->id_wire);
    CHECK(fast->options.max_attempts == ref->options.max_attempts);
    CHECK(fast->options.timeout_ms == ref->options.timeout_ms);
    CHECK(fast->options.retry_on_error == ref->options.retry_on_error);
}

// The hand printer gives what nlohmann prints for the msgpack `bytes`.
void check_same_print(const std::string& bytes) {
    std::string out = "x";  // appended to, not replaced
    drover::append_msgpack_json(out, bytes);
    CHECK(out == "x" + drover::to_line(drover::msgpack_to_json(bytes)));
}

// Random JSON text in the forms a user may write.
class JsonGen {
public:
    explicit JsonGen(unsigned seed) : rng_(seed) {}

    std::string value(int depth) {
        switch (pick(depth > 4 ? 5 : 7)) {
            case 0: return number();
            case 1: return string();
            case 2: return pick(2) ? "true" : "false";
            case 3: return "null";
            case 4: return number();
            case 5: return array(depth + 1);
            default: return object(depth + 1);
        }
    }
    std::string number() {
        static const char* const forms[] = {"0",
                                            "-0",
                                            "7",
                                            "127",
                                            "128",
                                            "-32",
                                            "-33",
                                            "255",
                                            "256",
                                            "-128",
                                            "-129",
                                            "65535",
                                            "65536",
                                            "-32768",
                                            "-32769",
                                            "4294967295",
                                            "4294967296",
                                            "-2147483648",
                                            "-2147483649",
                                            "9223372036854775807",
                                            "9223372036854775808",
                                            "18446744073709551615",
                                            "18446744073709551616",
                                            "-9223372036854775808",
                                            "-9223372036854775809",
                                            "1.5",
                                            "0.1",
                                            "-0.0",
                                            "1e3",
                                            "1E-3",
                                            "2.5e+10",
                                            "3.4028234663852886e38",
                                            "1e300",
                                            "123456789012345678901234567890",
                                            "1.0",
                                            "1e400",
                                            "01",
                                            "1.",
                                            "-"};
        return forms[pick(sizeof forms / sizeof *forms)];
    }
    std::string string() {
        static const char* const parts[] = {"a",
                                            "hello",
                                            "\\n",
                                            "\\\"",
                                            "\\\\",
                                            "\\/",
                                            "\\u00e9",
                                            "\xc3\xa9",
                                            "\\u0001",
                                            "\\ud83d\\ude00",
                                            "\xf0\x9f\x98\x80",
                                            "\\b\\f\\r\\t",
                                            "\\ud800",
                                            "\x7f",
                                            " ",
                                            "\\u001f",
                                            "{[\\\"]}",
                                            "\xc3"};
        std::string s = "\"";
        for (int n = pick(5); n > 0; --n) s += parts[pick(sizeof parts / sizeof *parts)];
        return s + "\"";
    }
    std::string array(int depth) {
        std::string s = "[";
        for (int n = pick(20), i = 0; i < n; ++i) s += (i ? "," : "") + value(depth);
        return s + "]";
    }
    std::string object(int depth) {
        static const char* const keys[] = {"a", "b", "c", "task", "args", "\\u0061", "", "zz", "é"};
        std::string s = "{";
        for (int n = pick(5), i = 0; i < n; ++i)
            s += std::string(i ? "," : "") + "\"" + keys[pick(sizeof keys / sizeof *keys)] + "\":" + value(depth);
        return s + "}";
    }
    // A task line, sometimes with options, an id, spaces or a flaw.
    std::string line() {
        std::string s = "{\"task\":\"echo\"";
        if (pick(4)) s += ",\"args\":" + (pick(4) ? array(1) : value(1));
        if (!pick(3)) s += ",\"id\":" + value(2);
        if (!pick(5)) s += ",\"max_attempts\":" + number();
        if (!pick(5)) s += ",\"timeout_ms\":" + number();
        if (!pick(6)) s += std::string(",\"retry_on_error\":") + (pick(2) ? "true" : "1");
        if (!pick(10)) s += ",\"task\":\"again\"";
        s += "}";
        if (!pick(8)) s = "  " + s + " \t";
        if (!pick(8)) s.erase(pick(static_cast<int>(s.size())), 1);
        if (!pick(10)) s.insert(pick(static_cast<int>(s.size())), 1, ",:]x\"\\"[pick(6)]);
        return s;
    }
    int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

private:
    std::mt19937 rng_;
};

}  // namespace

TEST_CASE("the fast task-line parser agrees with nlohmann on edge cases", "[json_lines]") {
    for (const std::string line : {
             R"({"task":"echo","args":[1]})",
             R"({"args":[1,-1,0.5,"x",true,false,null,[],{}],"task":"echo"})",
             R"({"task":"echo","args":[{"b":1,"a":2,"c":{"z":[1],"y":null}}]})",
             R"({"task":"echo","args":[{"a":1,"a":2}]})",
             R"({"task":"echo","args":["\u00e9\ud83d\ude00\n\"\\\/\b\f\r\t\u0000"]})",
             R"({"task":"echo","args":[18446744073709551615,18446744073709551616,-9223372036854775809]})",
             R"({"task":"echo","args":[1e3,1.0,-0,-0.0,0.1,3.4028234663852886e38,1.7976931348623157e308]})",
             R"({"task":"echo","args":5})",
             R"({"task":"echo","id":"a-1"})",
             R"({"task":"echo","id":42})",
             R"({"task":"echo","id":-1.5})",
             R"({"task":"echo","id":null})",
             R"({"task":"echo","id":{"b":[1,2],"a":"x"}})",
             R"({"task":"echo","max_attempts":3,"timeout_ms":4294967295,"retry_on_error":true})",
             R"({"task":"echo","max_attempts":0})",
             R"({"task":"echo","max_attempts":-0})",
             R"({"task":"echo","timeout_ms":4294967296})",
             R"({"task":"echo","timeout_ms":1.0})",
             R"({"task":"echo","retry_on_error":1})",
             R"({"task":"echo","task":"other"})",
             R"({"task":""})",
             R"({"task":1})",
             R"({"args":[]})",
             R"({"task":"echo","max_attempt":3})",
             R"({"zz":1,"aa":2,"task":"echo"})",
             R"([1,2])",
             R"("task")",
             R"({"task":"echo"} {"task":"echo"})",
             R"({"task":"echo"}x)",
             R"({"task":"echo",})",
             R"({"task":"echo","args":[1,]})",
             R"({"task":"echo","args":[01]})",
             R"({"task":"echo","args":["\ud800"]})",
             R"({"task":"echo","args":["\x"]})",
             "{\"task\":\"echo\",\"args\":[\"tab\there\"]}",
             "{\"task\":\"echo\",\"args\":[\"\xc3\"]}",
             "{\"task\":\"echo\",\"args\":[\"\xed\xa0\x80\"]}",
             "\t{\"task\":\"echo\"}\r",
             R"(  {"task" : "echo" , "args" : [ 1 , 2 ] }  )",
             R"({"task":"echo","args":[1])",
             R"({"task":"echo","args":)",
             "{",
             "}",
         })
        check_same_parse(line);
}

TEST_CASE("the fast parser takes plain task lines itself and leaves the rest", "[json_lines]") {
    const auto t = drover::parse_task_line_fast(R"({"task":"echo","args":[7,"x"],"id":"a","max_attempts":2})");
    REQUIRE(t);
    CHECK(t->task == "echo");
    CHECK(t->args == "\x92\x07\xa1x");
    CHECK(t->id_json == "\"a\"");
    CHECK(t->id_wire == "a");
    CHECK(t->options.max_attempts == 2u);
    CHECK_FALSE(drover::parse_task_line_fast(R"({"task":"echo","args":[18446744073709551616]})"));
    CHECK_FALSE(drover::parse_task_line_fast(R"({"task":"echo","bogus":1})"));
    CHECK_FALSE(drover::parse_task_line_fast("{\"task\":\"echo\",\"args\":[\"\x01\"]}"));
}

TEST_CASE("a task line nested past the limit is refused by the fast path too, without a crash", "[json_lines]") {
    for (const std::size_t depth : {256u, 257u, 100000u}) {
        const auto line = R"({"task":"echo","args":)" + std::string(depth, '[') + std::string(depth, ']') + "}";
        CHECK_FALSE(drover::parse_task_line_fast(line));
        std::string error;
        CHECK_FALSE(drover::parse_task_line(line, error));
        CHECK(error == drover::too_deep_message("task line"));
    }
    const auto ok = R"({"task":"echo","args":)" + std::string(255, '[') + std::string(255, ']') + "}";
    CHECK(drover::parse_task_line_fast(ok));
    check_same_parse(ok);
}

TEST_CASE("the fast task-line parser agrees with nlohmann on 3000 generated lines", "[json_lines]") {
    JsonGen gen(12345);
    std::size_t fast = 0;
    for (int i = 0; i < 3000; ++i) {
        const auto line = gen.line();
        check_same_parse(line);
        if (drover::parse_task_line_fast(line)) ++fast;
    }
    CHECK(fast > 500);  // the fast path is taken, not only its fallback
}

TEST_CASE("the hand printer of msgpack gives nlohmann's text", "[json_lines]") {
    JsonGen gen(777);
    for (int i = 0; i < 2000; ++i) {
        std::string error;
        const auto t = drover::parse_task_line_reference(R"({"task":"t","args":)" + gen.value(0) + "}", error);
        if (t) check_same_print(t->args);
    }
    for (const std::string& bytes : {
             std::string(),
             std::string("\xc0"),
             std::string("\x82\xa1"
                         "b\x01\xa1"
                         "a\x02",
                         7),  // keys out of order
             std::string("\x82\xa1"
                         "a\x01\xa1"
                         "a\x02",
                         7),                      // a repeated key
             std::string("\x81\x01\x02", 3),      // a key not a string
             std::string("\xc4\x02\x01\x02", 4),  // binary
             std::string("\xd4\x01\x05", 3),      // an extension
             std::string("\xa3\xff\xfe"
                         "a",
                         4),  // not UTF-8
             std::string("\xa4\xed\xa0\x80"
                         "a",
                         5),  // a surrogate
             std::string("\xa2\xc3\xa9", 3),
             std::string("\xa1\x7f", 2),
             std::string("\xa1\x1f", 2),
             std::string("\xca\x3d\xcc\xcc\xcd", 5),      // float 32: 0.1f
             std::string("\xcb\x7f\xf0\0\0\0\0\0\0", 9),  // +inf
             std::string("\xd3\x80\0\0\0\0\0\0\0", 9),
             std::string("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9),
             std::string("\xd0\x80", 2),
             std::string("\xe0", 1),
             std::string("\x92\x01", 2),  // truncated
             std::string("\x01\x02", 2),  // trailing bytes
             std::string("\xc1", 1),
             std::string(300, '\x91') + "\x01",  // too deep
         })
        check_same_print(bytes);
}

TEST_CASE("result lines are printed as result_to_json and to_line print them", "[json_lines]") {
    drover::Result r;
    r.id = "s.1";
    r.task = "echo";
    r.worker = "host:1\xff";
    r.attempts = 2;
    r.elapsed_ms = 1.23456;
    r.payload = drover::json_to_msgpack(nlohmann::json::array({1, "x", 2.5}));
    for (const auto& id :
         {nlohmann::json(), nlohmann::json("my\nid"), nlohmann::json(42), nlohmann::json({{"b", 1}})}) {
        for (const auto status : {drover::proto::Status::ok, drover::proto::Status::error}) {
            for (const bool accepted : {false, true}) {
                r.status = status;
                r.error = status == drover::proto::Status::ok ? "" : "boom \"quoted\"";
                r.accepted_only = accepted;
                std::string out;
                drover::append_result_line(out, r, id.is_null() ? std::string() : drover::to_line(id));
                CHECK(out == drover::to_line(drover::result_to_json(r, id)));
            }
        }
    }
    std::string rejected;
    drover::append_rejected_line(rejected, 7, "bad \x01 line", "\"a\"");
    CHECK(rejected == drover::to_line({{"line", 7}, {"status", "rejected"}, {"error", "bad \x01 line"}, {"id", "a"}}));
}
