// SlotIndex against std::unordered_map under random inserts and erases.
#include <cstdint>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include <catch2/catch.hpp>

#include "slot_index.hpp"

namespace {

struct KeyOf {
    const std::vector<std::string>* keys;
    std::string_view operator()(std::uint32_t slot) const { return (*keys)[slot]; }
};

}  // namespace

TEST_CASE("SlotIndex finds what was inserted and nothing erased, through growth and long probe runs", "[slot_index]") {
    std::vector<std::string> keys;
    drover::SlotIndex<KeyOf> index{KeyOf{&keys}};
    std::unordered_map<std::string, std::uint32_t> expect;
    std::mt19937 rng(7);
    // Few distinct keys over many operations: the same keys come and go, so
    // erases shift members of long probe runs back.
    for (int step = 0; step < 200000; ++step) {
        const auto key = "k" + std::to_string(rng() % 3000);
        auto it = expect.find(key);
        if (it == expect.end()) {
            keys.push_back(key);
            const auto slot = static_cast<std::uint32_t>(keys.size() - 1);
            index.insert(slot);
            expect.emplace(key, slot);
        } else if (rng() % 2) {
            index.erase(key);
            expect.erase(it);
        }
        if (step % 997 == 0) {
            REQUIRE(index.size() == expect.size());
            for (const auto& [k, slot] : expect) REQUIRE(index.find(k) == slot);
            REQUIRE(index.find("absent") == index.npos);
        }
    }
    for (const auto& [k, slot] : expect) CHECK(index.find(k) == slot);
    index.erase("absent");  // erasing a missing key changes nothing
    CHECK(index.size() == expect.size());
    index.clear();
    CHECK(index.size() == 0);
    CHECK(index.find(expect.begin()->first) == index.npos);
}
