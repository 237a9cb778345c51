// Unit tests of the broker's Journal: records, recovery, damage, compaction, a full disk.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <poll.h>

#include <catch2/catch.hpp>

#include "journal.hpp"

using drover::Clock;
using drover::FsyncPolicy;
using drover::Journal;
using drover::JournalIo;
using drover::JournalOptions;
using drover::JournalOutcome;
using drover::JournalRecovery;
using drover::JournalState;
using drover::JournalTask;
using drover::Millis;
namespace proto = drover::proto;
namespace fs = std::filesystem;
using Seq = Journal::Seq;
using namespace std::chrono_literals;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "drover-journal-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    [[nodiscard]] std::string str() const { return path.string(); }
};

// A task with its own strings, as a caller of the journal holds it.
struct Owned {
    Seq key = 0;
    std::string id, name, args, reply_to, producer, secret;
    std::uint32_t max_attempts = 3, timeout_ms = 0;
    bool detached = false, retry_on_error = false;
    std::uint32_t attempt = 0, deaths = 0;
    bool has_outcome = false;
    proto::Status status = proto::Status::ok;
    std::uint32_t outcome_attempt = 0;
    std::string error;

    [[nodiscard]] JournalTask task() const {
        JournalTask t;
        t.id = id;
        t.name = name;
        t.args = args;
        t.reply_to = reply_to;
        t.producer = producer;
        t.secret = secret;
        t.max_attempts = max_attempts;
        t.timeout_ms = timeout_ms;
        t.detached = detached;
        t.retry_on_error = retry_on_error;
        return t;
    }
    [[nodiscard]] JournalState state() const {
        JournalState s;
        s.task = task();
        s.attempt = attempt;
        s.deaths = deaths;
        if (has_outcome) s.outcome = JournalOutcome{status, outcome_attempt, error};
        return s;
    }
    static Owned of(Seq key, const JournalState& s) {
        Owned o;
        o.key = key;
        o.id = s.task.id;
        o.name = s.task.name;
        o.args = s.task.args;
        o.reply_to = s.task.reply_to;
        o.producer = s.task.producer;
        o.secret = s.task.secret;
        o.max_attempts = s.task.max_attempts;
        o.timeout_ms = s.task.timeout_ms;
        o.detached = s.task.detached;
        o.retry_on_error = s.task.retry_on_error;
        o.attempt = s.attempt;
        o.deaths = s.deaths;
        o.has_outcome = s.outcome.has_value();
        if (s.outcome) {
            o.status = s.outcome->status;
            o.outcome_attempt = s.outcome->attempt;
            o.error = s.outcome->error;
        }
        return o;
    }
    bool operator==(const Owned& b) const {
        return id == b.id && name == b.name && args == b.args && reply_to == b.reply_to && producer == b.producer &&
               secret == b.secret && max_attempts == b.max_attempts && timeout_ms == b.timeout_ms &&
               detached == b.detached && retry_on_error == b.retry_on_error && attempt == b.attempt &&
               deaths == b.deaths && has_outcome == b.has_outcome &&
               (!has_outcome || (status == b.status && outcome_attempt == b.outcome_attempt && error == b.error));
    }
};

Owned make_task(int i, const std::string& name = "sum_random") {
    Owned o;
    o.id = "task-" + std::to_string(i);
    o.name = name;
    o.args = std::string("\x92\x01\x00", 3) + std::to_string(i);
    o.reply_to = "tcp://127.0.0.1:5560";
    o.producer = "Pabcdefgh";
    o.secret = std::string(16, static_cast<char>('a' + i % 26));
    o.detached = true;
    return o;
}

JournalOptions options_with(FsyncPolicy p = FsyncPolicy::batch) {
    JournalOptions o;
    o.fsync = p;
    return o;
}

// Opens the journal in `dir`; the tasks it recovers, in the order given.
std::unique_ptr<Journal> open_journal(const std::string& dir, JournalOptions options, std::vector<Owned>* recovered,
                                      JournalRecovery* report = nullptr) {
    if (recovered) recovered->clear();
    return Journal::open(
        dir, std::move(options),
        [&](Seq key, const JournalState& s) {
            if (recovered) recovered->push_back(Owned::of(key, s));
        },
        report);
}

std::vector<std::string> ids_of(const std::vector<Owned>& tasks) {
    std::vector<std::string> ids;
    for (const auto& t : tasks) ids.push_back(t.id);
    return ids;
}

std::vector<fs::path> segment_files(const std::string& dir) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".drj") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    return files;
}

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

void write_file(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Commits; under `batch`, waits for the sync that asked for (as the broker
// does, polling wake_fd) and commits again. Returns durable_seq().
Seq commit_and_wait(Journal& j, Clock::time_point now) {
    j.commit(now);
    while (j.syncing()) {
        pollfd p{j.wake_fd(), POLLIN, 0};
        REQUIRE(::poll(&p, 1, 5000) == 1);
        j.commit(now);
    }
    return j.durable_seq();
}

// Accepts `n` tasks numbered from `from`, each in a commit of its own.
std::vector<Owned> accept_each(Journal& j, int from, int n, Clock::time_point& now) {
    std::vector<Owned> out;
    for (int i = from; i < from + n; ++i) {
        Owned t = make_task(i);
        t.key = j.append_accepted(t.task()).value();
        out.push_back(t);
        now += 10ms;
        commit_and_wait(j, now);
    }
    return out;
}

}  // namespace

TEST_CASE("every record kind survives a reopen, field for field", "[journal]") {
    TempDir dir;
    std::vector<Owned> tasks;
    Owned a = make_task(1);
    a.max_attempts = 7;
    a.timeout_ms = 1500;
    a.detached = false;
    a.retry_on_error = true;
    a.args = std::string("\0\xff\x80 binary", 10);
    Owned b = make_task(2, "other_name");
    b.reply_to = "tcp://10.0.0.2:7000?curve=KEY";
    b.producer = "Pzzzzzzzz";
    Owned c = make_task(3);
    Owned d = make_task(4);
    {
        auto j = open_journal(dir.str(), options_with(), nullptr);
        for (Owned* t : {&a, &b, &c, &d}) t->key = j->append_accepted(t->task()).value();
        j->append_attempt(a.key, 2, 1);
        a.attempt = 2;
        a.deaths = 1;
        j->append_outcome(b.key, JournalOutcome{proto::Status::lost, 3, "worker died 3 times"});
        b.has_outcome = true;
        b.status = proto::Status::lost;
        b.outcome_attempt = 3;
        b.error = "worker died 3 times";
        CHECK(j->append_settled(c.key) > 0);
        CHECK(j->append_settled(c.key) == 0);  // settled already: nothing appended
        const Seq last = j->last_seq();
        CHECK(commit_and_wait(*j, Clock::now()) == last);
    }
    JournalRecovery report;
    auto j = open_journal(dir.str(), options_with(), &tasks, &report);
    REQUIRE(tasks.size() == 3);
    CHECK(tasks[0] == a);
    CHECK(tasks[1] == b);
    CHECK(tasks[2] == d);
    CHECK(tasks[0].key == a.key);
    CHECK(report.tasks == 3);
    CHECK(report.items == 7);
    CHECK(report.torn_tails == 0);
}

TEST_CASE("recovered tasks come back in acceptance order, settled ones gone, across sessions", "[journal]") {
    TempDir dir;
    JournalOptions small = options_with(FsyncPolicy::off);
    small.segment_bytes = 4096;
    std::vector<Owned> tasks;
    auto now = Clock::now();
    {
        auto j = open_journal(dir.str(), small, nullptr);
        for (int i = 0; i < 1000; ++i) {
            Owned t = make_task(i);
            t.key = j->append_accepted(t.task()).value();
            tasks.push_back(t);
            if (i % 50 == 49) j->commit(now += 1ms);
        }
        j->commit(now += 1ms);
        CHECK(j->segment_count() > 3);
    }
    std::vector<Owned> recovered;
    {  // a second session settles the even ones, from every segment
        auto j = open_journal(dir.str(), small, &recovered);
        REQUIRE(ids_of(recovered) == ids_of(tasks));
        for (std::size_t i = 0; i < recovered.size(); i += 2) CHECK(j->append_settled(recovered[i].key) > 0);
        j->commit(now += 1ms);
    }
    auto j = open_journal(dir.str(), small, &recovered);
    std::vector<std::string> odd;
    for (std::size_t i = 1; i < tasks.size(); i += 2) odd.push_back(tasks[i].id);
    CHECK(ids_of(recovered) == odd);
}

TEST_CASE("the durable sequence number follows the fsync policy", "[journal]") {
    TempDir dir;
    const auto t0 = Clock::now();
    SECTION("batch: the first commit after a quiet spell syncs; then at most once an interval") {
        JournalOptions o = options_with(FsyncPolicy::batch);
        o.batch_interval = 5ms;
        auto j = open_journal(dir.str(), o, nullptr);
        REQUIRE(j->wake_fd() >= 0);
        const Seq a = j->append_accepted(make_task(1).task()).value();
        CHECK(j->durable_seq() < a);
        j->commit(t0);
        CHECK(j->syncing());                                  // the sync thread has it
        CHECK(j->next_commit() == Clock::time_point::max());  // wake_fd says when it is done
        CHECK(commit_and_wait(*j, t0) == a);
        const Seq b = j->append_accepted(make_task(2).task()).value();
        CHECK(j->commit(t0 + 1ms) < b);  // written, not yet synced: too soon
        CHECK_FALSE(j->syncing());
        CHECK(j->next_commit() == t0 + 5ms);
        CHECK(commit_and_wait(*j, t0 + 5ms) == b);
        CHECK(j->next_commit() == Clock::time_point::max());
        CHECK(j->totals().syncs == 3);  // the new segment's header at open, then two
    }
    SECTION("always: every commit syncs") {
        auto j = open_journal(dir.str(), options_with(FsyncPolicy::always), nullptr);
        CHECK(j->wake_fd() == -1);
        for (int i = 0; i < 3; ++i) {
            const Seq s = j->append_accepted(make_task(i).task()).value();
            CHECK(j->commit(t0) == s);
        }
        CHECK(j->totals().syncs == 4);
    }
    SECTION("off: a commit's records count once written, and none is synced") {
        auto j = open_journal(dir.str(), options_with(FsyncPolicy::off), nullptr);
        const Seq s = j->append_accepted(make_task(1).task()).value();
        CHECK(j->commit(t0) == s);
        CHECK(j->totals().syncs == 0);
    }
}

TEST_CASE("a torn tail at any byte of the last record is cut and every earlier record kept", "[journal]") {
    TempDir dir;
    auto now = Clock::now();
    std::vector<Owned> tasks;
    std::uint64_t last_record_at = 0;
    {  // `off` writes no synced items: the last commit is the one task's record
        auto j = open_journal(dir.str(), options_with(FsyncPolicy::off), nullptr);
        tasks = accept_each(*j, 0, 5, now);
        last_record_at = j->bytes_on_disk();
        auto more = accept_each(*j, 5, 1, now);
        tasks.insert(tasks.end(), more.begin(), more.end());
    }
    const auto files = segment_files(dir.str());
    REQUIRE(files.size() == 1);
    const std::string full = read_file(files[0]);
    REQUIRE(full.size() > last_record_at);
    const std::vector<Owned> earlier(tasks.begin(), tasks.end() - 1);
    for (std::size_t cut = last_record_at; cut < full.size(); ++cut) {
        CAPTURE(cut);
        TempDir copy;
        write_file(copy.path / files[0].filename(), full.substr(0, cut));
        std::vector<Owned> recovered;
        JournalRecovery report;
        { auto j = open_journal(copy.str(), options_with(FsyncPolicy::off), &recovered, &report); }
        CHECK(ids_of(recovered) == ids_of(earlier));
        CHECK(report.torn_tails == (cut > last_record_at ? 1u : 0u));
        CHECK(report.torn_bytes == cut - last_record_at);
        CHECK(fs::file_size(copy.path / files[0].filename()) == last_record_at);
        // Cut once: the journal opens cleanly from then on.
        auto j = open_journal(copy.str(), options_with(FsyncPolicy::off), &recovered, &report);
        CHECK(report.torn_tails == 0);
        CHECK(ids_of(recovered) == ids_of(earlier));
    }
}

TEST_CASE("one flipped byte anywhere in the last record cuts that record alone", "[journal]") {
    TempDir dir;
    auto now = Clock::now();
    std::vector<Owned> tasks;
    std::uint64_t last_record_at = 0;
    {
        auto j = open_journal(dir.str(), options_with(FsyncPolicy::off), nullptr);
        tasks = accept_each(*j, 0, 5, now);
        last_record_at = j->bytes_on_disk();
        accept_each(*j, 5, 1, now);
    }
    const auto file = segment_files(dir.str()).at(0);
    const std::string full = read_file(file);
    for (std::size_t at = last_record_at; at < full.size(); ++at) {
        CAPTURE(at);
        TempDir copy;
        std::string bytes = full;
        bytes[at] = static_cast<char>(bytes[at] ^ 0x20);
        write_file(copy.path / file.filename(), bytes);
        std::vector<Owned> recovered;
        JournalRecovery report;
        auto j = open_journal(copy.str(), options_with(FsyncPolicy::off), &recovered, &report);
        CHECK(ids_of(recovered) == ids_of(tasks));
        CHECK(report.torn_tails == 1);
        CHECK(report.torn_bytes == full.size() - last_record_at);
    }
}

TEST_CASE("a last segment cut inside its header (a crash as it was made) is dropped", "[journal]") {
    TempDir dir;
    auto now = Clock::now();
    std::vector<Owned> tasks;
    {
        auto j = open_journal(dir.str(), options_with(), nullptr);
        tasks = accept_each(*j, 0, 3, now);
    }
    { auto j = open_journal(dir.str(), options_with(), nullptr); }
    const auto files = segment_files(dir.str());
    REQUIRE(files.size() == 2);
    for (std::size_t size : {0, 10, 31}) {
        CAPTURE(size);
        fs::resize_file(files[1], size);
        std::vector<Owned> recovered;
        JournalRecovery report;
        auto j = open_journal(dir.str(), options_with(), &recovered, &report);
        CHECK(ids_of(recovered) == ids_of(tasks));
        CHECK(report.torn_tails == 1);
        CHECK(report.torn_bytes == size);
        CHECK(j->segment_count() == 2);  // the first, and a new active one
    }
}

TEST_CASE("damage in the middle refuses to open, naming file and offset, and repair cuts it", "[journal]") {
    TempDir dir;
    auto now = Clock::now();
    std::vector<Owned> tasks;
    std::uint64_t damaged_at = 0;
    {
        auto j = open_journal(dir.str(), options_with(), nullptr);
        tasks = accept_each(*j, 0, 3, now);
        damaged_at = j->bytes_on_disk();
        auto more = accept_each(*j, 3, 5, now);
        tasks.insert(tasks.end(), more.begin(), more.end());
    }
    const auto file = segment_files(dir.str()).at(0);
    std::string bytes = read_file(file);
    // The checksum of the first record the 4th commit wrote; later commits
    // say the journal synced past it.
    bytes[damaged_at + 4] = static_cast<char>(bytes[damaged_at + 4] ^ 1);
    write_file(file, bytes);
    try {
        open_journal(dir.str(), options_with(), nullptr);
        FAIL("a journal damaged in the middle opened");
    } catch (const std::runtime_error& e) {
        const std::string what = e.what();
        CHECK_THAT(what, Catch::Contains(file.string()));
        CHECK_THAT(what, Catch::Contains("offset " + std::to_string(damaged_at)));
        CHECK_THAT(what, Catch::Contains("checksum"));
        CHECK_THAT(what, Catch::Contains("synced past it"));
        CHECK_THAT(what, Catch::Contains("--journal-repair"));
    }
    CHECK(read_file(file) == bytes);  // refused: nothing touched
    JournalOptions repair = options_with();
    repair.repair = true;
    std::vector<Owned> recovered;
    JournalRecovery report;
    { auto j = open_journal(dir.str(), repair, &recovered, &report); }
    CHECK(ids_of(recovered) == ids_of(std::vector<Owned>(tasks.begin(), tasks.begin() + 3)));
    CHECK(report.repaired == 1);
    CHECK(report.repaired_bytes == bytes.size() - damaged_at);
    auto j = open_journal(dir.str(), options_with(), &recovered, &report);  // repaired for good
    CHECK(recovered.size() == 3);
}

TEST_CASE("damage in what was never synced, good records after it, is a torn tail: a power loss makes such holes",
          "[journal]") {
    TempDir dir, copy;
    JournalOptions o = options_with(FsyncPolicy::batch);
    o.batch_interval = std::chrono::hours(1);  // the first commit syncs, no later one
    auto now = Clock::now();
    std::vector<Owned> tasks;
    std::vector<std::uint64_t> at;  // where each task's commit starts
    {
        auto j = open_journal(dir.str(), o, nullptr);
        for (int i = 0; i < 6; ++i) {
            at.push_back(j->bytes_on_disk());
            auto one = accept_each(*j, i, 1, now);
            tasks.push_back(one[0]);
        }
        CHECK(j->durable_seq() == tasks[0].key);
        // The disk as a power loss may leave it: all written, the 3rd commit torn.
        const auto file = segment_files(dir.str()).at(0);
        std::string bytes = read_file(file);
        bytes[at[2] + 20] = static_cast<char>(bytes[at[2] + 20] ^ 0x10);
        write_file(copy.path / file.filename(), bytes);
        at.push_back(bytes.size());
    }
    std::vector<Owned> recovered;
    JournalRecovery report;
    auto j = open_journal(copy.str(), o, &recovered, &report);
    CHECK(ids_of(recovered) == ids_of(std::vector<Owned>(tasks.begin(), tasks.begin() + 2)));
    CHECK(report.torn_tails == 1);
    CHECK(report.torn_bytes == at.back() - at[2]);
}

TEST_CASE("damage in a segment that is not the last is refused, and repair keeps the later segments", "[journal]") {
    TempDir dir;
    auto now = Clock::now();
    std::vector<Owned> first, second;
    std::uint64_t third_at = 0;
    {
        auto j = open_journal(dir.str(), options_with(), nullptr);
        first = accept_each(*j, 0, 2, now);
        third_at = j->bytes_on_disk();
        auto more = accept_each(*j, 2, 1, now);
        first.push_back(more[0]);
    }
    {  // a second session writes a second segment
        auto j = open_journal(dir.str(), options_with(), nullptr);
        second = accept_each(*j, 3, 3, now);
    }
    const auto files = segment_files(dir.str());
    REQUIRE(files.size() == 2);
    std::string bytes = read_file(files[0]);
    bytes[third_at + 4] = static_cast<char>(bytes[third_at + 4] ^ 0x40);  // the 3rd commit's first checksum
    write_file(files[0], bytes);
    try {
        open_journal(dir.str(), options_with(), nullptr);
        FAIL("a journal damaged in a middle segment opened");
    } catch (const std::runtime_error& e) {
        CHECK_THAT(e.what(), Catch::Contains(files[0].string()) && Catch::Contains("not the last segment") &&
                                 Catch::Contains("--journal-repair"));
    }
    JournalOptions repair = options_with();
    repair.repair = true;
    std::vector<Owned> recovered;
    auto j = open_journal(dir.str(), repair, &recovered);
    CHECK(ids_of(recovered) ==
          std::vector<std::string>{first[0].id, first[1].id, second[0].id, second[1].id, second[2].id});
}

TEST_CASE("a segment of a newer format version is refused, never read", "[journal]") {
    TempDir dir;
    auto now = Clock::now();
    {
        auto j = open_journal(dir.str(), options_with(), nullptr);
        accept_each(*j, 0, 2, now);
    }
    const auto file = segment_files(dir.str()).at(0);
    std::string bytes = read_file(file);
    bytes[8] = 2;  // u32 version, little-endian
    write_file(file, bytes);
    for (bool repair : {false, true}) {
        JournalOptions o = options_with();
        o.repair = repair;
        CHECK_THROWS_WITH(open_journal(dir.str(), o, nullptr),
                          Catch::Contains("format version 2") && Catch::Contains(file.string()));
    }
    CHECK(read_file(file) == bytes);
}

TEST_CASE("a journal in use by another process is refused", "[journal]") {
    TempDir dir;
    auto j = open_journal(dir.str(), options_with(), nullptr);
    CHECK_THROWS_WITH(open_journal(dir.str(), options_with(), nullptr), Catch::Contains("in use"));
}

TEST_CASE("segments roll, and a closed segment whose tasks are all settled is deleted", "[journal]") {
    TempDir dir;
    JournalOptions o = options_with(FsyncPolicy::off);
    o.segment_bytes = 4096;
    auto j = open_journal(dir.str(), o, nullptr);
    auto now = Clock::now();
    std::vector<Seq> keys;
    for (int i = 0; i < 1000; ++i) {
        keys.push_back(j->append_accepted(make_task(i).task()).value());
        if (i % 20 == 19) j->commit(now += 1ms);
    }
    j->commit(now += 1ms);
    const std::size_t rolled = j->segment_count();
    CHECK(rolled > 5);
    CHECK(segment_files(dir.str()).size() == rolled);
    // Settling all but the first task keeps every segment: they go oldest first.
    for (std::size_t i = 1; i < keys.size(); ++i) j->append_settled(keys[i]);
    j->commit(now += 1ms);
    CHECK(j->segment_count() == rolled);
    j->append_settled(keys[0]);
    j->commit(now += 1ms);
    CHECK(j->segment_count() == 1);
    CHECK(segment_files(dir.str()).size() == 1);
    CHECK(j->live_tasks() == 0);
    CHECK(j->bytes_on_disk() == fs::file_size(segment_files(dir.str()).at(0)));
}

TEST_CASE("rolls while batch syncs are in flight lose nothing and delete what is settled", "[journal]") {
    TempDir dir;
    JournalOptions o = options_with(FsyncPolicy::batch);
    o.segment_bytes = 16 << 10;
    auto now = Clock::now();
    std::map<Seq, Owned> live;
    {
        auto j = open_journal(dir.str(), o, nullptr);
        std::vector<Seq> keys;
        for (int i = 0; i < 20'000; ++i) {
            Owned t = make_task(i);
            t.key = j->append_accepted(t.task()).value();
            if (i % 97 == 0) {
                live.emplace(t.key, t);
            } else {
                keys.push_back(t.key);
            }
            if (i % 50 != 49) continue;
            j->commit(now += 1ms);  // no waiting: syncs end while the loop goes on
            for (Seq k : keys) CHECK(j->append_settled(k) > 0);
            keys.clear();
            if (const Seq below = j->take_relocation()) {
                std::map<Seq, Owned> moved;
                for (auto& [key, task] : live) {
                    if (key < below) task.key = j->relocate(key, task.state());
                    moved.emplace(task.key, task);
                }
                live = std::move(moved);
            }
        }
        commit_and_wait(*j, now += 1ms);
        CHECK(j->totals().rolled > 20);
        CHECK(j->totals().deleted > 0);
        CHECK(j->live_tasks() == live.size());
    }
    std::vector<Owned> recovered;
    auto j = open_journal(dir.str(), o, &recovered);
    std::vector<std::string> want;
    for (const auto& [key, t] : live) want.push_back(t.id);
    CHECK(ids_of(recovered) == want);
}

TEST_CASE("compaction keeps the journal under 512 KiB over 200,000 steady accept and settle cycles", "[journal]") {
    TempDir dir;
    JournalOptions o = options_with(FsyncPolicy::off);
    o.segment_bytes = 64 << 10;
    auto j = open_journal(dir.str(), o, nullptr);
    auto now = Clock::now();
    // Most tasks are settled 100 later; one in 500 stays for 50,000 cycles
    // (pinning old segments) and dies once on the way.
    std::map<Seq, Owned> live;  // by key
    std::map<int, Seq> key_of;  // task number -> key
    std::uint64_t max_bytes = 0, relocated = 0;
    const auto settle = [&](int n) {
        const auto it = key_of.find(n);
        if (it == key_of.end()) return;
        CHECK(j->append_settled(it->second) > 0);
        live.erase(it->second);
        key_of.erase(it);
    };
    for (int i = 0; i < 200'000; ++i) {
        Owned t = make_task(i);
        t.key = j->append_accepted(t.task()).value();
        key_of[i] = t.key;
        live.emplace(t.key, std::move(t));
        if (i >= 100 && (i - 100) % 500 != 0) settle(i - 100);
        if (i >= 50'000 && (i - 50'000) % 500 == 0) settle(i - 50'000);
        if (i >= 25'000 && (i - 25'000) % 500 == 0) {  // a pinned task, half way, dies once
            Owned& p = live.at(key_of.at(i - 25'000));
            p.attempt = 1;
            p.deaths = 1;
            CHECK(j->append_attempt(p.key, 1, 1) > 0);
        }
        if (i % 64 != 63) continue;
        j->commit(now += 1ms);
        if (const Seq below = j->take_relocation()) {
            while (!live.empty() && live.begin()->first < below) {
                Owned moving = std::move(live.begin()->second);
                live.erase(live.begin());
                moving.key = j->relocate(moving.key, moving.state());
                ++relocated;
                key_of[std::stoi(moving.id.substr(5))] = moving.key;
                live.emplace(moving.key, std::move(moving));
            }
        }
        if (i > 20'000) max_bytes = std::max(max_bytes, j->bytes_on_disk());
    }
    j->commit(now += 1ms);
    INFO("max bytes on disk " << max_bytes << ", written " << j->totals().bytes_written << ", relocated " << relocated
                              << ", segments deleted " << j->totals().deleted);
    CHECK(max_bytes < 512u << 10);
    CHECK(j->totals().bytes_written > 10u << 20);
    CHECK(relocated > 0);
    CHECK(j->live_tasks() == live.size());
    j.reset();
    std::vector<Owned> recovered;
    j = open_journal(dir.str(), o, &recovered);
    std::map<std::string, Owned> want;
    for (const auto& [key, t] : live) want.emplace(t.id, t);
    REQUIRE(recovered.size() == live.size());
    std::size_t same = 0, died = 0;
    for (const auto& t : recovered) {
        same += want.count(t.id) && want.at(t.id) == t;
        died += t.deaths == 1;
    }
    CHECK(same == live.size());
    CHECK(died > 0);
}

TEST_CASE("a crash between a compaction's rewrite and the old segment's deletion recovers each task once",
          "[journal]") {
    TempDir dir;
    JournalOptions o = options_with(FsyncPolicy::off);
    o.segment_bytes = 2048;
    auto now = Clock::now();
    std::map<Seq, Owned> live;
    {
        auto j = open_journal(dir.str(), o, nullptr);
        for (int i = 0; i < 200; ++i) {
            Owned t = make_task(i);
            t.key = j->append_accepted(t.task()).value();
            if (i % 40 == 0) {
                t.attempt = 2;
                j->append_attempt(t.key, 2, 0);
                if (i % 80 == 0) {
                    t.has_outcome = true;
                    t.status = proto::Status::timeout;
                    t.outcome_attempt = 2;
                    t.error = "timed out after 10 ms";
                    j->append_outcome(t.key, JournalOutcome{t.status, 2, t.error});
                }
                live.emplace(t.key, t);
            } else {
                j->append_settled(t.key);
            }
            if (i % 10 == 9) j->commit(now += 1ms);
        }
        j->commit(now += 1ms);
        const Seq below = j->take_relocation();
        REQUIRE(below > 0);
        // The old segments, as a crash would leave them once the rewrites are durable.
        TempDir saved;
        const auto before = segment_files(dir.str());
        for (const auto& f : before) fs::copy_file(f, saved.path / f.filename());
        std::map<Seq, Owned> moved;
        for (auto& [key, t] : live) {
            if (key >= below) {
                moved.emplace(key, t);
                continue;
            }
            t.key = j->relocate(key, t.state());
            moved.emplace(t.key, t);
        }
        live = std::move(moved);
        j->commit(now += 1ms);
        CHECK(segment_files(dir.str()).size() < before.size());
        j.reset();
        for (const auto& f : fs::directory_iterator(saved.path))
            if (!fs::exists(dir.path / f.path().filename())) fs::copy_file(f.path(), dir.path / f.path().filename());
    }
    std::vector<Owned> recovered;
    auto j = open_journal(dir.str(), o, &recovered);
    REQUIRE(recovered.size() == live.size());
    std::vector<std::string> want;
    for (const auto& [key, t] : live) want.push_back(t.id);
    CHECK(ids_of(recovered) == want);  // acceptance order, each once
    for (const auto& t : recovered) CHECK(t == live.at(t.key));
}

namespace {

// The fault hook of a disk that fills: while `failing`, writes let `allowed`
// bytes through and fail with `err`; syncs fail with `sync_err`. (Atomics:
// the batch sync thread calls it too.)
struct FullDisk {
    std::atomic<bool> failing{false};
    std::atomic<int> err{ENOSPC};
    std::atomic<std::size_t> allowed{0};
    std::atomic<int> sync_err{0};
    std::function<int(JournalIo, std::size_t&)> hook() {
        return [this](JournalIo io, std::size_t& bytes) {
            if (!failing) return 0;
            if (io == JournalIo::sync) return sync_err.load();
            if (err) bytes = std::min(bytes, allowed.load());
            return err.load();
        };
    }
};

}  // namespace

TEST_CASE("a full disk makes the journal unavailable, and nothing durable is lost or doubled when space returns",
          "[journal]") {
    TempDir dir;
    FullDisk disk;
    JournalOptions o = options_with(FsyncPolicy::batch);
    o.fault = disk.hook();
    o.retry_interval = 100ms;
    auto now = Clock::now();
    std::vector<Owned> kept;
    {
        auto j = open_journal(dir.str(), o, nullptr);
        std::vector<Owned> a;
        for (int i = 0; i < 100; ++i) {
            a.push_back(make_task(i));
            a.back().key = j->append_accepted(a.back().task()).value();
        }
        const Seq a_durable = commit_and_wait(*j, now += 10ms);
        CHECK(a_durable == j->last_seq());

        SECTION("a write that fails half way") { disk.allowed = 700; }
        SECTION("a write that fails at once") { disk.allowed = 0; }
        SECTION("a sync that fails after the write went through") {
            disk.err = 0;
            disk.sync_err = EIO;
        }
        disk.failing = true;
        std::vector<Owned> b;
        for (int i = 100; i < 150; ++i) {
            b.push_back(make_task(i));
            b.back().key = j->append_accepted(b.back().task()).value();
        }
        for (int i = 0; i < 10; ++i) j->append_settled(a[i].key);
        CHECK(commit_and_wait(*j, now += 10ms) == a_durable);
        CHECK_FALSE(j->available());
        CHECK_THAT(j->last_error(), Catch::Contains(disk.sync_err ? "Input/output error" : "No space left"));
        CHECK_FALSE(j->append_accepted(make_task(999).task()).has_value());  // SUBMIT is rejected
        for (int i = 10; i < 20; ++i) j->append_settled(a[i].key);           // settling goes on
        CHECK(j->next_commit() == now + 100ms);
        CHECK(j->commit(now += 10ms) == a_durable);   // before the retry interval: not tried
        CHECK(j->commit(now += 100ms) == a_durable);  // tried: still full
        CHECK_FALSE(j->available());

        disk.failing = false;  // space returns
        CHECK(commit_and_wait(*j, now += 100ms) == j->last_seq());
        CHECK(j->available());
        CHECK(j->totals().recoveries == 1);
        const Owned c = make_task(150);
        CHECK(j->append_accepted(c.task()).has_value());
        CHECK(commit_and_wait(*j, now += 10ms) == j->last_seq());
        kept.assign(a.begin() + 20, a.end());
        kept.insert(kept.end(), b.begin(), b.end());
        kept.push_back(c);
    }
    std::vector<Owned> recovered;
    JournalRecovery report;
    auto j = open_journal(dir.str(), options_with(), &recovered, &report);
    CHECK(report.torn_tails == 0);
    CHECK(ids_of(recovered) == ids_of(kept));
}

TEST_CASE("a full disk at a segment roll recovers too", "[journal]") {
    TempDir dir;
    FullDisk disk;
    JournalOptions o = options_with(FsyncPolicy::always);
    o.fault = disk.hook();
    o.segment_bytes = 2048;
    o.retry_interval = 1ms;
    auto now = Clock::now();
    std::vector<std::string> accepted;
    {
        auto j = open_journal(dir.str(), o, nullptr);
        for (int i = 0; i < 200; ++i) {
            disk.failing = i % 7 == 3;
            disk.allowed = static_cast<std::size_t>(i % 50);
            const Owned t = make_task(i);
            if (j->append_accepted(t.task())) accepted.push_back(t.id);
            j->commit(now += 2ms);
        }
        disk.failing = false;
        j->commit(now += 2ms);
        CHECK(j->available());
        CHECK(j->totals().rolled > 3);
        CHECK(j->totals().failures > 10);
    }
    std::vector<Owned> recovered;
    auto j = open_journal(dir.str(), options_with(), &recovered);
    CHECK(ids_of(recovered) == accepted);
}

TEST_CASE("journal throughput and bytes per task, by fsync policy", "[.bench][journal]") {
    constexpr int k_tasks = 1'000'000;
    constexpr int k_batch = 256;  // tasks a commit: one poll-loop turn of SUBMITs
    std::vector<Owned> tasks;
    for (int i = 0; i < k_batch; ++i) tasks.push_back(make_task(i));
    for (FsyncPolicy p : {FsyncPolicy::off, FsyncPolicy::batch, FsyncPolicy::always}) {
        TempDir dir;
        auto j = open_journal(dir.str(), options_with(p), nullptr);
        std::vector<Seq> keys(k_batch);
        std::string id;
        const auto t0 = Clock::now();
        std::uint64_t queued_bytes = 0;
        for (int n = 0; n < k_tasks; n += k_batch) {
            for (int i = 0; i < k_batch; ++i) {
                JournalTask t = tasks[static_cast<std::size_t>(i)].task();
                id = "task-" + std::to_string(n + i);
                t.id = id;
                keys[static_cast<std::size_t>(i)] = j->append_accepted(t).value();
            }
            j->commit(Clock::now());
            if (n == 0) queued_bytes = j->bytes_on_disk();
            for (Seq k : keys) j->append_settled(k);
        }
        j->flush(Clock::now());
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        std::printf(
            "journal %-6s: %.2f M tasks/s accepted and settled (%.2f M appends/s), %.1f bytes/task written, "
            "%.1f bytes/task queued, %llu syncs\n",
            drover::fsync_policy_name(p), k_tasks / s / 1e6, 2 * k_tasks / s / 1e6,
            static_cast<double>(j->totals().bytes_written) / k_tasks, static_cast<double>(queued_bytes - 32) / k_batch,
            static_cast<unsigned long long>(j->totals().syncs));
    }
    TempDir dir;
    {
        JournalOptions o = options_with(FsyncPolicy::off);
        auto j = open_journal(dir.str(), o, nullptr);
        std::string id;
        for (int n = 0; n < k_tasks; ++n) {
            JournalTask t = tasks[static_cast<std::size_t>(n % k_batch)].task();
            id = "task-" + std::to_string(n);
            t.id = id;
            (void)j->append_accepted(t);
            if (n % k_batch == 0) j->commit(Clock::now());
        }
        j->commit(Clock::now());
        std::printf("journal: %d queued tasks take %.1f MB, %.1f bytes/task\n", k_tasks,
                    static_cast<double>(j->bytes_on_disk()) / 1e6, static_cast<double>(j->bytes_on_disk()) / k_tasks);
    }
    std::size_t n = 0;
    JournalRecovery report;
    auto j = Journal::open(
        dir.str(), options_with(), [&](Seq, const JournalState&) { ++n; }, &report);
    std::printf("journal: recovery of %zu tasks took %.0f ms\n", n,
                std::chrono::duration<double, std::milli>(report.took).count());
    CHECK(n == static_cast<std::size_t>(k_tasks));
}
