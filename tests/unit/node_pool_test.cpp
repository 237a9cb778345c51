// Unit tests of NodePool and PoolAllocator (the Client's map of unfinished tasks).
#include <string>
#include <unordered_map>

#include <catch2/catch.hpp>

#include "drover/node_pool.hpp"

using drover::NodePool;
using drover::PoolAllocator;

namespace {

using Map = std::unordered_map<std::string, std::string, std::hash<std::string>, std::equal_to<std::string>,
                               PoolAllocator<std::pair<const std::string, std::string>>>;

Map make_map(NodePool& pool) {
    return Map(0, std::hash<std::string>{}, std::equal_to<std::string>{},
               PoolAllocator<std::pair<const std::string, std::string>>(pool));
}

}  // namespace

TEST_CASE("A map's erased nodes are recycled by its next insertions", "[node_pool]") {
    NodePool pool;
    auto m = make_map(pool);
    for (int i = 0; i < 1000; ++i) m.emplace("id-" + std::to_string(i), "value " + std::to_string(i));
    CHECK(pool.kept() == 0);
    for (int i = 0; i < 1000; i += 2) m.erase("id-" + std::to_string(i));
    CHECK(pool.kept() == 500);
    for (int i = 0; i < 300; ++i) m.emplace("again-" + std::to_string(i), std::string(100, 'x'));
    CHECK(pool.kept() == 200);  // 300 of the 500 free nodes taken back
    CHECK(m.size() == 800);
    CHECK(m.at("id-1") == "value 1");
    CHECK(m.at("again-299") == std::string(100, 'x'));
    CHECK(m.count("id-0") == 0);

    m.clear();
    CHECK(pool.kept() == 1000);
    pool.release();
    CHECK(pool.kept() == 0);
    m.emplace("after", "release");  // allocates afresh
    CHECK(m.at("after") == "release");
}

TEST_CASE("A pooled map survives rehashing, moves and its pool's release while in use", "[node_pool]") {
    NodePool pool;
    auto m = make_map(pool);
    for (int round = 0; round < 5; ++round) {
        for (int i = 0; i < 5000; ++i) m.emplace(std::to_string(round) + ":" + std::to_string(i), "v");
        for (int i = 0; i < 5000; i += 3) m.erase(std::to_string(round) + ":" + std::to_string(i));
        pool.release();  // only free nodes go: the map's own stay
    }
    CHECK(m.size() == 5 * (5000 - 1667));
    auto moved = std::move(m);
    CHECK(moved.at("4:1") == "v");
    moved.clear();
    CHECK(pool.kept() == 5 * (5000 - 1667));
}
