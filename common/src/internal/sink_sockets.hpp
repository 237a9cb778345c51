// PUSH sockets to the sinks a process sends outcomes to (workers, the broker).
#pragma once

#include <list>
#include <string>
#include <unordered_map>

#include <zmq.hpp>

#include "drover/common/security.hpp"

namespace drover {

// PUSH sockets to sinks, one per endpoint, connected on first use and kept,
// at most `capacity` of them: the least recently used one is closed (its
// queued messages still leave within the linger) to make room for a new one.
// Not thread-safe: each thread that pushes results owns one.
class SinkSockets {
public:
    // immediate: a new socket has ZMQ_IMMEDIATE, so that a send waits for a
    // connection instead of queueing for a sink that may never be reached,
    // until proven() says its sink took a message.
    SinkSockets(zmq::context_t& ctx, int linger_ms, int sndtimeo_ms, int hwm, std::size_t capacity = 256,
                bool immediate = false)
        : ctx_(ctx),
          linger_ms_(linger_ms),
          sndtimeo_ms_(sndtimeo_ms),
          hwm_(hwm),
          capacity_(capacity),
          immediate_(immediate) {}
    // The socket for `endpoint`, valid until the next get().
    // Throws: zmq::error_t if `endpoint` cannot be connected to.
    zmq::socket_t& get(const std::string& endpoint);
    // Connects as a CURVE client of each sink (its key is in the endpoint)
    // when `security` is set; it must outlive this cache.
    void secure_with(const Security* security) { security_ = security; }
    // The sink at `endpoint` took a message: its socket is replaced by one
    // without ZMQ_IMMEDIATE, which keeps what it queued across a reconnection
    // (with ZMQ_IMMEDIATE libzmq drops the queue when a connection breaks).
    // The old socket delivers what it holds while it lingers.
    void proven(const std::string& endpoint);
    // Closes every socket.
    void clear();
    [[nodiscard]] std::size_t size() const { return index_.size(); }

private:
    struct Entry {
        std::string endpoint;
        zmq::socket_t socket;
        bool immediate;
    };
    zmq::socket_t open(const std::string& endpoint, bool immediate);
    zmq::context_t& ctx_;
    int linger_ms_, sndtimeo_ms_, hwm_;
    std::size_t capacity_;
    bool immediate_;
    const Security* security_ = nullptr;
    std::list<Entry> lru_;  // most recently used first
    std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

}  // namespace drover
