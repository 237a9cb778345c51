// Unit tests of command tasks: template splitting, placeholders, argument
// conversion, and running a command through the Registry (no broker).
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>
#include <catch2/catch.hpp>
#include <msgpack.hpp>
#include <thread>

#include "command_template.hpp"
#include "drover/client/client.hpp"
#include "drover/worker/commands.hpp"
#include "drover/worker/registry.hpp"

using Catch::Matchers::Contains;
using drover::ArgumentError;
using drover::expand_template;
using drover::pack_args;
using drover::parse_template;
using drover::split_words;
using Words = std::vector<std::string>;

namespace {

std::map<std::string, msgpack::object> as_map(const std::string& bytes, msgpack::object_handle& oh) {
    oh = msgpack::unpack(bytes.data(), bytes.size());
    return oh.get().as<std::map<std::string, msgpack::object>>();
}

drover::Registry with(const std::string& option) {
    drover::Registry r;
    drover::add_command_tasks(r, {drover::parse_command_option(option)});
    return r;
}

std::string error_of(const drover::Registry& r, const std::string& name, const std::string& args) {
    try {
        (void)r.run(name, args);
    } catch (const std::exception& e) {
        return e.what();
    }
    FAIL("no error");
    return "";
}

}  // namespace

TEST_CASE("split_words: blanks, quotes and backslashes, no expansion", "[command]") {
    CHECK(split_words("  a  b\tc ") == Words{"a", "b", "c"});
    CHECK(split_words("'a b' \"c d\" e\\ f") == Words{"a b", "c d", "e f"});
    CHECK(split_words("'' \"\" x") == Words{"", "", "x"});
    CHECK(split_words("a'b'\"c\"d") == Words{"abcd"});
    CHECK(split_words("\"\\\"q\\\\ \\n $HOME\"") == Words{"\"q\\ \\n $HOME"});
    CHECK(split_words("'$(x)' ; `y` *") == Words{"$(x)", ";", "`y`", "*"});
    CHECK(split_words("").empty());
    CHECK_THROWS_WITH(split_words("'open"), Contains("unterminated '"));
    CHECK_THROWS_WITH(split_words("\"open"), Contains("unterminated \""));
    CHECK_THROWS_WITH(split_words("x\\"), Contains("trailing"));
}

TEST_CASE("templates: placeholders place each argument as one element", "[command]") {
    const Words args{"a b", "; touch /tmp/x", "$(rm -rf ~)", ""};
    CHECK(expand_template(parse_template("prog -x"), args) ==
          Words{"prog", "-x", "a b", "; touch /tmp/x", "$(rm -rf ~)", ""});
    CHECK(expand_template(parse_template("prog -- {}"), args) ==
          Words{"prog", "--", "a b", "; touch /tmp/x", "$(rm -rf ~)", ""});
    CHECK(expand_template(parse_template("prog {1} mid {0}"), args) == Words{"prog", "; touch /tmp/x", "mid", "a b"});
    CHECK(expand_template(parse_template("prog {} end"), {}) == Words{"prog", "end"});
    CHECK(expand_template(parse_template("prog x{0} '{' {a}"), {"v"}) == Words{"prog", "x{0}", "{", "{a}", "v"});
    CHECK(expand_template(parse_template("prog {0} {0}"), {"v"}) == Words{"prog", "v", "v"});
    CHECK_THROWS_AS(expand_template(parse_template("prog {2}"), {"a", "b"}), ArgumentError);
    CHECK_THROWS_WITH(expand_template(parse_template("prog {2}"), {"a", "b"}),
                      Contains("{2}") && Contains("2 arguments"));
    CHECK_THROWS_WITH(parse_template(""), Contains("empty"));
    CHECK_THROWS_WITH(parse_template("{} x"), Contains("placeholder"));
}

TEST_CASE("a --command option is NAME=TEMPLATE, and names that collide are refused", "[command]") {
    const auto c = drover::parse_command_option("hash=sha256sum -- {}");
    CHECK(c.name == "hash");
    CHECK(c.argv == Words{"sha256sum", "--", "{}"});
    CHECK_THROWS_WITH(drover::parse_command_option("noname"), Contains("NAME=PROGRAM"));
    CHECK_THROWS_WITH(drover::parse_command_option("x="), Contains("empty"));
    drover::Registry r;
    drover::add_builtin_tasks(r);
    CHECK_THROWS_WITH(drover::add_command_tasks(r, {drover::parse_command_option("echo=/bin/echo")}),
                      Contains("'echo'"));
    CHECK_THROWS_WITH(
        drover::add_command_tasks(r, {drover::parse_command_option("a=x"), drover::parse_command_option("a=y")}),
        Contains("twice"));
}

TEST_CASE("commands file: fields, unknown fields refused", "[command]") {
    char path[] = "/tmp/drover-cmd-XXXXXX";
    const int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::close(fd);
    auto write = [&](const std::string& text) { std::ofstream(path) << text; };
    write(
        R"({"up": {"argv": ["tr", "a-z", "A-Z"], "stdin": "arg", "timeout_ms": 500, "env": {"X": "1"}, "cwd": "/"}})");
    const auto cs = drover::load_commands_file(path);
    REQUIRE(cs.size() == 1);
    CHECK(cs[0].stdin_from_last_arg);
    CHECK(cs[0].timeout.count() == 500);
    CHECK(cs[0].env.at("X") == "1");
    write(R"({"up": {"argv": "tr", "timout_ms": 5}})");
    CHECK_THROWS_WITH(drover::load_commands_file(path), Contains("unknown field \"timout_ms\"") && Contains("\"up\""));
    write(R"({"up": {"argv": 5}})");
    CHECK_THROWS_WITH(drover::load_commands_file(path), Contains("argv"));
    write("{");
    CHECK_THROWS_WITH(drover::load_commands_file(path), Contains("not JSON"));
    std::remove(path);
}

TEST_CASE("a command task runs its program and captures output", "[command]") {
    auto r = with("show=printf '%s|'");
    msgpack::object_handle oh;
    auto m = as_map(r.run("show", pack_args("a b", 7, -2, 1.5, true, "")), oh);
    CHECK(m.at("exit").as<int>() == 0);
    CHECK(m.at("stdout").as<std::string>() == "a b|7|-2|1.5|true||");
    CHECK(m.at("stderr").as<std::string>().empty());
    CHECK(m.count("stdout_truncated") == 0);
    CHECK_THROWS_WITH(r.run("show", pack_args(std::vector<int>{1})), Contains("argument 1 is an array"));
}

TEST_CASE("a command task maps exit codes, signals, missing programs, limits", "[command]") {
    auto sh = with("sh=sh -c {0} sh");
    CHECK_THROWS_WITH(sh.run("sh", pack_args("echo oops >&2; exit 3")), Contains("exit code 3") && Contains("oops"));
    CHECK_THROWS_WITH(sh.run("sh", pack_args("kill -9 $$")), Contains("killed by signal 9 (SIGKILL)"));
    CHECK_THAT(error_of(with("nope=/no/such/program"), "nope", pack_args()),
               Contains("cannot run '/no/such/program': No such file or directory"));
    auto big = drover::parse_command_option("big=head -c 5000 /dev/zero");
    big.max_output_bytes = 1000;
    drover::Registry r;
    drover::add_command_tasks(r, {big});
    msgpack::object_handle oh;
    auto m = as_map(r.run("big", pack_args()), oh);
    CHECK(m.at("stdout").as<std::string>().size() == 1000);
    CHECK(m.at("stdout_truncated").as<bool>());
    auto bad = as_map(sh.run("sh", pack_args("printf 'a\\377b'")), oh);
    CHECK(bad.at("stdout").as<std::string>() ==
          "a\xEF\xBF\xBD"
          "b");
    CHECK(bad.at("stdout_lossy").as<bool>());
}

TEST_CASE("a command's timeout kills its whole process group", "[command]") {
    const std::string pidfile = "/tmp/drover-cmd-pgid-" + std::to_string(::getpid());
    auto spec = drover::parse_command_option("slow=sh -c 'echo $$ > \"$0\"; sleep 30 & sleep 30' " + pidfile);
    spec.timeout = std::chrono::milliseconds(200);
    drover::Registry r;
    drover::add_command_tasks(r, {spec});
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_THROWS_WITH(r.run("slow", pack_args()), Contains("timed out after 200 ms"));
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
    CHECK(drover::wait_running_commands(std::chrono::milliseconds(0)));
    int pgid = 0;
    std::ifstream(pidfile) >> pgid;
    std::remove(pidfile.c_str());
    REQUIRE(pgid > 1);
    errno = 0;
    CHECK(::kill(-pgid, 0) == -1);
    CHECK(errno == ESRCH);  // the background sleep died with its group
}

TEST_CASE("output cut at its limit stays whole characters, and replacement cannot grow it past the limit",
          "[command]") {
    auto cut = drover::parse_command_option("cut=sh -c {0} sh");
    cut.max_output_bytes = 4;
    drover::Registry r;
    drover::add_command_tasks(r, {cut});
    msgpack::object_handle oh;
    // "aé" then "é": the limit falls inside the second é, which is dropped, not replaced.
    auto m = as_map(r.run("cut", pack_args("printf 'a\\303\\251\\303\\251'")), oh);
    CHECK(m.at("stdout").as<std::string>() == "a\xC3\xA9");
    CHECK(m.at("stdout_truncated").as<bool>());
    CHECK(m.count("stdout_lossy") == 0);
    // Four bytes that are not UTF-8 become 12 of U+FFFD: cut back to the limit.
    m = as_map(r.run("cut", pack_args("printf '\\377\\377\\377\\377'")), oh);
    CHECK(m.at("stdout").as<std::string>() == "\xEF\xBF\xBD");
    CHECK(m.at("stdout_truncated").as<bool>());
    CHECK(m.at("stdout_lossy").as<bool>());
}

TEST_CASE("a missing working directory is named as such", "[command]") {
    auto spec = drover::parse_command_option("in=true");
    spec.cwd = "/no/such/dir";
    drover::Registry r;
    drover::add_command_tasks(r, {spec});
    CHECK_THAT(error_of(r, "in", pack_args()),
               Contains("its working directory '/no/such/dir'") && Contains("No such file or directory"));
}

TEST_CASE("a command whose exit status another thread reaped ends in an error, not a hang or exit 0", "[command]") {
    auto r = with("quick=sh -c {0} sh");
    std::atomic<bool> done{false};
    std::thread thief([&] {  // as an embedding program's SIGCHLD handler reaping every child would
        while (!done) {
            ::waitpid(-1, nullptr, WNOHANG);
            std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
    });
    std::string error;
    const auto t0 = std::chrono::steady_clock::now();
    error = error_of(r, "quick", pack_args("sleep 0.2; exit 3"));
    done = true;
    thief.join();
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
    // Which of the two reaps first is a race: either answer is true, neither a hang nor a success.
    CHECK_THAT(error, Contains("took its exit status") || Contains("exit code 3"));
}

TEST_CASE("the task list notes a command whose arguments may be read as options", "[command]") {
    CHECK_THAT(drover::describe_command(drover::parse_command_option("h=sha256sum {}")), Contains("put -- before {}"));
    CHECK_THAT(drover::describe_command(drover::parse_command_option("g=grep -c")), Contains("put -- before {}"));
    CHECK_THAT(drover::describe_command(drover::parse_command_option("h=sha256sum -- {}")), !Contains("put -- before"));
}
