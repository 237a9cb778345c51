// Results to their sinks, directly or through the broker (result_route.hpp).
#include "result_route.hpp"

#include <utility>

#include "internal/net.hpp"

namespace drover {

SinkReachability::State& SinkReachability::at(const std::string& endpoint) {
    if (sinks_.size() > 4096) sinks_.clear();  // forgotten sinks are proved again
    return sinks_[endpoint];
}

SinkReachability::State SinkReachability::trying(const std::string& endpoint, Clock::time_point now) {
    std::lock_guard lock(mutex_);
    auto& s = at(endpoint);
    if (!s.reached && s.first_try == Clock::time_point{}) s.first_try = now;
    return s;
}

SinkReachability::Verdict SinkReachability::failed(const std::string& endpoint, Clock::time_point now) {
    std::lock_guard lock(mutex_);
    auto& s = at(endpoint);
    if (s.via_broker) return Verdict::via_broker;
    if (s.reached || now - s.first_try <= window_) return Verdict::keep_trying;
    s.via_broker = true;
    return Verdict::now_via_broker;
}

void SinkReachability::reached(const std::string& endpoint) {
    std::lock_guard lock(mutex_);
    at(endpoint).reached = true;
}

bool SinkReachability::reached_again(const std::string& endpoint) {
    std::lock_guard lock(mutex_);
    return std::exchange(at(endpoint).via_broker, false);
}

bool SinkReachability::reached_directly(const std::string& endpoint) {
    std::lock_guard lock(mutex_);
    const auto it = sinks_.find(endpoint);
    return it != sinks_.end() && it->second.reached && !it->second.via_broker;
}

ResultRoute::ResultRoute(zmq::context_t& ctx, const Security* security, zmq::socket_t& to_io, SinkReachability& reach,
                         const std::atomic<bool>& abort, Clock::duration window, Logger log)
    : sinks_(ctx, /*linger_ms=*/5000, /*sndtimeo_ms=*/200,
             /*hwm=*/16,                             // batches of <= 1 MiB: at most 16 MiB waiting per executor
             /*capacity=*/256, /*immediate=*/true),  // until a sink is proven reachable
      to_io_(to_io),
      reach_(reach),
      abort_(abort),
      window_(window),
      log_(std::move(log)) {
    sinks_.secure_with(security);
}

void ResultRoute::connect(const std::string& endpoint) {
    try {
        (void)sinks_.get(endpoint);
    } catch (const zmq::error_t&) {
        // reported when the result is sent
    }
}

void ResultRoute::standalone(const std::string& endpoint) {
    if (standalone_.size() < 4096) standalone_.insert(endpoint);
}

ResultRoute::Delivery ResultRoute::deliver(const std::string& endpoint, const std::vector<proto::Outcome>& outcomes) {
    // Sent as it is (big results are not copied again), and kept until it
    // is: it may be tried more than once.
    auto body = proto::encode_message(outcomes.data(), outcomes.size());
    try {
        auto& s = sinks_.get(endpoint);
        const bool may_reroute = standalone_.count(endpoint) == 0;
        const auto now = Clock::now();
        // One look at the shared state per batch once a sink is reached.
        const auto known = reach_.trying(endpoint, now);
        if (may_reroute && known.via_broker) return try_directly_again(s, endpoint, body);
        const auto delivery = send_blocking(s, endpoint, body, may_reroute, now, outcomes.size());
        if (delivery == Delivery::sent) {
            sinks_.proven(endpoint);
            if (!known.reached) reach_.reached(endpoint);
        }
        return delivery;
    } catch (const zmq::error_t& e) {
        log_->warn("worker.sink_unusable endpoint={} error=\"{}\" retrying={}", endpoint, e.what(), outcomes.size());
        return Delivery::undelivered;
    }
}

ResultRoute::Delivery ResultRoute::try_directly_again(zmq::socket_t& s, const std::string& endpoint,
                                                      zmq::message_t& body) {
    if (send_message(s, proto::Command::result, body) != SendStatus::sent) {
        send_via_broker(body);
        return Delivery::via_broker;
    }
    sinks_.proven(endpoint);
    if (reach_.reached_again(endpoint))
        log_->info("worker.sink_reachable endpoint={} (results go to it directly again)", endpoint);
    return Delivery::sent;
}

ResultRoute::Delivery ResultRoute::send_blocking(zmq::socket_t& s, const std::string& endpoint, zmq::message_t& body,
                                                 bool may_reroute, Clock::time_point now, std::size_t count) {
    // Not for ever: a sink gone for good would hold this slot until the worker dies.
    const auto give_up = now + window_ * 10;
    while (send_message_blocking(s, proto::Command::result, body) != SendStatus::sent) {
        if (abort_) return Delivery::aborted;
        now = Clock::now();
        const auto verdict = may_reroute ? reach_.failed(endpoint, now) : SinkReachability::Verdict::keep_trying;
        if (verdict == SinkReachability::Verdict::now_via_broker)
            log_->warn(
                "worker.sink_unreachable endpoint={} (no connection in {} ms: results go through "
                "the broker; the producer should advertise an address this host reaches, "
                "--sink-advertise)",
                endpoint, std::chrono::duration_cast<Millis>(window_).count());
        if (verdict != SinkReachability::Verdict::keep_trying) {
            send_via_broker(body);
            return Delivery::via_broker;
        }
        if (now > give_up) {
            log_->warn("worker.sink_stalled endpoint={} retrying={}", endpoint, count);
            return Delivery::undelivered;
        }
    }
    return Delivery::sent;
}

void ResultRoute::send_via_broker(zmq::message_t& body) {
    to_io_.send(zmq::message_t(1), zmq::send_flags::sndmore);  // [tag][RESULT body]: see WorkerImpl::drain_executors
    to_io_.send(body, zmq::send_flags::none);
}

}  // namespace drover
