// A hostile peer for the adversarial tests: raw drover frames on a plain socket.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "drover/common/protocol.hpp"

namespace drover::test {

// One socket that speaks the protocol's frames without any of drover's
// client logic: no HELLO unless the test sends one, no heartbeats, no reads
// unless the test reads. Connects at construction; linger 0.
class RawPeer {
public:
    // `routing_id` empty: ZeroMQ chooses one.
    RawPeer(zmq::context_t& ctx, zmq::socket_type type, const std::string& endpoint,
            const std::string& routing_id = {});

    // Sends [header][body] (a DEALER or PUSH has no identity frame). Returns
    // false if the message could not be queued within 1 s.
    bool send(proto::Command c, std::string_view body = {});
    // Sends `frames` as one message, whatever they hold (a header of another
    // version, no body, extra frames). Returns false as send() does.
    bool send_frames(const std::vector<std::string>& frames);
    // The next message's command and body, or nullopt after `timeout`.
    std::optional<std::pair<proto::Command, std::string>> receive(std::chrono::milliseconds timeout);

    zmq::socket_t socket;
};

// The HELLO of a solo worker with one slot, pid 1, that runs `tasks`.
proto::Hello solo_hello(const std::string& worker, const std::string& host, std::vector<std::string> tasks);

}  // namespace drover::test
