// Unit tests of the Registry's reading of string arguments for typed parameters.
#include <cstdint>
#include <optional>
#include <string>

#include <catch2/catch.hpp>
#include <msgpack.hpp>

#include "drover/client/client.hpp"
#include "drover/worker/registry.hpp"

using Catch::Matchers::Contains;
using drover::ArgumentError;
using drover::pack_args;
using drover::Registry;

namespace {

template <class T>
T run_as(const Registry& r, const std::string& name, const std::string& args) {
    const auto bytes = r.run(name, args);
    auto oh = msgpack::unpack(bytes.data(), bytes.size());
    return oh.get().as<T>();
}

Registry typed() {
    Registry r;
    r.add("i64", [](std::int64_t v) { return v; });
    r.add("i8", [](std::int8_t v) { return static_cast<int>(v); });
    r.add("u32", [](std::uint32_t v) { return static_cast<std::uint64_t>(v); });
    r.add("dbl", [](double v) { return v; });
    r.add("flag", [](bool v) { return v; });
    r.add("opt", [](std::int64_t a, std::optional<std::int64_t> b) { return a + b.value_or(100); });
    r.add("str", [](std::string s) { return s; });
    return r;
}

}  // namespace

TEST_CASE("a string argument converts for an integer, floating-point or bool parameter", "[unit]") {
    const auto r = typed();
    CHECK(run_as<std::int64_t>(r, "i64", pack_args(std::string("42"))) == 42);
    CHECK(run_as<std::int64_t>(r, "i64", pack_args(std::string("-7"))) == -7);
    CHECK(run_as<std::int64_t>(r, "i64", pack_args(std::string("007"))) == 7);
    CHECK(run_as<std::int64_t>(r, "i64", pack_args(std::string("1e6"))) == 1000000);
    CHECK(run_as<std::int64_t>(r, "i64", pack_args(std::string("1000.0"))) == 1000);
    CHECK(run_as<std::uint64_t>(r, "u32", pack_args(std::string("4294967295"))) == 4294967295u);
    CHECK(run_as<double>(r, "dbl", pack_args(std::string("1e6"))) == 1e6);
    CHECK(run_as<double>(r, "dbl", pack_args(std::string("-0.25"))) == -0.25);
    CHECK(run_as<bool>(r, "flag", pack_args(std::string("true"))));
    CHECK_FALSE(run_as<bool>(r, "flag", pack_args(std::string("false"))));
    CHECK(run_as<std::int64_t>(r, "opt", pack_args(std::string("1"), std::string("2"))) == 3);
    CHECK(run_as<std::int64_t>(r, "opt", pack_args(std::string("1"))) == 101);
    CHECK(run_as<std::string>(r, "str", pack_args(std::string("42"))) == "42");  // a string stays one
    CHECK(run_as<std::int64_t>(r, "i64", pack_args(42)) == 42);                  // numbers as before
}

TEST_CASE("a string that does not convert names the argument and its text", "[unit]") {
    const auto r = typed();
    CHECK_THROWS_WITH(r.run("i64", pack_args(std::string("abc"))), "argument 1: expected an integer, got \"abc\"");
    CHECK_THROWS_WITH(r.run("opt", pack_args(std::string("1"), std::string("2x"))),
                      "argument 2: expected an integer, got \"2x\"");
    CHECK_THROWS_WITH(r.run("i64", pack_args(std::string(""))), "argument 1: expected an integer, got \"\"");
    CHECK_THROWS_WITH(r.run("i64", pack_args(std::string(" 4"))), Contains("expected an integer"));
    CHECK_THROWS_WITH(r.run("i64", pack_args(std::string("1.5"))), Contains("expected an integer"));
    CHECK_THROWS_WITH(r.run("dbl", pack_args(std::string("x1"))), "argument 1: expected a number, got \"x1\"");
    CHECK_THROWS_WITH(r.run("flag", pack_args(std::string("yes"))), "argument 1: expected true or false, got \"yes\"");
    CHECK_THROWS_WITH(r.run("i64", pack_args(std::string(300, '9'))), Contains("out of range"));
    CHECK_THROWS_WITH(r.run("i8", pack_args(std::string("200"))), Contains("out of range"));
    CHECK_THROWS_WITH(r.run("u32", pack_args(std::string("-1"))), Contains("out of range"));
    CHECK_THROWS_WITH(r.run("u32", pack_args(std::string("1e10"))), Contains("out of range"));
    CHECK_THROWS_AS(r.run("i64", pack_args(std::string(100, 'z'))), ArgumentError);
    CHECK_THROWS_WITH(r.run("i64", pack_args(std::string(100, 'z'))), Contains("...\""));  // cut
}

TEST_CASE("the built-in sum_random takes its count as a string", "[unit]") {
    Registry r;
    drover::add_builtin_tasks(r);
    CHECK(run_as<std::int64_t>(r, "sum_random", pack_args(std::string("1000"), std::string("7"))) ==
          run_as<std::int64_t>(r, "sum_random", pack_args(1000, 7)));
}
