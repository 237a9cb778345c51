// Unit tests of the worker's task Registry and the built-in tasks.
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

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
T unpack_as(const std::string& bytes) {
    auto oh = msgpack::unpack(bytes.data(), bytes.size());
    return oh.get().as<T>();
}

// Runs `name` and returns the text of the ArgumentError it must throw.
std::string argument_error(const Registry& r, const std::string& name, const std::string& args) {
    try {
        (void)r.run(name, args);
    } catch (const ArgumentError& e) {
        return e.what();
    }
    FAIL("run(\"" << name << "\") did not throw ArgumentError");
    return {};
}

Registry builtins() {
    Registry r;
    drover::add_builtin_tasks(r);
    return r;
}

Registry with_add() {
    Registry r;
    r.add("add", [](int a, int b) { return a + b; });
    return r;
}

}  // namespace

TEST_CASE("A typed lambda add(int, int) returns the sum", "[registry]") {
    const Registry r = with_add();
    CHECK(r.contains("add"));
    CHECK(unpack_as<int>(r.run("add", pack_args(2, 3))) == 5);
    CHECK(unpack_as<int>(r.run("add", pack_args(-7, 3))) == -4);
    CHECK(unpack_as<std::int64_t>(r.run("add", pack_args(0, 0))) == 0);
}

TEST_CASE("A task may take its arguments by const reference and return a string", "[registry]") {
    Registry r;
    r.add("join", [](const std::string& a, const std::vector<std::string>& rest) {
        std::string out = a;
        for (const auto& s : rest) out += "," + s;
        return out;
    });
    CHECK(unpack_as<std::string>(r.run("join", pack_args(std::string("a"), std::vector<std::string>{"b", "c"}))) ==
          "a,b,c");
}

TEST_CASE("A void task returns nil", "[registry]") {
    Registry r;
    int calls = 0;
    r.add("touch", [&calls]() { ++calls; });
    const std::string out = r.run("touch", pack_args());
    auto oh = msgpack::unpack(out.data(), out.size());
    CHECK(oh.get().type == msgpack::type::NIL);
    CHECK(calls == 1);
}

TEST_CASE("A single bare argument is taken as the only argument", "[registry]") {
    Registry r;
    r.add("twice", [](int x) { return 2 * x; });
    msgpack::sbuffer b;
    msgpack::pack(b, 21);
    CHECK(unpack_as<int>(r.run("twice", std::string(b.data(), b.size()))) == 42);
}

TEST_CASE("A trailing std::optional parameter may be omitted", "[registry]") {
    Registry r;
    r.add("greet", [](const std::string& name, std::optional<std::string> greeting) {
        return greeting.value_or("Hi") + " " + name;
    });
    CHECK(unpack_as<std::string>(r.run("greet", pack_args(std::string("Ann")))) == "Hi Ann");
    CHECK(unpack_as<std::string>(r.run("greet", pack_args(std::string("Ann"), std::string("Hey")))) == "Hey Ann");
    // An explicit nil is an absent optional too.
    CHECK(unpack_as<std::string>(r.run("greet", pack_args(std::string("Ann"), msgpack::type::nil_t{}))) == "Hi Ann");
    // The required parameter still is required, and the message says the optional one is not.
    CHECK_THAT(argument_error(r, "greet", pack_args()), Contains("expected 1 to 2 arguments, got 0"));
    CHECK_THAT(argument_error(r, "greet", pack_args(1, 2, 3)), Contains("expected 1 to 2 arguments, got 3"));
}

TEST_CASE("Too many arguments throw ArgumentError saying how many were expected", "[registry]") {
    const Registry r = with_add();
    const std::string msg = argument_error(r, "add", pack_args(1, 2, 3));
    CHECK_THAT(msg, Contains("expected 2 arguments"));
    CHECK_THAT(msg, Contains("got 3"));
}

TEST_CASE("Too few arguments throw ArgumentError saying how many were expected", "[registry]") {
    const Registry r = with_add();
    const std::string one = argument_error(r, "add", pack_args(1));
    CHECK_THAT(one, Contains("expected 2 arguments"));
    CHECK_THAT(one, Contains("got 1"));
    CHECK_THAT(argument_error(r, "add", pack_args()), Contains("got 0"));
    // No argument bytes at all is no arguments.
    CHECK_THAT(argument_error(r, "add", ""), Contains("expected 2 arguments, got 0"));
}

TEST_CASE("An argument of the wrong type throws ArgumentError naming its position", "[registry]") {
    const Registry r = with_add();
    // A string for an integer is converted if it can be (registry_strings_test.cpp), else named.
    CHECK_THAT(argument_error(r, "add", pack_args(std::string("one"), 2)),
               Contains("argument 1: expected an integer, got \"one\""));
    CHECK_THAT(argument_error(r, "add", pack_args(1, std::vector<int>{2})), Contains("argument 2 has the wrong type"));
    CHECK_THAT(argument_error(r, "add", pack_args(1, 2.5)), Contains("argument 2"));
    // A value out of the parameter's range says so.
    CHECK_THAT(argument_error(r, "add", pack_args(std::int64_t{1} << 40, 1)),
               Contains("argument 1 is out of range: expected an integer from -2147483648 to 2147483647"));
    // The message says what was expected and what came.
    CHECK_THAT(argument_error(r, "add", pack_args(true, 2)),
               Contains("argument 1 has the wrong type: expected an integer, got a boolean"));
    CHECK_THAT(argument_error(r, "add", pack_args(1, 2.5)), Contains("expected an integer, got a number"));
    CHECK_THAT(argument_error(r, "add", pack_args(1e20, 1)), Contains("argument 1 is out of range"));
}

TEST_CASE("A whole number sent as a float (JSON 1e3) is taken by an integer parameter", "[registry]") {
    const Registry r = with_add();
    CHECK(unpack_as<int>(r.run("add", pack_args(1e3, 2.0))) == 1002);
    CHECK(unpack_as<int>(r.run("add", pack_args(-4.0, 1))) == -3);
    Registry u;
    u.add("twice", [](std::optional<std::uint32_t> n) { return n.value_or(0) * 2; });
    CHECK(unpack_as<std::uint32_t>(u.run("twice", pack_args(21.0))) == 42);
    CHECK_THAT(argument_error(u, "twice", pack_args(-1.0)), Contains("out of range"));
    CHECK_THAT(argument_error(u, "twice", pack_args(4294967296.0)), Contains("from 0 to 4294967295"));
    CHECK_THAT(argument_error(u, "twice", pack_args(1, 2)), Contains("expected 0 to 1 arguments, got 2"));
}

TEST_CASE("An unknown task name throws ArgumentError mentioning the name", "[registry]") {
    const Registry r = with_add();
    CHECK_FALSE(r.contains("subtract"));
    CHECK_THAT(argument_error(r, "subtract", pack_args(1, 2)), Contains("subtract"));
    CHECK_THAT(argument_error(r, "subtract", pack_args(1, 2)), Contains("unknown task"));
}

TEST_CASE("Malformed argument bytes throw ArgumentError", "[registry]") {
    const Registry r = with_add();
    CHECK_THAT(argument_error(r, "add", "\xc1"), Contains("not valid msgpack"));
    // Truncated: an array of two with only one element.
    CHECK_THAT(argument_error(r, "add", std::string("\x92\x01", 2)), Contains("not valid msgpack"));
    // A valid value followed by more bytes.
    CHECK_THAT(argument_error(r, "add", pack_args(1, 2) + std::string(1, '\0')), Contains("trailing bytes"));
    // An array that claims four billion elements.
    CHECK_THAT(argument_error(r, "add", std::string("\xdd\xff\xff\xff\xff", 5)), Contains("not valid msgpack"));
}

TEST_CASE("Adding a task under an existing name replaces it", "[registry]") {
    Registry r = with_add();
    r.add("add", [](int a, int b) { return a * b; });
    CHECK(unpack_as<int>(r.run("add", pack_args(3, 4))) == 12);
    CHECK(r.names() == std::vector<std::string>{"add"});
}

TEST_CASE("Arguments stay whole across tasks run one after another and one inside another", "[registry]") {
    // Run reuses one unpacking zone per thread between tasks: what a task
    // reads must not be overwritten by the next task, or by one it runs.
    Registry r;
    r.add("greet", [](const std::string& a, const std::string& b) { return a + " " + b; });
    r.add_raw("outer", [&r](const msgpack::object& args) {
        const auto before = args.as<std::vector<std::string>>();
        const auto inner = unpack_as<std::string>(r.run("greet", pack_args(std::string(300, 'x'), "inner")));
        const auto after = args.as<std::vector<std::string>>();
        msgpack::sbuffer out;
        msgpack::pack(out, before == after && inner == std::string(300, 'x') + " inner" ? after[0] : "clobbered");
        return std::string(out.data(), out.size());
    });
    for (int i = 0; i < 3; ++i) {
        const std::string big(20000 + i, static_cast<char>('a' + i));  // past the zone's first chunk
        CHECK(unpack_as<std::string>(r.run("greet", pack_args(big, "there"))) == big + " there");
        CHECK(unpack_as<std::string>(r.run("outer", pack_args("kept", std::string(9000, 'y')))) == "kept");
    }
}

TEST_CASE("The built-in tasks are all registered", "[registry][builtin]") {
    const Registry r = builtins();
    for (const char* name : {"sum_random", "hello", "echo", "sleep_ms", "fail", "fail_times", "crash"}) {
        CAPTURE(name);
        CHECK(r.contains(name));
    }
    CHECK(r.names().size() == 7);
}

TEST_CASE("sum_random of 1000 numbers is within bounds and deterministic for a seed", "[registry][builtin]") {
    const Registry r = builtins();
    const auto a = unpack_as<std::int64_t>(r.run("sum_random", pack_args(1000, 42)));
    CHECK(a >= 1000);
    CHECK(a <= 100000);
    const auto b = unpack_as<std::int64_t>(r.run("sum_random", pack_args(1000, 42)));
    CHECK(a == b);
    // A sum of 1000 uniform draws in 1..100 is near 50500.
    CHECK(a > 40000);
    CHECK(a < 61000);

    // Different seeds give different sums (at least somewhere among a few).
    std::vector<std::int64_t> sums;
    for (std::uint64_t seed = 1; seed <= 5; ++seed)
        sums.push_back(unpack_as<std::int64_t>(r.run("sum_random", pack_args(1000, seed))));
    bool any_differs = false;
    for (auto s : sums) any_differs = any_differs || s != sums[0];
    CHECK(any_differs);
}

TEST_CASE("sum_random works without a seed and rejects a negative count", "[registry][builtin]") {
    const Registry r = builtins();
    const auto s = unpack_as<std::int64_t>(r.run("sum_random", pack_args(10)));
    CHECK(s >= 10);
    CHECK(s <= 1000);
    CHECK(unpack_as<std::int64_t>(r.run("sum_random", pack_args(0, 7))) == 0);
    CHECK_THROWS_AS(r.run("sum_random", pack_args(-1, 7)), ArgumentError);
}

TEST_CASE("hello greets by name", "[registry][builtin]") {
    const Registry r = builtins();
    CHECK(unpack_as<std::string>(r.run("hello", pack_args(std::string("x")))) == "Hello, x!");
    CHECK_THROWS_AS(r.run("hello", pack_args(1)), ArgumentError);
}

TEST_CASE("echo returns its argument unchanged", "[registry][builtin]") {
    const Registry r = builtins();
    SECTION("a map") {
        const std::map<std::string, int> m{{"a", 1}, {"b", 2}};
        CHECK(unpack_as<std::map<std::string, int>>(r.run("echo", pack_args(m))) == m);
    }
    SECTION("an array") {
        const std::vector<int> v{1, 2, 3};
        CHECK(unpack_as<std::vector<int>>(r.run("echo", pack_args(v))) == v);
    }
    SECTION("a string") { CHECK(unpack_as<std::string>(r.run("echo", pack_args(std::string("same")))) == "same"); }
    SECTION("the exact bytes of a nested value") {
        const std::map<std::string, std::vector<int>> nested{{"k", {1, -2, 300000}}};
        msgpack::sbuffer b;
        msgpack::pack(b, nested);
        CHECK(r.run("echo", pack_args(nested)) == std::string(b.data(), b.size()));
    }
    SECTION("two arguments are one too many") {
        CHECK_THAT(argument_error(r, "echo", pack_args(1, 2)), Contains("expected 1 argument"));
    }
}

TEST_CASE("fail throws std::runtime_error with the given message", "[registry][builtin]") {
    const Registry r = builtins();
    CHECK_THROWS_MATCHES(r.run("fail", pack_args(std::string("boom"))), std::runtime_error,
                         Catch::Matchers::Message("boom"));
    CHECK_THROWS_WITH(r.run("fail", pack_args()), Contains("fail() was called"));
}

TEST_CASE("sleep_ms(1) returns 1", "[registry][builtin]") {
    const Registry r = builtins();
    CHECK(unpack_as<std::int64_t>(r.run("sleep_ms", pack_args(1))) == 1);
    CHECK(unpack_as<std::int64_t>(r.run("sleep_ms", pack_args(0))) == 0);
    CHECK_THROWS_AS(r.run("sleep_ms", pack_args(-5)), ArgumentError);
}

TEST_CASE("Built-in tasks reject malformed argument bytes with ArgumentError", "[registry][builtin]") {
    const Registry r = builtins();
    for (const char* name : {"sum_random", "hello", "echo", "sleep_ms", "fail"}) {
        CAPTURE(name);
        CHECK_THAT(argument_error(r, name, "\xc1"), Contains("not valid msgpack"));
    }
}
