// Proofs that a message comes from a peer entitled to send it: the keys and
// tokens that let a sink tell a real outcome from a forged one.
#pragma once

// Every task has a 16-byte secret that only its producer, its sink and the
// broker know: the sink's key hashed with the task's id (task_secret), so a
// sink recomputes it from the id alone and the broker learns it at SUBMIT.
// From it the broker derives, for each dispatch, a token that only the worker
// given that attempt receives (attempt_token), a token for outcomes the
// broker makes itself (broker_token), and the proof a sink shows when it
// settles a task it did not submit (settle_proof). Workers never see a
// secret, so a worker can end only the attempts it was dispatched, and a
// peer that was dispatched nothing can end no task at all. The hashes are
// keyed SipHash-2-4 (siphash.hpp, with libsodium's crypto_shorthash values):
// a forger must guess 64 bits.
// docs/security.md says what each key holder can and cannot do.

#include <cstdint>
#include <string>
#include <string_view>

#include "drover/common/protocol.hpp"

namespace drover {

inline constexpr std::size_t k_secret_bytes = proto::k_task_secret_bytes;

// A fresh random sink key (k_secret_bytes bytes, from the system's CSPRNG).
[[nodiscard]] std::string random_secret();
// A task's secret: the sink key `sink_key` (k_secret_bytes) keyed over `id`.
[[nodiscard]] std::string task_secret(std::string_view sink_key, std::string_view id);
// The same into `out` (k_secret_bytes), without allocating: for the hot paths.
void task_secret_into(std::string_view sink_key, std::string_view id, char* out) noexcept;
// Whether `token` proves an outcome of `attempt` of task `id` whose sink key
// is `sink_key` (what a sink checks), without allocating.
[[nodiscard]] bool genuine_for(std::string_view sink_key, std::string_view id, std::uint32_t attempt, bool by_broker,
                               std::uint64_t token) noexcept;
// The token of a worker's outcome for attempt `attempt` of the task with `secret`.
[[nodiscard]] std::uint64_t attempt_token(std::string_view secret, std::uint32_t attempt) noexcept;
// The token of an outcome the broker made itself (lost, cancelled, ...).
[[nodiscard]] std::uint64_t broker_token(std::string_view secret, std::uint32_t attempt) noexcept;
// What a sink that is not the task's producer shows to SETTLE it.
[[nodiscard]] std::uint64_t settle_proof(std::string_view secret) noexcept;
// Whether `token` proves an outcome of `attempt` (made by the broker when
// `by_broker`) of the task with `secret`.
[[nodiscard]] bool genuine(std::string_view secret, std::uint32_t attempt, bool by_broker,
                           std::uint64_t token) noexcept;

// Hex text of bytes and back; from_hex returns "" for text that is not hex.
[[nodiscard]] std::string to_hex_text(std::string_view bytes);
[[nodiscard]] std::string from_hex_text(std::string_view text);

// A sink's address as users pass it around: the reply_to endpoint (with its
// "?curve=KEY" under security) and the sink's key as "secret=HEX", e.g.
// "tcp://10.0.0.5:7000?secret=00ff..." or "tcp://h:7000?curve=K&secret=00ff...".
// The key never leaves the producer: what the broker and workers see is
// `reply_to` alone.
struct SinkAddress {
    std::string reply_to;  // the address without the key
    std::string key;       // k_secret_bytes bytes; "" if the text had none (or a malformed one)
    bool malformed_key = false;
};
[[nodiscard]] SinkAddress split_sink_address(const std::string& text);
[[nodiscard]] std::string sink_address(const std::string& reply_to, std::string_view key);

}  // namespace drover
