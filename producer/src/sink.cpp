// Standalone sink: PULL outcomes, drop duplicates, SETTLE with the broker.
#include "drover/client/sink.hpp"

#include <unistd.h>

#include "internal/net.hpp"
#include "internal/proof.hpp"
#include "internal/unpack.hpp"

namespace drover {

Sink::Sink(zmq::context_t& ctx, SinkOptions options, Logger log)
    : ctx_(ctx),
      options_(std::move(options)),
      log_(std::move(log)),
      pull_(ctx, zmq::socket_type::pull),
      guard_(options_.security.get(), Domain::sink, log_),
      broker_(ctx, zmq::socket_type::dealer) {
    pull_.set(zmq::sockopt::maxmsgsize, options_.max_message_bytes);
    pull_.set(zmq::sockopt::rcvhwm, 100000);
    pull_.set(zmq::sockopt::linger, 0);
    bind_server(ctx_, pull_, options_.security.get(), Domain::sink, options_.bind);
    if (options_.key.empty()) options_.key = random_secret();
    if (options_.key.size() != k_secret_bytes)
        throw std::invalid_argument("a sink key must be " + std::to_string(k_secret_bytes) + " bytes");
    endpoint_ = sink_address(with_sink_key(connectable(last_endpoint(pull_)), options_.security.get()), options_.key);
    broker_.set(zmq::sockopt::linger, 2000);  // the last SETTLE should leave before we exit
    connect_client(broker_, options_.security.get(), options_.broker);
    log_->info("sink.listening endpoint={} broker={}", split_sink_address(endpoint_).reply_to, options_.broker);
}

std::size_t Sink::run(const StopSource& stop, std::size_t expect,
                      const std::function<void(proto::Outcome&&)>& on_outcome) {
    std::size_t delivered = 0;
    proto::Settle settle;
    auto next_heartbeat = Clock::now();
    while (!stop.stop_requested() && (expect == 0 || delivered < expect)) {
        zmq::pollitem_t items[] = {
            {pull_.handle(), 0, ZMQ_POLLIN, 0},
            {broker_.handle(), 0, ZMQ_POLLIN, 0},
            {nullptr, stop.fd(), ZMQ_POLLIN, 0},
        };
        auto wait = std::chrono::duration_cast<Millis>(next_heartbeat - Clock::now());
        drover::poll(items, 3, std::max(wait, Millis(0)));
        if (items[1].revents & ZMQ_POLLIN) {
            zmq::message_t m;
            while (broker_.recv(m, zmq::recv_flags::dontwait)) {}  // heartbeats and BYE: nothing to do
        }
        if (items[0].revents & ZMQ_POLLIN) delivered += drain_results(settle, on_outcome);
        if (!settle.ids.empty()) {
            (void)send_message(broker_, proto::Command::settle, proto::encode(settle));
            settle = {};
        }
        if (Clock::now() >= next_heartbeat) {
            (void)send_message(broker_, proto::Command::heartbeat);
            next_heartbeat = Clock::now() + options_.heartbeat;
        }
    }
    log_->info("sink.done delivered={} duplicates={} dropped={} forged={} too_deep={}", delivered, duplicates_,
               dropped_, forged_, too_deep_);
    return delivered;
}

std::size_t Sink::drain_results(proto::Settle& settle, const std::function<void(proto::Outcome&&)>& on_outcome) {
    std::size_t delivered = 0;
    for (DrainBudget budget(1024); budget.more();) {
        frames_.clear();
        if (!zmq::recv_multipart(pull_, std::back_inserter(frames_), zmq::recv_flags::dontwait)) break;
        if (!guard_.admit(frames_.back())) continue;
        auto m = read_results();
        if (!m) continue;
        for (auto& o : m->results) {
            if (!take(o, settle)) continue;
            ++delivered;
            on_outcome(std::move(o));
        }
    }
    return delivered;
}

std::optional<proto::Results> Sink::read_results() {
    if (frames_.size() != 2) {
        ++dropped_;
        log_->warn("sink.dropped reason=bad_frames");
        return std::nullopt;
    }
    auto cmd = proto::parse_header(frames_[0]);
    if (!cmd || *cmd != proto::Command::result) {
        ++dropped_;
        log_->warn("sink.dropped reason={}", cmd ? "unexpected" : proto::decode_error_name(cmd.error()));
        return std::nullopt;
    }
    auto m = proto::decode_results(proto::view(frames_[1]));
    if (!m) {
        ++dropped_;
        log_->warn("sink.dropped reason={}", proto::decode_error_name(m.error()));
        return std::nullopt;
    }
    return std::move(*m);
}

bool Sink::take(proto::Outcome& o, proto::Settle& settle) {
    char secret[k_secret_bytes];
    task_secret_into(options_.key, o.id, secret);
    const std::string_view sv(secret, sizeof secret);
    if (!genuine(sv, o.attempt, o.worker == "broker", o.token)) {
        // Neither the broker nor a worker given that attempt: not delivered,
        // not settled.
        if (forged_++ % 10000 == 0)
            log_->warn(
                "sink.dropped reason=forged id={} worker={} forged={} (an outcome without its attempt's token; "
                "logged every 10000)",
                o.id, o.worker, forged_);
        ++dropped_;
        return false;
    }
    settle.ids.push_back(o.id);
    settle.proofs.push_back(settle_proof(sv));
    if (!seen_.insert(o.id).second) {
        ++duplicates_;
        return false;
    }
    settle.timed_out += o.status == proto::Status::timeout;
    if (o.status == proto::Status::ok && !within_depth_limit(o.result)) {
        ++too_deep_;
        log_->warn("sink.result_too_deep id={} worker={} limit={} (delivered as an error)", o.id, o.worker,
                   k_max_data_depth);
        o.status = proto::Status::error;
        o.error = too_deep_message("result");
        o.result.clear();
    }
    return true;
}

}  // namespace drover
