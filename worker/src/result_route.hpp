// How results reach their sinks: directly, or through the broker when a sink cannot be reached.
#pragma once

#include <atomic>
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <zmq.hpp>

#include "drover/common/clock.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/protocol.hpp"
#include "drover/common/security.hpp"
#include "internal/sink_sockets.hpp"

namespace drover {

// What the worker knows of each sink's reachability. A sink never reached
// within the liveness window gets its results through the broker (a sink
// behind NAT, or on an address this host cannot route to), and is tried
// directly again at every later batch. Socket-free; thread-safe (shared by
// the executors and the I/O thread).
class SinkReachability {
public:
    struct State {
        Clock::time_point first_try{};  // zero until a batch was first tried
        bool reached = false;           // it took a batch directly
        bool via_broker = false;        // its results go through the broker
    };
    // What sending to it after a failed try comes to.
    enum class Verdict { keep_trying, via_broker, now_via_broker };

    explicit SinkReachability(Clock::duration window) : window_(window) {}

    // A batch for `endpoint` is about to be tried at `now`: notes its first
    // try (unless reached or tried before). Returns what is known of it.
    State trying(const std::string& endpoint, Clock::time_point now);
    // A try failed at `now`: through the broker once the window has passed
    // since the first try without the sink ever reached (`now_via_broker`
    // the first time), else keep trying directly.
    Verdict failed(const std::string& endpoint, Clock::time_point now);
    // A try succeeded.
    void reached(const std::string& endpoint);
    // A sink whose results went through the broker took a batch directly:
    // they go to it directly again. Returns whether they went through the broker.
    bool reached_again(const std::string& endpoint);
    // Whether `endpoint` took a batch directly and its results go to it directly.
    [[nodiscard]] bool reached_directly(const std::string& endpoint);

private:
    State& at(const std::string& endpoint);  // with mutex_ held

    const Clock::duration window_;
    std::mutex mutex_;
    std::unordered_map<std::string, State> sinks_;  // guarded by mutex_
};

// One executor's route to the sinks: a PUSH socket per endpoint, each tried
// directly, with back-pressure, and through the broker (over the executor's
// inproc socket to the I/O thread, which owns the broker socket) while the
// shared reachability says so. Owned and used by one executor thread.
class ResultRoute {
public:
    enum class Delivery {
        sent,         // to the sink
        via_broker,   // handed to the I/O thread, for the broker to pass on
        undelivered,  // the sink stalled or is unusable: the tasks are to be retried
        aborted,      // the worker aborts: nothing more is sent
    };

    // `to_io` is the executor's PUSH socket to the I/O thread; `abort` ends
    // a blocked send. Opens no socket until the first endpoint is used.
    ResultRoute(zmq::context_t& ctx, const Security* security, zmq::socket_t& to_io, SinkReachability& reach,
                const std::atomic<bool>& abort, Clock::duration window, Logger log);

    // Connects to `endpoint` ahead of its first result, so that the result
    // does not wait for the connection. An unusable endpoint is reported at
    // deliver().
    void connect(const std::string& endpoint);
    // The results for `endpoint` are a standalone sink's (of detached tasks),
    // which the broker cannot stand in for: they never go through it.
    void standalone(const std::string& endpoint);
    // Sends `outcomes` to `endpoint` as one RESULT. Waits while the sink is
    // full (back-pressure), but at most ten liveness windows. Never throws.
    Delivery deliver(const std::string& endpoint, const std::vector<proto::Outcome>& outcomes);

private:
    Delivery try_directly_again(zmq::socket_t& s, const std::string& endpoint, zmq::message_t& body);
    Delivery send_blocking(zmq::socket_t& s, const std::string& endpoint, zmq::message_t& body, bool may_reroute,
                           Clock::time_point now, std::size_t count);
    void send_via_broker(zmq::message_t& body);

    SinkSockets sinks_;
    std::unordered_set<std::string> standalone_;  // sinks of detached tasks
    zmq::socket_t& to_io_;
    SinkReachability& reach_;
    const std::atomic<bool>& abort_;
    const Clock::duration window_;
    Logger log_;
};

}  // namespace drover
