// Unit tests of PendingTasks (the Client's unfinished tasks by id).
#include <string>

#include <catch2/catch.hpp>

#include "pending_tasks.hpp"

using drover::PendingTasks;

TEST_CASE("A task with the client's own id is found by that id, which carries its number", "[pending_tasks]") {
    PendingTasks t("Session8");
    std::uint64_t seq = 0;
    auto& p = t.add("", /*elsewhere=*/false, seq);
    CHECK(p.task.id == "Session8." + std::string(1, drover::detail::k_digits[seq]));
    CHECK(t.own_seq(p.task.id) == seq);
    const auto f = t.find(p.task.id);
    CHECK(f.pending == &p);
    CHECK(f.seq == seq);
    CHECK(t.find("Session8.zz").pending == nullptr);
    CHECK(t.find("Other123." + p.task.id.substr(9)).pending == nullptr);
    t.erase(f);
    CHECK(t.empty());
    CHECK(t.find(p.task.id).pending == nullptr);
}

TEST_CASE("Own ids round-trip through their numbers, and other forms give no number", "[pending_tasks]") {
    PendingTasks t("abcdefgh");
    for (const std::uint64_t n : {1ull, 63ull, 64ull, 4095ull, 1ull << 40, ~0ull}) CHECK(t.own_seq(t.own_id(n)) == n);
    CHECK(t.own_seq("abcdefgh") == 0);
    CHECK(t.own_seq("abcdefgh.") == 0);
    CHECK(t.own_seq("abcdefgh.1!") == 0);            // not a digit
    CHECK(t.own_seq("abcdefgh-1") == 0);             // no dot
    CHECK(t.own_seq("abcdefgh.ZZZZZZZZZZZZ") == 0);  // past 11 digits
    CHECK(t.own_seq("abcdefgh.~~~~~~~~~~~") == 0);   // past 64 bits
    CHECK(t.own_seq("abcdefgx.1") == 0);             // another session
}

TEST_CASE("A caller's id is found through its index, and one of our form is never given again", "[pending_tasks]") {
    PendingTasks t("abcdefgh");
    std::uint64_t named_seq = 0, own_seq = 0;
    auto& named = t.add("order-7", /*elsewhere=*/true, named_seq);
    CHECK(named.named);
    CHECK(t.any_named());
    CHECK(t.elsewhere() == 1);
    CHECK(t.find("order-7").pending == &named);
    // A caller's id that looks like one of ours: its number is skipped.
    std::uint64_t taken = 0;
    t.add(t.own_id(100), /*elsewhere=*/false, taken);
    t.add("", /*elsewhere=*/false, own_seq);
    CHECK(own_seq > 100);
    CHECK(t.size() == 3);
    t.erase(t.find("order-7"));
    CHECK(t.elsewhere() == 0);
    CHECK(t.find("order-7").pending == nullptr);
    CHECK(t.size() == 2);
    t.clear();
    CHECK(t.empty());
    CHECK_FALSE(t.any_named());
}
