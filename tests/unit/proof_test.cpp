// Unit tests of sink addresses: the sink's key carried beside a reply_to.
#include <random>
#include <string>

#include <catch2/catch.hpp>

#include "internal/proof.hpp"

namespace {

const std::string k_z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

}  // namespace

TEST_CASE("a sink address gives back its reply_to and key, whatever its CURVE key holds", "[proof][sink]") {
    const std::string key(drover::k_secret_bytes, '\x5a');
    // Z85 keys hold '&', '?' and '=': a key ending in '&', or holding "&&",
    // was cut where the parameters were split on '&'.
    for (const std::string curve : {std::string(39, 'a') + "&", "a&&b" + std::string(36, 'c'),
                                    "?=&" + std::string(37, 'd'), std::string(40, '&')}) {
        const std::string reply_to = "tcp://10.0.0.5:7000?curve=" + curve;
        const auto a = drover::split_sink_address(drover::sink_address(reply_to, key));
        CHECK(a.reply_to == reply_to);
        CHECK(a.key == key);
        CHECK_FALSE(a.malformed_key);
    }
    std::mt19937 random(18);
    for (int i = 0; i < 2000; ++i) {
        std::string curve;
        for (int c = 0; c < 40; ++c) curve += k_z85[random() % k_z85.size()];
        const std::string reply_to = "tcp://h:1?curve=" + curve;
        const auto a = drover::split_sink_address(drover::sink_address(reply_to, key));
        REQUIRE(a.reply_to == reply_to);
        REQUIRE(a.key == key);
    }
}

TEST_CASE("a sink address without CURVE, with the key first, or with a malformed key", "[proof][sink]") {
    const std::string key(drover::k_secret_bytes, '\x01');
    const auto plain = drover::split_sink_address(drover::sink_address("tcp://h:1", key));
    CHECK(plain.reply_to == "tcp://h:1");
    CHECK(plain.key == key);

    const auto first = drover::split_sink_address("tcp://h:1?secret=" + drover::to_hex_text(key) + "&curve=K&");
    CHECK(first.reply_to == "tcp://h:1?curve=K&");
    CHECK(first.key == key);

    const auto none = drover::split_sink_address("tcp://h:1");
    CHECK(none.reply_to == "tcp://h:1");
    CHECK(none.key.empty());
    CHECK_FALSE(none.malformed_key);

    const auto bad = drover::split_sink_address("tcp://h:1?curve=K&secret=00ff");
    CHECK(bad.reply_to == "tcp://h:1?curve=K");
    CHECK(bad.key.empty());
    CHECK(bad.malformed_key);
}
