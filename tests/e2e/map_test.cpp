// drover-producer map from the shell: the argument rule, tasks from input
// lines, the joblog and --resume, --halt-on-error and --bar.
#include <catch2/catch.hpp>

#include <csignal>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cluster_fixture.hpp"

using namespace drover::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// The lines of a text file.
std::vector<std::string> lines_of(const std::string& path) {
    std::vector<std::string> out;
    std::istringstream in(read_file(path));
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

// The ids of the joblog's lines with status ok, CHECKing none comes twice.
std::set<std::string> ok_in_joblog(const std::string& path) {
    std::set<std::string> ids;
    for (const auto& l : read_json_lines(path))
        if (l["status"] == "ok") CHECK(ids.insert(l["id"].get<std::string>()).second);
    return ids;
}

std::vector<std::string> sleep_args(int n, const std::string& ms) { return std::vector<std::string>(n, ms); }

}  // namespace

TEST_CASE_METHOD(BrokerAndWorker,
                 "map sends its words as strings, JSON only if they begin with a bracket, a brace or a quote",
                 "[e2e]") {
    Process p =
        start_producer(dir, broker.frontend, {"map", "echo", "007", "true", "[1,2]", "[[1]]", "\"x\"", "-"}, "out");
    REQUIRE(p.wait(20s) == 0);
    const auto out = read_json_lines(dir.file("out"));
    // [[1]] whole: CLI11 reads [a,b] as a list of two and [[1]] as [1] where it parses ARGs itself.
    CHECK(out == std::vector<json>{"007", "true", json::array({1, 2}), json::parse("[[1]]"), "x", "-"});

    // A typed task converts the string; one that does not convert says why.
    Process sum = start_producer(dir, broker.frontend, {"map", "sum_random", "1000", "abc"}, "sum");
    REQUIRE(sum.wait(20s) == 1);
    const auto sums = read_json_lines(dir.file("sum"));
    REQUIRE(sums.size() == 2);
    CHECK(sums[0].get<std::int64_t>() >= 1000);
    CHECK(sums[1].is_null());
    CHECK_THAT(read_file(dir.file("sum.err")), Catch::Contains("argument 1: expected an integer, got \"abc\""));

    // An argument that begins like JSON but is not: a usage error naming it.
    Process bad = start_producer(dir, broker.frontend, {"map", "echo", "a", "[1,"}, "bad");
    CHECK(bad.wait(10s) == 2);
    CHECK_THAT(read_file(dir.file("bad.err")), Catch::Contains("argument 2"));
}

TEST_CASE_METHOD(BrokerAndWorker, "map - reads 10,000 tasks from stdin, a line each, in order", "[e2e]") {
    std::string input;
    for (int i = 0; i < 10000; ++i)
        input += (i == 5000 ? "\n  \n" : "") + std::string("'w ") + std::to_string(i) + "'\n";
    write_file(dir.file("in.txt"), input);
    const auto check = [&](const std::string& out) {
        const auto got = read_json_lines(dir.file(out));
        REQUIRE(got.size() == 10000);
        for (int i = 0; i < 10000; ++i) CHECK(got[i] == "w " + std::to_string(i));
    };
    Process p = start_producer(dir, broker.frontend, {"map", "echo", "-"}, "out", "in.txt");
    REQUIRE(p.wait(60s) == 0);
    check("out");
    Process f = start_producer(dir, broker.frontend, {"map", "--args-from", dir.file("in.txt"), "echo"}, "file");
    REQUIRE(f.wait(60s) == 0);
    check("file");
    // A line's words are its task's arguments.
    write_file(dir.file("two.txt"), "a b\n'unclosed\nc\n");
    Process two = start_producer(dir, broker.frontend, {"map", "hello", "-"}, "two", "two.txt");
    CHECK(two.wait(20s) == 1);
    CHECK(read_json_lines(dir.file("two")) == std::vector<json>{nullptr, nullptr, "Hello, c!"});
    const auto err = read_file(dir.file("two.err"));
    CHECK_THAT(err, Catch::Contains("expected 1 argument, got 2"));
    CHECK_THAT(err, Catch::Contains("line 2: unterminated ' quote"));
    // Bytes that are not UTF-8 (a file name in Latin-1): printed with U+FFFD,
    // kept in the joblog, never a crash; and a task that fails names them.
    write_file(dir.file("latin1.txt"), "caf\xe9\n");
    Process latin = start_producer(dir, broker.frontend, {"map", "--joblog", dir.file("latin1.log"), "echo", "-"},
                                   "latin", "latin1.txt");
    CHECK(latin.wait(20s) == 0);
    CHECK(read_file(dir.file("latin")) == "\"caf\xef\xbf\xbd\"\n");
    CHECK(read_json_lines(dir.file("latin1.log")).size() == 1);
    Process failing = start_producer(dir, broker.frontend, {"map", "fail", "-"}, "failing", "latin1.txt");
    CHECK(failing.wait(20s) == 1);
    CHECK_THAT(read_file(dir.file("failing.err")), Catch::Contains("caf\xef\xbf\xbd"));
}

TEST_CASE_METHOD(BrokerAndWorker, "map --joblog --resume after Ctrl-C runs only the rest", "[e2e]") {
    auto args = std::vector<std::string>{"map", "--joblog", dir.file("job.log"), "sleep_ms"};
    for (const auto& a : sleep_args(100, "20")) args.push_back(a);
    Process first = start_producer(dir, broker.frontend, args, "first");
    std::this_thread::sleep_for(800ms);
    first.signal(SIGINT);
    REQUIRE(first.wait(10s) == 130);
    const auto done_first = ok_in_joblog(dir.file("job.log"));
    CHECK(done_first.size() > 0);
    CHECK(done_first.size() < 100);

    args.insert(args.begin() + 1, "--resume");
    Process second = start_producer(dir, broker.frontend, args, "second");
    REQUIRE(second.wait(30s) == 0);
    CHECK(lines_of(dir.file("second")).size() == 100 - done_first.size());
    CHECK_THAT(read_file(dir.file("second.err")),
               Catch::Contains("skipped " + std::to_string(done_first.size()) + " tasks"));
    const auto all = ok_in_joblog(dir.file("job.log"));  // no id twice, and all there
    CHECK(all.size() == 100);
    const auto line = read_json_lines(dir.file("job.log")).back();
    CHECK(line["args"] == json::array({"20"}));
    CHECK(line["attempts"] == 1);
    CHECK(line["exit"].is_null());
    CHECK(line["run_ms"].get<double>() >= 19.0);
    CHECK(line["start"].get<double>() > 1.6e9);
    CHECK(line["worker"].get<std::string>().rfind(line["host"].get<std::string>() + ":", 0) == 0);
}

TEST_CASE_METHOD(BrokerAndWorker, "map --halt-on-error stops after the first failure", "[e2e]") {
    // A small window, as parallel's -j: the worker's prefetch is not cancellable, only the broker's queue.
    auto args = std::vector<std::string>{"--window", "2", "map", "--halt-on-error", "sleep_ms", "30", "30", "oops"};
    for (const auto& a : sleep_args(60, "30")) args.push_back(a);
    Process p = start_producer(dir, broker.frontend, args, "out");
    REQUIRE(p.wait(30s) == 1);
    const auto out = read_json_lines(dir.file("out"));
    REQUIRE(out.size() >= 3);
    CHECK(out.size() < 10);  // the rest never ran
    CHECK(out[0] == 30);
    CHECK(out[2].is_null());
    CHECK_THAT(read_file(dir.file("out.err")), Catch::Contains("--halt-on-error: stopped submitting"));
}

TEST_CASE_METHOD(BrokerAndWorker, "map --bar prints progress lines to a stderr that is no terminal", "[e2e]") {
    auto args = std::vector<std::string>{"map", "--bar", "sleep_ms"};
    for (const auto& a : sleep_args(25, "100")) args.push_back(a);
    Process p = start_producer(dir, broker.frontend, args, "out");
    REQUIRE(p.wait(30s) == 0);
    std::vector<std::string> bars;
    for (const auto& l : lines_of(dir.file("out.err")))
        if (l.rfind("[drover] ", 0) == 0) bars.push_back(l);
    CHECK(bars.size() >= 2);
    REQUIRE(!bars.empty());
    CHECK(bars.size() <= 6);  // about one a second, not one a task
    CHECK_THAT(bars.back(), Catch::StartsWith("[drover] 25/25 done (100%), 0 not ok,") && Catch::Contains("ETA 0s"));
    CHECK(read_file(dir.file("out.err")).find('\r') == std::string::npos);
}

TEST_CASE_METHOD(BrokerAndWorker, "a line past 16 MiB is refused alone, by map and by submit, and not kept", "[e2e]") {
    const std::string huge((std::size_t{17} << 20), 'x');
    write_file(dir.file("words.txt"), "a\n" + huge + "\nb\n");
    Process map = start_producer(dir, broker.frontend, {"map", "echo", "-"}, "map", "words.txt");
    CHECK(map.wait(30s) == 1);
    CHECK(read_json_lines(dir.file("map")) == std::vector<json>{"a", nullptr, "b"});
    CHECK_THAT(read_file(dir.file("map.err")), Catch::Contains("line 2: longer than 16 MiB"));
    write_file(dir.file("tasks.jsonl"), R"({"id":"a","task":"echo","args":[1]})"
                                        "\n{\"id\":\"big\",\"task\":\"echo\",\"args\":[\"" +
                                            huge + "\"]}\n" + R"({"id":"b","task":"echo","args":[2]})" + "\n");
    Process submit = start_producer(dir, broker.frontend, {"submit"}, "submit", "tasks.jsonl");
    CHECK(submit.wait(30s) == 1);
    const auto out = read_json_lines(dir.file("submit"));
    REQUIRE(out.size() == 3);
    std::map<std::string, json> by_id;
    for (const auto& o : out) by_id[o.value("id", "line " + std::to_string(o.value("line", 0)))] = o;
    CHECK(by_id["a"]["result"] == 1);
    CHECK(by_id["b"]["result"] == 2);
    CHECK(by_id["line 2"]["status"] == "rejected");
    CHECK_THAT(by_id["line 2"]["error"].get<std::string>(), Catch::Contains("longer than 16 MiB"));
}
