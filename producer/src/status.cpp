// STATUS: the one admin request, answered by the broker's frontend.
#include "drover/client/status.hpp"

#include <iterator>
#include <vector>

#include "internal/net.hpp"
#include "internal/unpack.hpp"

namespace drover {

std::optional<nlohmann::json> fetch_status(zmq::context_t& ctx, const std::string& frontend, Millis timeout,
                                           const Security* security) {
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    connect_client(s, security, frontend);
    if (send_message_blocking(s, proto::Command::status) != SendStatus::sent) return std::nullopt;
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
        drover::poll(&item, 1, std::chrono::duration_cast<Millis>(deadline - Clock::now()));
        if (!(item.revents & ZMQ_POLLIN)) continue;
        std::vector<zmq::message_t> frames;
        if (!zmq::recv_multipart(s, std::back_inserter(frames), zmq::recv_flags::dontwait)) continue;
        if (frames.size() != 2) continue;
        auto cmd = proto::parse_header(frames[0]);
        if (!cmd || *cmd != proto::Command::status_reply) continue;
        // from_msgpack recurses once a level: a reply nested past the limit
        // is not a broker's.
        if (!within_depth_limit(proto::view(frames[1]))) return std::nullopt;
        try {
            const auto* p = static_cast<const std::uint8_t*>(frames[1].data());
            return nlohmann::json::from_msgpack(p, p + frames[1].size());
        } catch (const nlohmann::json::exception&) {
            return std::nullopt;
        }
    }
    return std::nullopt;
}

}  // namespace drover
