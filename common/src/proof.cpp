// Task secrets, attempt tokens and settle proofs (keyed SipHash-2-4; random keys from libsodium).
#include "internal/proof.hpp"

#include <cstring>
#include <stdexcept>

#include <sodium.h>

#include "internal/siphash.hpp"

namespace drover {

namespace {

static_assert(crypto_shorthash_KEYBYTES == k_secret_bytes);
static_assert(crypto_shorthash_siphashx24_KEYBYTES == k_secret_bytes);
static_assert(crypto_shorthash_siphashx24_BYTES == k_secret_bytes);

// SipHash-2-4 of a domain byte and a 32-bit number under a task's secret. A
// secret of the wrong size (never made by task_secret) hashes under zeros:
// its tokens then match nothing a real task's would.
std::uint64_t keyed(std::string_view secret, unsigned char domain, std::uint32_t n) noexcept {
    unsigned char key[crypto_shorthash_KEYBYTES] = {};
    if (secret.size() == sizeof key) std::memcpy(key, secret.data(), sizeof key);
    // The 5 bytes {domain, n little-endian}, as crypto_shorthash reads them.
    return siphash::hash64_short(key, domain | static_cast<std::uint64_t>(n) << 8, 5);
}

}  // namespace

std::string random_secret() {
    if (sodium_init() < 0) throw std::runtime_error("libsodium cannot start (no entropy source?)");
    std::string s(k_secret_bytes, '\0');
    randombytes_buf(s.data(), s.size());
    return s;
}

void task_secret_into(std::string_view sink_key, std::string_view id, char* out) noexcept {
    unsigned char key[crypto_shorthash_siphashx24_KEYBYTES] = {};
    if (sink_key.size() == sizeof key) std::memcpy(key, sink_key.data(), sizeof key);
    siphash::hash128(key, id.data(), id.size(),
                     reinterpret_cast<unsigned char*>(out));  // crypto_shorthash_siphashx24's
}

std::string task_secret(std::string_view sink_key, std::string_view id) {
    std::string out(k_secret_bytes, '\0');
    task_secret_into(sink_key, id, out.data());
    return out;
}

std::uint64_t attempt_token(std::string_view secret, std::uint32_t attempt) noexcept {
    return keyed(secret, 'a', attempt);
}
std::uint64_t broker_token(std::string_view secret, std::uint32_t attempt) noexcept {
    return keyed(secret, 'b', attempt);
}
std::uint64_t settle_proof(std::string_view secret) noexcept { return keyed(secret, 's', 0); }

bool genuine(std::string_view secret, std::uint32_t attempt, bool by_broker, std::uint64_t token) noexcept {
    return token == (by_broker ? broker_token(secret, attempt) : attempt_token(secret, attempt));
}

std::string to_hex_text(std::string_view bytes) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (unsigned char b : bytes) {
        out.push_back(digits[b >> 4]);
        out.push_back(digits[b & 0xf]);
    }
    return out;
}

std::string from_hex_text(std::string_view text) {
    if (text.size() % 2) return {};
    const auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string out;
    out.reserve(text.size() / 2);
    for (std::size_t i = 0; i < text.size(); i += 2) {
        const int hi = nibble(text[i]), lo = nibble(text[i + 1]);
        if (hi < 0 || lo < 0) return {};
        out.push_back(static_cast<char>(hi << 4 | lo));
    }
    return out;
}

SinkAddress split_sink_address(const std::string& text) {
    // The key is the last parameter named secret= (sink_address puts it
    // last); the rest is kept as written, for a CURVE key (Z85) may itself
    // hold '&', '?' and '=' ("?curve=...G&&secret=..." ends its key in '&').
    SinkAddress a;
    a.reply_to = text;
    const auto q = text.find('?');
    if (q == std::string::npos) return a;
    static const std::string name = "secret=";
    for (auto p = text.rfind(name); p != std::string::npos && p > q; p = text.rfind(name, p - 1)) {
        const char before = text[p - 1];
        if (before != '?' && before != '&') continue;  // inside another parameter's value
        const auto next = text.find('&', p);
        const auto value_end = next == std::string::npos ? text.size() : next;
        a.key = from_hex_text(text.substr(p + name.size(), value_end - p - name.size()));
        if (a.key.size() != k_secret_bytes) {
            a.key.clear();
            a.malformed_key = true;
        }
        if (before == '&') {
            a.reply_to = text.substr(0, p - 1) + text.substr(value_end);  // "&secret=..." out
        } else {
            a.reply_to = text.substr(0, p) + (next == std::string::npos ? "" : text.substr(next + 1));
            if (a.reply_to.back() == '?') a.reply_to.pop_back();  // it was the only parameter
        }
        return a;
    }
    return a;
}

std::string sink_address(const std::string& reply_to, std::string_view key) {
    return reply_to + (reply_to.find('?') == std::string::npos ? "?" : "&") + "secret=" + to_hex_text(key);
}

bool genuine_for(std::string_view sink_key, std::string_view id, std::uint32_t attempt, bool by_broker,
                 std::uint64_t token) noexcept {
    char secret[k_secret_bytes];
    task_secret_into(sink_key, id, secret);
    return genuine({secret, sizeof secret}, attempt, by_broker, token);
}

}  // namespace drover
