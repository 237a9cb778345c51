// PUSH sockets to sinks, one per endpoint; past the capacity the least recently used closes.
#include "internal/sink_sockets.hpp"

namespace drover {

zmq::socket_t SinkSockets::open(const std::string& endpoint, bool immediate) {
    zmq::socket_t s(ctx_, zmq::socket_type::push);
    s.set(zmq::sockopt::linger, linger_ms_);
    s.set(zmq::sockopt::sndtimeo, sndtimeo_ms_);
    s.set(zmq::sockopt::sndhwm, hwm_);
    if (immediate) s.set(zmq::sockopt::immediate, 1);
    connect_client(s, security_, endpoint);
    return s;
}

zmq::socket_t& SinkSockets::get(const std::string& endpoint) {
    if (auto it = index_.find(endpoint); it != index_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second);
        return it->second->socket;
    }
    auto s = open(endpoint, immediate_);
    if (index_.size() >= std::max<std::size_t>(capacity_, 1)) {
        index_.erase(lru_.back().endpoint);
        lru_.pop_back();
    }
    lru_.push_front(Entry{endpoint, std::move(s), immediate_});
    index_.emplace(endpoint, lru_.begin());
    return lru_.front().socket;
}

void SinkSockets::proven(const std::string& endpoint) {
    auto it = index_.find(endpoint);
    if (it == index_.end() || !it->second->immediate) return;
    it->second->socket = open(endpoint, false);  // the old one lingers to deliver its queue
    it->second->immediate = false;
}

void SinkSockets::clear() {
    index_.clear();
    lru_.clear();
}

}  // namespace drover
