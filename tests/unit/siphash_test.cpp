// Unit tests of the inline SipHash (internal/siphash.hpp) against libsodium's.
#include <cstdint>
#include <random>
#include <vector>

#include <sodium.h>
#include <catch2/catch.hpp>

#include "internal/siphash.hpp"

TEST_CASE("the inline SipHash-2-4 gives libsodium's bytes, 64 and 128 bits, for every length up to 80", "[siphash]") {
    REQUIRE(sodium_init() >= 0);
    std::mt19937_64 random(20261207);
    for (int round = 0; round < 20; ++round) {
        unsigned char key[16];
        for (auto& b : key) b = static_cast<unsigned char>(random());
        std::vector<unsigned char> data(80);
        for (auto& b : data) b = static_cast<unsigned char>(random());
        for (std::size_t len = 0; len <= data.size(); ++len) {
            unsigned char want64[crypto_shorthash_BYTES];
            crypto_shorthash(want64, data.data(), len, key);
            std::uint64_t want = 0;
            for (int i = 7; i >= 0; --i) want = want << 8 | want64[i];
            CHECK(drover::siphash::hash64(key, data.data(), len) == want);

            unsigned char want128[crypto_shorthash_siphashx24_BYTES], got128[16];
            crypto_shorthash_siphashx24(want128, data.data(), len, key);
            drover::siphash::hash128(key, data.data(), len, got128);
            CHECK(std::vector<unsigned char>(got128, got128 + 16) == std::vector<unsigned char>(want128, want128 + 16));
        }
    }
}

TEST_CASE("the one-block SipHash of a short message is the SipHash of its bytes", "[siphash]") {
    std::mt19937_64 random(7);
    for (int round = 0; round < 200; ++round) {
        unsigned char key[16], bytes[7];
        for (auto& b : key) b = static_cast<unsigned char>(random());
        for (auto& b : bytes) b = static_cast<unsigned char>(random());
        for (std::size_t len = 0; len < sizeof bytes; ++len) {
            std::uint64_t message = 0;
            for (std::size_t i = 0; i < len; ++i) message |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);
            CHECK(drover::siphash::hash64_short(key, message, len) == drover::siphash::hash64(key, bytes, len));
        }
    }
}
