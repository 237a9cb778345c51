// Unit tests of the Scheduler with a Journal: what it journals, and what restore() rebuilds.
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "journal.hpp"
#include "scheduler.hpp"

using drover::Clock;
using drover::FinalOutcome;
using drover::FsyncPolicy;
using drover::Journal;
using drover::JournalIo;
using drover::JournalOptions;
using drover::JournalState;
using drover::Scheduler;
namespace proto = drover::proto;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

const auto t0 = Clock::time_point{} + std::chrono::hours(1);

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "drover-sched-journal-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

proto::Task make_task(const std::string& id, bool detached = true) {
    proto::Task t;
    t.id = id;
    t.name = "sum_random";
    t.args = std::string("\x92\x01\x02", 3);
    t.reply_to = "tcp://sink:1";
    t.detached = detached;
    t.max_attempts = 3;
    t.secret = std::string(proto::k_task_secret_bytes, static_cast<char>('a' + id.size()));
    return t;
}

proto::Hello make_hello(const std::string& worker) {
    proto::Hello h;
    h.worker = worker;
    h.host = "host";
    h.pid = 1;
    h.pool = "default";
    h.slots = 1;
    h.tasks = {"sum_random"};
    return h;
}

JournalOptions sync_always() {
    JournalOptions o;
    o.fsync = FsyncPolicy::always;
    return o;
}

// Opens the journal in `dir` and restores what it holds into `s`; returns
// the journal (set on `s`) and, in `finals`, the outcomes to send again.
std::unique_ptr<Journal> reopen(const TempDir& dir, Scheduler& s, std::vector<FinalOutcome>& finals) {
    auto j = Journal::open(dir.path.string(), sync_always(), [&](Journal::Seq key, const JournalState& st) {
        if (auto f = s.restore(key, st)) finals.push_back(std::move(*f));
    });
    s.set_journal(j.get());
    return j;
}

// Dispatches every queued task to a new worker, which then dies.
void die_once(Scheduler& s, const std::string& worker, std::vector<FinalOutcome>& finals) {
    REQUIRE(s.hello(worker, make_hello("id-" + worker), t0).empty());
    REQUIRE(s.ready(worker, 1, t0));
    REQUIRE(s.dispatch().size() == 1);
    auto lost = s.remove_worker(worker, /*died=*/true);
    finals.insert(finals.end(), lost.begin(), lost.end());
}

}  // namespace

TEST_CASE("restore() rebuilds queued tasks, deaths and broker-made outcomes, and settled tasks stay gone",
          "[scheduler][journal]") {
    TempDir dir;
    std::vector<FinalOutcome> finals;
    {
        Scheduler s;
        auto j = reopen(dir, s, finals);
        std::vector<proto::Task> tasks{make_task("a"), make_task("bb"), make_task("ccc"), make_task("dddd", false)};
        REQUIRE(s.submit("P1", std::move(tasks), t0).accepted == 4);
        std::vector<FinalOutcome> lost;
        die_once(s, "w1", lost);  // "a" is dispatched first: one death
        REQUIRE(lost.empty());
        REQUIRE(s.settle("P1", {"bb"}) == 0);
        REQUIRE(s.cancel("P1", {"ccc"}).size() == 1);
        j->commit(t0);
        s.set_journal(nullptr);
    }
    Scheduler s;
    auto j = reopen(dir, s, finals);
    CHECK(s.task_count() == 3);    // a, ccc (its outcome unsettled), dddd
    CHECK(s.queued_count() == 2);  // a, dddd
    REQUIRE(finals.size() == 1);
    CHECK(finals[0].outcome.id == "ccc");
    CHECK(finals[0].outcome.status == proto::Status::cancelled);
    CHECK(finals[0].reply_to == "tcp://sink:1");
    CHECK(s.route_of("dddd")->producer == "P1");
    // "a" died once before the restart: two more deaths end it lost.
    REQUIRE(s.cancel("P1", {"dddd"}).size() == 1);
    std::vector<FinalOutcome> lost;
    die_once(s, "w2", lost);
    CHECK(lost.empty());
    die_once(s, "w3", lost);
    REQUIRE(lost.size() == 1);
    CHECK(lost[0].outcome.id == "a");
    CHECK(lost[0].outcome.error == "worker died 3 times");
}

TEST_CASE("a task the journal cannot take is rejected journal_unavailable", "[scheduler][journal]") {
    TempDir dir;
    std::atomic<bool> full{false};
    JournalOptions o = sync_always();
    o.fault = [&](JournalIo, std::size_t& bytes) {
        if (!full) return 0;
        bytes = 0;
        return ENOSPC;
    };
    auto j = Journal::open(dir.path.string(), o, [](Journal::Seq, const JournalState&) {});
    Scheduler s;
    s.set_journal(j.get());
    REQUIRE(s.submit("P1", {make_task("a")}, t0).accepted == 1);
    full = true;
    REQUIRE(s.submit("P1", {make_task("bb")}, t0).accepted == 1);  // appended before the disk said no
    j->commit(t0);
    REQUIRE(!j->available());
    const auto out = s.submit("P1", {make_task("ccc")}, t0);
    CHECK(out.accepted == 0);
    REQUIRE(out.rejected.count("journal_unavailable") == 1);
    CHECK(out.rejected.at("journal_unavailable") == std::vector<std::string>{"ccc"});
    CHECK(s.task_count() == 2);
    full = false;
    CHECK(j->retry(t0 + 1s));
    CHECK(s.submit("P1", {make_task("ccc")}, t0 + 1s).accepted == 1);
    s.set_journal(nullptr);
}

TEST_CASE("relocate_journal() gives live tasks new keys that a reopen restores", "[scheduler][journal]") {
    TempDir dir;
    std::vector<FinalOutcome> finals;
    {
        Scheduler s;
        auto j = reopen(dir, s, finals);
        REQUIRE(s.submit("P1", {make_task("a"), make_task("bb")}, t0).accepted == 2);
        REQUIRE(s.cancel("P1", {"bb"}).size() == 1);
        const auto before = j->last_seq();
        s.relocate_journal(before + 1);  // every task
        CHECK(j->last_seq() == before + 2);
        REQUIRE(s.settle("P1", {"a"}) == 0);  // settles under its new key
        j->commit(t0);
        CHECK(j->live_tasks() == 1);
        s.set_journal(nullptr);
    }
    Scheduler s;
    auto j = reopen(dir, s, finals);
    CHECK(s.task_count() == 1);
    REQUIRE(finals.size() == 1);  // bb's cancelled outcome, to send again
    CHECK(finals[0].outcome.id == "bb");
    s.set_journal(nullptr);
}

TEST_CASE("a steady run with a few long-lived tasks keeps the journal small through relocation",
          "[scheduler][journal]") {
    TempDir dir;
    JournalOptions o = sync_always();
    o.segment_bytes = 4096;
    std::size_t relocations = 0;
    {
        auto j = Journal::open(dir.path.string(), o, [](Journal::Seq, const JournalState&) {});
        Scheduler s;
        s.set_journal(j.get());
        for (int round = 0; round < 400; ++round) {
            // 20 short tasks settled at once, and one that lives 10 rounds.
            std::vector<proto::Task> tasks;
            std::vector<std::string> ids;
            for (int i = 0; i < 20; ++i) {
                ids.push_back("r" + std::to_string(round) + "-" + std::to_string(i));
                tasks.push_back(make_task(ids.back()));
            }
            tasks.push_back(make_task("long" + std::to_string(round)));
            REQUIRE(s.submit("P1", std::move(tasks), t0).accepted == 21);
            if (round >= 10) ids.push_back("long" + std::to_string(round - 10));
            REQUIRE(s.settle("P1", ids) == 0);
            j->commit(t0);
            if (const auto below = j->take_relocation()) {
                s.relocate_journal(below);
                ++relocations;
            }
        }
        j->commit(t0);
        CHECK(relocations > 0);
        CHECK(j->live_tasks() == 10);
        CHECK(j->totals().bytes_written > 64 * 4096);  // the run wrote many segments' worth
        CHECK(j->bytes_on_disk() < 16 * 4096);
        CHECK(j->segment_count() < 16);
        s.set_journal(nullptr);
    }
    Scheduler s;
    std::vector<FinalOutcome> finals;
    auto j = reopen(dir, s, finals);
    CHECK(s.task_count() == 10);
    for (int round = 390; round < 400; ++round) CHECK(s.route_of("long" + std::to_string(round)));
    s.set_journal(nullptr);
}
