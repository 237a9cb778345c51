// Unit tests of the data depth limit: within_depth_limit over msgpack, the
// JSON pre-scan, and each reader of task data that applies them.
#include <string>

#include <catch2/catch.hpp>
#include <msgpack.hpp>

#include "drover/client/client.hpp"
#include "drover/client/json_lines.hpp"
#include "drover/worker/registry.hpp"
#include "internal/unpack.hpp"

using Catch::Matchers::Contains;
using drover::k_max_data_depth;
using drover::within_depth_limit;

namespace {

// `depth` nested arrays of one element around 1 (or around an empty array).
std::string nested_arrays(std::size_t depth, bool innermost_empty = false) {
    std::string s(depth, '\x91');
    s += innermost_empty ? "\x90" : "\x01";
    return s;
}

// `depth` nested maps {1: {1: ... 1}}.
std::string nested_maps(std::size_t depth) {
    std::string s;
    for (std::size_t i = 0; i < depth; ++i) s += "\x81\x01";
    return s + "\x01";
}

// A JSON array nested `depth` deep.
std::string nested_json(std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::string task_line(const std::string& args) { return "{\"task\":\"echo\",\"args\":" + args + "}"; }

}  // namespace

TEST_CASE("within_depth_limit allows k_max_data_depth levels and no more, empty ones counted", "[depth]") {
    CHECK(k_max_data_depth == 256);
    CHECK(within_depth_limit(nested_arrays(256)));
    CHECK_FALSE(within_depth_limit(nested_arrays(257)));
    CHECK(within_depth_limit(nested_arrays(255, true)));
    CHECK_FALSE(within_depth_limit(nested_arrays(256, true)));  // the 257th is empty
    CHECK(within_depth_limit(nested_maps(256)));
    CHECK_FALSE(within_depth_limit(nested_maps(257)));
    CHECK_FALSE(within_depth_limit(nested_arrays(200000)));
    CHECK(within_depth_limit(nested_arrays(3), 3));
    CHECK_FALSE(within_depth_limit(nested_arrays(4), 3));
    CHECK(within_depth_limit(nested_arrays(300), 1000) == false);  // never above k_max_data_depth
    CHECK(within_depth_limit(""));
    CHECK(within_depth_limit("\x01"));
}

TEST_CASE("within_depth_limit counts levels, not containers side by side", "[depth]") {
    // [[...256 deep...], [...256 deep...]] is 257 deep; 256 arrays of 255 deep side by side are 256.
    CHECK_FALSE(within_depth_limit("\x92" + nested_arrays(256) + nested_arrays(256)));
    std::string wide = "\xdc\x01\x00";  // an array of 256
    for (int i = 0; i < 256; ++i) wide += nested_arrays(255);
    CHECK(within_depth_limit(wide));
    // A map's values as well as its keys: {"k": [[...]]}.
    CHECK_FALSE(within_depth_limit("\x81\xa1k" + nested_arrays(256)));
    CHECK(within_depth_limit("\x81\xa1k" + nested_arrays(255)));
    // Values one after another at the top level are each counted from 1.
    CHECK(within_depth_limit(nested_arrays(256) + nested_arrays(256)));
    CHECK_FALSE(within_depth_limit(nested_arrays(1) + nested_arrays(257)));
}

TEST_CASE("within_depth_limit skips the bytes of strings, binaries and extensions", "[depth]") {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    const std::string brackets(100000, '\x91');  // would be 100,000 levels if read as values
    pk.pack_array(3);
    pk.pack(brackets);
    pk.pack_bin(static_cast<std::uint32_t>(brackets.size()));
    pk.pack_bin_body(brackets.data(), static_cast<std::uint32_t>(brackets.size()));
    pk.pack_ext(brackets.size(), 7);
    pk.pack_ext_body(brackets.data(), static_cast<std::uint32_t>(brackets.size()));
    CHECK(within_depth_limit(std::string(b.data(), b.size())));
    for (const std::string& fixed : {std::string("\xd4\x01\x91"), std::string("\xd8\x01") + std::string(16, '\x91'),
                                     std::string("\xcb") + std::string(8, '\x91'), std::string("\xd9\x02\x91\x91")})
        CHECK(within_depth_limit(fixed + "\x01"));
}

TEST_CASE("within_depth_limit says only what it saw of cut or invalid bytes", "[depth]") {
    CHECK(within_depth_limit(std::string(100, '\x91')));                     // cut, 100 deep
    CHECK_FALSE(within_depth_limit(std::string(300, '\x91')));               // cut, but 300 deep before the cut
    CHECK(within_depth_limit("\xc1" + nested_arrays(300)));                  // a decoder stops at 0xc1
    CHECK(within_depth_limit("\xdb\xff\xff\xff\xff" + nested_arrays(300)));  // a string longer than the bytes
    CHECK_FALSE(within_depth_limit("\xdd\xff\xff\xff\xff" + nested_arrays(300)));
}

TEST_CASE("json_within_depth_limit counts brackets outside strings only", "[depth]") {
    using drover::json_within_depth_limit;
    CHECK(json_within_depth_limit(nested_json(256)));
    CHECK_FALSE(json_within_depth_limit(nested_json(257)));
    CHECK_FALSE(json_within_depth_limit(std::string(100000, '[')));
    CHECK(json_within_depth_limit("{\"a\":" + nested_json(255) + "}"));
    CHECK_FALSE(json_within_depth_limit("{\"a\":" + nested_json(256) + "}"));
    CHECK(json_within_depth_limit("\"" + std::string(1000, '[') + "\""));
    CHECK(json_within_depth_limit("[\"\\\"" + std::string(1000, '{') + "\"]"));  // an escaped quote stays in the string
    CHECK_FALSE(json_within_depth_limit("[\"\\\\\"" + std::string(1000, '{') + "]"));  // an escaped backslash does not
    CHECK(json_within_depth_limit(nested_json(3), 3));
    CHECK_FALSE(json_within_depth_limit(nested_json(4), 3));
}

TEST_CASE("a task line nested past the limit is refused before it is parsed, naming the limit", "[depth]") {
    std::string error;
    CHECK(drover::parse_task_line(task_line(nested_json(255)), error));  // 256 with the line's object
    CHECK(error.empty());
    CHECK_FALSE(drover::parse_task_line(task_line(nested_json(256)), error));
    CHECK(error == "task line nested deeper than 256 levels (limit)");
    error.clear();
    CHECK_FALSE(drover::parse_task_line(task_line(nested_json(100000)), error));
    CHECK_THAT(error, Contains("256 levels (limit)"));
}

TEST_CASE("a result nested past the limit reads as a message, never recursively", "[depth]") {
    CHECK(drover::msgpack_to_json(nested_arrays(256)).is_array());
    CHECK(drover::msgpack_to_json(nested_arrays(200000)) == "<result nested deeper than 256 levels (limit)>");
    drover::Result r;
    r.payload = nested_arrays(100000);
    CHECK_THROWS_AS(r.as<msgpack::type::nil_t>(), msgpack::unpack_error);
}

TEST_CASE("a worker refuses arguments nested past the limit, naming it", "[depth]") {
    drover::Registry r;
    drover::add_builtin_tasks(r);
    const std::string ok = "\x91" + nested_arrays(255);  // echo's argument list around a 255-deep value
    CHECK(r.run("echo", ok) == nested_arrays(255));
    try {
        (void)r.run("echo", "\x91" + nested_arrays(200000));
        FAIL("no ArgumentError");
    } catch (const drover::ArgumentError& e) {
        CHECK(std::string(e.what()) == "arguments nested deeper than 256 levels (limit)");
    }
}
