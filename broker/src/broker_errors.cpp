// The broker's ERROR replies: a message it did not take, and why, told to
// its sender within bounds (broker_impl.hpp).
#include "broker_impl.hpp"
#include "internal/proof.hpp"

#include <cctype>

namespace drover {

namespace {

// One ERROR a second for each (peer, reason), for this many pairs at most: a
// peer that floods bad messages is told once a second, not once a message,
// and a flood from many peers at once is told what fits in the table.
constexpr Clock::duration k_error_interval = std::chrono::seconds(1);
constexpr std::size_t k_error_peers = 10'000;

// A header's first bytes as text, a byte that is not printable as \xHH.
std::string printable(std::string_view bytes) {
    std::string out;
    for (const char c : bytes) {
        if (std::isprint(static_cast<unsigned char>(c))) out.push_back(c);
        else out += "\\x" + to_hex_text(std::string_view(&c, 1));
    }
    return out;
}

// "SUBMIT", or "command 0x42" for a byte that names no command.
std::string command_text(std::uint8_t command) {
    const std::string name = proto::command_name(static_cast<proto::Command>(command));
    if (name != "?") return name;
    const char c = static_cast<char>(command);
    return "command 0x" + to_hex_text(std::string_view(&c, 1));
}

// What a person reading an ERROR needs to know: what was wrong, what to do.
std::string error_detail(proto::DecodeError reason, Side side, std::optional<std::uint8_t> command,
                         std::string_view version) {
    using proto::DecodeError;
    const std::string what = command ? "the " + command_text(*command) + " body" : "the body";
    switch (reason) {
        case DecodeError::bad_frames:
            return "a message is one header frame and at most one body frame (docs/protocol.md, \"Frames\")";
        case DecodeError::bad_header:
            return "the first frame is not a DRV4 header: 5 bytes, \"DRV4\" and a command byte";
        case DecodeError::wrong_version:
            return "this broker speaks DRV4 and the message is " + printable(version) +
                   ": run one drover release (one protocol version) on the broker, its workers and its producers";
        case DecodeError::unknown_command:
            return (command ? command_text(*command) : std::string("the command")) + " is not a DRV4 command";
        case DecodeError::unexpected:
            return (command ? command_text(*command) : std::string("this command")) + " is not taken on the broker's " +
                   (side == Side::frontend ? "frontend (producers and sinks)" : "backend (workers)");
        case DecodeError::bad_body:
            return what + " is not what DRV4 defines: a msgpack map with its required fields, each of its type";
        case DecodeError::too_deep:
            return what +
                   " nests deeper than 8 levels, or a container in it claims more elements than the body has "
                   "bytes";
        case DecodeError::trailing_bytes: return "bytes follow " + what + "'s map";
    }
    return {};
}

}  // namespace

bool BrokerImpl::answer_error(const std::string& peer, Side side, proto::DecodeError reason,
                              std::optional<std::uint8_t> command, std::string_view version) {
    const auto now = Clock::now();
    std::string key = peer;
    key.push_back(static_cast<char>(reason));
    if (const auto it = errors_answered_.find(key); it != errors_answered_.end()) {
        if (now - it->second < k_error_interval) return false;
        it->second = now;
    } else {
        if (errors_answered_.size() >= k_error_peers) forget_old_errors(now);
        if (errors_answered_.size() >= k_error_peers) return false;
        errors_answered_.emplace(std::move(key), now);
    }
    proto::Error error;
    error.reason = proto::decode_error_name(reason);
    error.detail = error_detail(reason, side, command, version);
    error.command = command;
    const auto sent = send_to(socket_of(side), peer, proto::Command::error, proto::encode(error));
    if (sent == SendStatus::would_block) ++dropped_["unread_replies"];
    if (sent != SendStatus::sent) return false;
    ++errors_sent_;
    return true;
}

void BrokerImpl::forget_old_errors(Clock::time_point now) {
    if (now - errors_pruned_ < k_error_interval) return;  // a scan an interval at most, however many peers
    errors_pruned_ = now;
    for (auto it = errors_answered_.begin(); it != errors_answered_.end();)
        it = now - it->second >= k_error_interval ? errors_answered_.erase(it) : std::next(it);
    if (errors_answered_.empty()) decltype(errors_answered_)().swap(errors_answered_);  // its buckets too
}

}  // namespace drover
