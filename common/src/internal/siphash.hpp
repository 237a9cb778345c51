// SipHash-2-4, as libsodium's crypto_shorthash (64-bit) and
// crypto_shorthash_siphashx24 (128-bit) compute it, inline.
#pragma once

// Every task costs the broker one token and a producer a secret and a check
// (proof.cpp): libsodium's out-of-line, any-length SipHash took 210
// instructions for a 5-byte token (callgrind of drover-broker under W1);
// inline, with the key loaded once, it takes about half. The outputs are
// libsodium's, byte for byte (tests/unit/siphash_test.cpp compares them), so
// the Python package, which calls libsodium, agrees.

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace drover::siphash {

namespace detail {

inline std::uint64_t rotl(std::uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

inline std::uint64_t load_le(const unsigned char* p) {
    std::uint64_t v;
    std::memcpy(&v, p, sizeof v);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

struct State {
    std::uint64_t v0, v1, v2, v3;

    State(const unsigned char key[16], bool wide) {
        const std::uint64_t k0 = load_le(key), k1 = load_le(key + 8);
        v0 = k0 ^ 0x736f6d6570736575ULL;
        v1 = k1 ^ 0x646f72616e646f6dULL ^ (wide ? 0xee : 0);
        v2 = k0 ^ 0x6c7967656e657261ULL;
        v3 = k1 ^ 0x7465646279746573ULL;
    }
    void round() {
        v0 += v1;
        v1 = rotl(v1, 13);
        v1 ^= v0;
        v0 = rotl(v0, 32);
        v2 += v3;
        v3 = rotl(v3, 16);
        v3 ^= v2;
        v0 += v3;
        v3 = rotl(v3, 21);
        v3 ^= v0;
        v2 += v1;
        v1 = rotl(v1, 17);
        v1 ^= v2;
        v2 = rotl(v2, 32);
    }
    void block(std::uint64_t m) {
        v3 ^= m;
        round();
        round();
        v0 ^= m;
    }
    // Every block of `data`, then the last one with the length.
    void absorb(const unsigned char* data, std::size_t len) {
        const std::size_t whole = len & ~std::size_t{7};
        for (std::size_t i = 0; i < whole; i += 8) block(load_le(data + i));
        const unsigned char* tail = data + whole;
        std::uint64_t last = static_cast<std::uint64_t>(len) << 56;
        switch (len & 7) {  // the reference's byte order, without a loop
            case 7: last |= static_cast<std::uint64_t>(tail[6]) << 48; [[fallthrough]];
            case 6: last |= static_cast<std::uint64_t>(tail[5]) << 40; [[fallthrough]];
            case 5: last |= static_cast<std::uint64_t>(tail[4]) << 32; [[fallthrough]];
            case 4: last |= static_cast<std::uint64_t>(tail[3]) << 24; [[fallthrough]];
            case 3: last |= static_cast<std::uint64_t>(tail[2]) << 16; [[fallthrough]];
            case 2: last |= static_cast<std::uint64_t>(tail[1]) << 8; [[fallthrough]];
            case 1: last |= tail[0]; break;
            default: break;
        }
        block(last);
    }
    std::uint64_t finish(std::uint64_t mark) {
        v2 ^= mark;
        round();
        round();
        round();
        round();
        return v0 ^ v1 ^ v2 ^ v3;
    }
};

}  // namespace detail

// libsodium's crypto_shorthash(out, data, len, key), read as a little-endian number.
inline std::uint64_t hash64(const unsigned char key[16], const void* data, std::size_t len) {
    detail::State s(key, false);
    s.absorb(static_cast<const unsigned char*>(data), len);
    return s.finish(0xff);
}

// hash64 of a message shorter than 8 bytes, given as the number its bytes
// make read little-endian (`len` of them): one block, no loop.
inline std::uint64_t hash64_short(const unsigned char key[16], std::uint64_t message, std::size_t len) {
    detail::State s(key, false);
    s.block(static_cast<std::uint64_t>(len) << 56 | message);
    return s.finish(0xff);
}

// libsodium's crypto_shorthash_siphashx24(out, data, len, key): 16 bytes.
inline void hash128(const unsigned char key[16], const void* data, std::size_t len, unsigned char out[16]) {
    detail::State s(key, true);
    s.absorb(static_cast<const unsigned char*>(data), len);
    const std::uint64_t first = s.finish(0xee);
    s.v1 ^= 0xdd;
    const std::uint64_t second = s.finish(0);
    for (int i = 0; i < 8; ++i) {
        out[i] = static_cast<unsigned char>(first >> (8 * i));
        out[8 + i] = static_cast<unsigned char>(second >> (8 * i));
    }
}

}  // namespace drover::siphash
