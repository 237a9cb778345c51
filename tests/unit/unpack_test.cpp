// Unit tests of unpack_object, against msgpack-c's own unpack.
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <msgpack.hpp>

#include "internal/unpack.hpp"

namespace {

template <class T>
std::string packed(const T& v) {
    msgpack::sbuffer b;
    msgpack::pack(b, v);
    return std::string(b.data(), b.size());
}

// msgpack-c's verdict with the limits Registry::run used before: its object
// packed again, or nullopt if it refuses the bytes.
std::optional<std::string> msgpack_c(const std::string& bytes) {
    const std::size_t n = bytes.size();
    try {
        std::size_t offset = 0;
        auto oh = msgpack::unpack(bytes.data(), n, offset, nullptr, nullptr, msgpack::unpack_limit(n, n, n, n, n, 64));
        if (offset != n) return std::nullopt;
        return packed(oh.get());
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

std::optional<std::string> ours(const std::string& bytes) {
    msgpack::zone zone;
    try {
        return packed(drover::unpack_object(zone, bytes));
    } catch (const drover::UnpackError&) {
        return std::nullopt;
    }
}

std::string nested(std::size_t depth, bool innermost_empty) {
    std::string s(depth, '\x91');  // arrays of one element
    s += innermost_empty ? "\x90" : "\x01";
    return s;
}

std::vector<std::string> samples() {
    msgpack::sbuffer ext;
    msgpack::packer<msgpack::sbuffer> pk(ext);
    std::vector<std::string> out{
        packed(msgpack::type::nil_t{}),
        packed(true),
        packed(false),
        packed(0),
        packed(127),
        packed(128),
        packed(255),
        packed(256),
        packed(65536),
        packed(std::numeric_limits<std::uint64_t>::max()),
        packed(-1),
        packed(-32),
        packed(-33),
        packed(-129),
        packed(-40000),
        packed(std::numeric_limits<std::int64_t>::min()),
        packed(1.5f),
        packed(-2.25),
        packed(std::string()),
        packed(std::string(31, 'a')),
        packed(std::string(32, 'b')),
        packed(std::string(300, 'c')),
        packed(std::string(70000, 'd')),
        packed(std::vector<char>{1, 2, 3}),
        packed(std::vector<int>{}),
        packed(std::vector<int>(15, 7)),
        packed(std::vector<int>(16, 8)),
        packed(std::vector<int>(70000, 9)),
        packed(std::map<std::string, int>{}),
        packed(std::map<std::string, std::vector<int>>{{"k", {1, -2, 300000}}, {"l", {}}}),
        packed(std::map<int, std::string>{{1, "x"}, {-5, "yy"}}),
        std::string("\xd0\x05", 2),
        std::string("\xd1\x00\x05", 3),  // a signed encoding of a positive number
        nested(63, false),
        nested(63, true),
        nested(64, false),
        nested(64, true),
        nested(65, false),
        nested(65, true),
        nested(70, true),
        std::string("\xc1"),
        std::string("\xdd\xff\xff\xff\xff", 5),
        std::string("\xdf\x00\x00\x00\x02\x01", 6),
    };
    for (int size : {1, 2, 4, 8, 16, 3, 17, 300, 70000}) {
        ext.clear();
        pk.pack_ext(static_cast<std::size_t>(size), 42);
        std::string body(static_cast<std::size_t>(size), 'e');
        pk.pack_ext_body(body.data(), static_cast<std::uint32_t>(size));
        out.emplace_back(ext.data(), ext.size());
    }
    return out;
}

}  // namespace

TEST_CASE("unpack_object reads every msgpack form as msgpack-c does", "[unpack]") {
    for (const auto& s : samples()) {
        INFO("bytes: " << s.size() << " first: " << static_cast<int>(static_cast<unsigned char>(s[0])));
        CHECK(ours(s) == msgpack_c(s));
    }
}

TEST_CASE("unpack_object refuses every truncation and any trailing byte", "[unpack]") {
    for (const auto& s : samples()) {
        if (s.size() > 400) continue;
        if (!msgpack_c(s)) continue;
        for (std::size_t n = 0; n < s.size(); ++n) {
            INFO("prefix " << n << " of " << s.size());
            CHECK_FALSE(ours(s.substr(0, n)));
        }
        CHECK_FALSE(ours(s + '\x00'));
    }
}

TEST_CASE("unpack_object nests at most max_depth containers, empty ones included", "[unpack]") {
    msgpack::zone zone;
    CHECK_NOTHROW(drover::unpack_object(zone, nested(64, false)));
    CHECK_NOTHROW(drover::unpack_object(zone, nested(63, true)));
    CHECK_THROWS_WITH(drover::unpack_object(zone, nested(64, true)), "too deep");  // the 65th is empty
    CHECK_THROWS_WITH(drover::unpack_object(zone, nested(65, false)), "too deep");
    CHECK_THROWS_WITH(drover::unpack_object(zone, nested(3, false), 2), "too deep");
    CHECK_THROWS_WITH(drover::unpack_object(zone, std::string("\x01\x02")), "trailing bytes");
    CHECK_THROWS_WITH(drover::unpack_object(zone, std::string("\xc1")), "unused byte 0xc1");
    CHECK_THROWS_WITH(drover::unpack_object(zone, std::string("\xdd\xff\xff\xff\xff", 5)), "truncated");
}

TEST_CASE("unpack_object's strings point into the bytes read", "[unpack]") {
    msgpack::zone zone;
    const auto bytes = packed(std::vector<std::string>{"hello", "world"});
    const auto o = drover::unpack_object(zone, bytes);
    REQUIRE(o.type == msgpack::type::ARRAY);
    REQUIRE(o.via.array.size == 2);
    CHECK(o.via.array.ptr[1].as<std::string>() == "world");
    CHECK(o.via.array.ptr[0].via.str.ptr >= bytes.data());
    CHECK(o.via.array.ptr[0].via.str.ptr < bytes.data() + bytes.size());
}
