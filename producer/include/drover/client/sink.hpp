// A standalone sink: collects outcomes pushed by workers and settles them.
#pragma once

// Sink binds a PULL socket that tasks name as their reply_to, and connects a
// DEALER to the broker's frontend for SETTLE. Each task id is handed to the
// callback once; a second outcome for the same id is dropped (and settled,
// so the broker forgets it). run() is single-threaded.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include <zmq.hpp>

#include "drover/common/clock.hpp"
#include "drover/common/limits.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/protocol.hpp"
#include "drover/common/security.hpp"
#include "drover/common/stop.hpp"

namespace drover {

struct SinkOptions {
    std::string bind = "tcp://*:5557";
    std::string broker = "tcp://127.0.0.1:5555";
    std::int64_t max_message_bytes = k_default_max_message_bytes;
    Millis heartbeat{1000};
    std::shared_ptr<Security> security;  // CURVE server toward workers, client of the broker; nullptr: plain
    // The sink's key (k_secret_bytes): the secret of every task sent here
    // derives from it, and outcomes that do not prove theirs are dropped.
    // Empty: a fresh random one (tasks submitted to an earlier run are then
    // refused here: keep it with drover-sink --secret-file).
    std::string key;
};

class Sink {
public:
    // Binds. Throws: zmq::error_t if the endpoint cannot be bound.
    Sink(zmq::context_t& ctx, SinkOptions options, Logger log);

    // The sink's address for producers: the bound endpoint, connectable
    // ("tcp://*:*" becomes a real port), with the CURVE key under security
    // and the sink's key ("tcp://HOST:PORT?curve=KEY&secret=HEX"; docs/security.md).
    [[nodiscard]] const std::string& endpoint() const { return endpoint_; }

    // Delivers each new outcome to `on_outcome` until `stop` is requested or
    // `expect` outcomes (0: no limit) have arrived. Returns how many arrived.
    // An ok outcome whose result nests past k_max_data_depth is delivered as
    // an error naming the limit (drover/common/limits.hpp): its reader would recurse
    // that deep.
    std::size_t run(const StopSource& stop, std::size_t expect,
                    const std::function<void(proto::Outcome&&)>& on_outcome);

    [[nodiscard]] std::uint64_t duplicates() const { return duplicates_; }
    [[nodiscard]] std::uint64_t dropped() const { return dropped_; }  // malformed or forged
    [[nodiscard]] std::uint64_t forged() const { return forged_; }
    [[nodiscard]] std::uint64_t too_deep() const { return too_deep_; }  // results delivered as errors

private:
    // Reads what the PULL socket holds (up to a drain budget): returns the
    // outcomes delivered to `on_outcome`; their ids go into `settle`.
    std::size_t drain_results(proto::Settle& settle, const std::function<void(proto::Outcome&&)>& on_outcome);
    // The outcomes of the message in frames_; nullopt for a malformed one (counted, logged).
    std::optional<proto::Results> read_results();
    // Whether `o` is to be delivered: proven by its token and new. A proven
    // outcome is settled; one nested too deep becomes an error.
    bool take(proto::Outcome& o, proto::Settle& settle);

    zmq::context_t& ctx_;
    SinkOptions options_;
    Logger log_;
    zmq::socket_t pull_;
    PeerGuard guard_;  // results from a worker key taken off the allow-list are dropped
    zmq::socket_t broker_;
    std::string endpoint_;
    std::vector<zmq::message_t> frames_;  // the message being read
    std::unordered_set<std::string> seen_;
    std::uint64_t duplicates_ = 0;
    std::uint64_t dropped_ = 0;
    std::uint64_t forged_ = 0;
    std::uint64_t too_deep_ = 0;
};

}  // namespace drover
