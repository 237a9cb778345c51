// Unit tests of SeqTable (the Client's unfinished tasks by number).
#include <algorithm>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "seq_table.hpp"

using drover::SeqTable;

TEST_CASE("Entries get rising numbers and are found and erased by them", "[seq_table]") {
    SeqTable<std::string> t;
    std::vector<std::uint64_t> seqs;
    for (int i = 0; i < 3000; ++i) {
        std::uint64_t seq = 0;
        t.insert(seq) = "task " + std::to_string(i);
        if (!seqs.empty()) CHECK(seq > seqs.back());
        seqs.push_back(seq);
    }
    CHECK(t.size() == 3000);
    CHECK(t.capacity() >= 4000);  // grew, at most three quarters used
    for (int i = 0; i < 3000; ++i) {
        REQUIRE(t.find(seqs[i]) != nullptr);
        CHECK(*t.find(seqs[i]) == "task " + std::to_string(i));
    }
    CHECK(t.find(seqs.back() + 1) == nullptr);
    CHECK(t.erase(seqs[7]));
    CHECK_FALSE(t.erase(seqs[7]));
    CHECK(t.find(seqs[7]) == nullptr);
    CHECK(t.size() == 2999);
}

TEST_CASE("A number whose slot a straggler holds is skipped, never given twice", "[seq_table]") {
    SeqTable<int> t;
    std::uint64_t straggler = 0;
    t.insert(straggler) = -1;
    // A stream far longer than the capacity, one unfinished at a time: the
    // straggler's slot comes round again and again.
    std::vector<std::uint64_t> given{straggler};
    for (int i = 0; i < 10000; ++i) {
        std::uint64_t seq = 0;
        t.insert(seq) = i;
        given.push_back(seq);
        REQUIRE(t.find(seq) != nullptr);
        CHECK(*t.find(seq) == i);
        CHECK(t.erase(seq));
    }
    CHECK(t.capacity() <= 1024);  // two entries at most: no growth
    REQUIRE(t.find(straggler) != nullptr);
    CHECK(*t.find(straggler) == -1);
    std::sort(given.begin(), given.end());
    CHECK(std::adjacent_find(given.begin(), given.end()) == given.end());
    CHECK(t.last() > 10000);  // numbers were skipped
}

TEST_CASE("Growth keeps every entry, and an empty table shrinks back when told", "[seq_table]") {
    SeqTable<std::string> t;
    std::vector<std::uint64_t> old;
    for (int i = 0; i < 100; ++i) {
        std::uint64_t seq = 0;
        t.insert(seq) = "old " + std::to_string(i);
        old.push_back(seq);
    }
    // Many newer entries around the old ones, in and out, then a crowd: the table doubles several times.
    std::vector<std::uint64_t> crowd;
    for (int i = 0; i < 20000; ++i) {
        std::uint64_t seq = 0;
        t.insert(seq) = std::to_string(i);
        crowd.push_back(seq);
    }
    CHECK(t.capacity() >= 32768);
    for (int i = 0; i < 100; ++i) {
        REQUIRE(t.find(old[i]) != nullptr);
        CHECK(*t.find(old[i]) == "old " + std::to_string(i));
    }
    for (int i = 0; i < 20000; ++i) {
        REQUIRE(t.find(crowd[i]) != nullptr);
        CHECK(*t.find(crowd[i]) == std::to_string(i));
    }
    int seen = 0;
    t.for_each([&](std::uint64_t seq, std::string& v) {
        CHECK(t.find(seq) == &v);
        ++seen;
    });
    CHECK(seen == 20100);
    for (auto s : old) t.erase(s);
    for (auto s : crowd) t.erase(s);
    CHECK(t.empty());
    CHECK(t.capacity() >= 32768);  // kept for the next burst
    t.shrink();
    CHECK(t.capacity() == SeqTable<std::string>::k_kept_capacity);
}

TEST_CASE("Numbers skipped to are never given", "[seq_table]") {
    SeqTable<int> t;
    std::uint64_t a = 0, b = 0, c = 0;
    t.insert(a);
    t.skip_to(a + 2);
    t.skip_to(a);  // never back
    t.insert(b);
    CHECK(b == a + 3);
    t.insert(c);
    CHECK(c == b + 1);
}

TEST_CASE("A run of stragglers does not make the table grow with the numbers given", "[seq_table]") {
    SeqTable<int> t;
    std::vector<std::uint64_t> stuck;
    for (int i = 0; i < 16; ++i) {  // in consecutive slots
        std::uint64_t seq = 0;
        t.insert(seq) = -i;
        stuck.push_back(seq);
    }
    // A million short tasks, at most 100 unfinished: thousands of laps past the run.
    std::vector<std::uint64_t> window;
    for (int i = 0; i < 1000000; ++i) {
        std::uint64_t seq = 0;
        t.insert(seq) = i;
        window.push_back(seq);
        if (window.size() == 100) {
            for (auto s : window) REQUIRE(t.erase(s));
            window.clear();
        }
    }
    CHECK(t.capacity() <= 256);
    for (int i = 0; i < 16; ++i) CHECK(*t.find(stuck[i]) == -i);
}
