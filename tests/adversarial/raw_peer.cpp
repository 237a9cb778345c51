// A hostile peer for the adversarial tests: raw drover frames on a plain socket.
#include "raw_peer.hpp"

#include <zmq_addon.hpp>

#include <vector>

namespace drover::test {

RawPeer::RawPeer(zmq::context_t& ctx, zmq::socket_type type, const std::string& endpoint, const std::string& routing_id)
    : socket(ctx, type) {
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::sndtimeo, 1000);
    if (!routing_id.empty()) socket.set(zmq::sockopt::routing_id, routing_id);
    socket.connect(endpoint);
}

bool RawPeer::send(proto::Command c, std::string_view body) {
    auto header = proto::make_header(c);
    if (!socket.send(header, zmq::send_flags::sndmore)) return false;
    return socket.send(zmq::buffer(body.data(), body.size()), zmq::send_flags::none).has_value();
}

bool RawPeer::send_frames(const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
        const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
        if (!socket.send(zmq::buffer(frames[i].data(), frames[i].size()), flags)) return false;
    }
    return true;
}

std::optional<std::pair<proto::Command, std::string>> RawPeer::receive(std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) <= 0) return std::nullopt;
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait) || frames.empty())
        return std::nullopt;
    auto cmd = proto::parse_header(frames[0]);
    if (!cmd) return std::nullopt;
    return std::make_pair(*cmd, frames.size() > 1 ? frames[1].to_string() : std::string{});
}

proto::Hello solo_hello(const std::string& worker, const std::string& host, std::vector<std::string> tasks) {
    proto::Hello hello;
    hello.worker = worker;
    hello.host = host;
    hello.pid = 1;
    hello.pool = "solo";
    hello.slots = 1;
    hello.tasks = std::move(tasks);
    return hello;
}

}  // namespace drover::test
