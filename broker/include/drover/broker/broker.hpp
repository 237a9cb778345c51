// The broker: routes tasks from producers to workers against credits.
#pragma once

// Broker binds two ROUTER sockets: `frontend` for producers, sinks and admin
// requests, `backend` for workers. run() is a single-threaded poll loop that
// decodes each message and hands it to a Scheduler; outcomes only the broker
// can report (lost, cancelled) are pushed straight to the task's sink.
// Construct, bind(), then run() on one thread; live_workers() and the
// endpoint accessors may be read from any thread after bind().

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "drover/common/clock.hpp"
#include "drover/common/limits.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/security.hpp"
#include "drover/common/stop.hpp"

namespace drover {

struct BrokerConfig {
    std::string frontend = "tcp://*:5555";
    std::string backend = "tcp://*:5556";
    std::size_t max_queued = 1'000'000;
    Millis heartbeat{1000};
    int liveness = 3;
    std::int64_t max_message_bytes = k_default_max_message_bytes;
    std::string endpoints_file;          // if set, written as JSON once bound
    std::shared_ptr<Security> security;  // CurveZMQ on tcp; nullptr: plain
    // The journal's directory: accepted tasks are on disk before ACCEPTED,
    // and bind() recovers those it holds. "": tasks live in memory only.
    std::string journal_dir;
    std::string fsync = "batch";  // the journal's fsync policy: always, batch or off
    bool journal_repair = false;  // cut damage in the journal instead of refusing to start
    // A journal segment rolls past this size; disk use is a few segments at a steady load.
    std::uint32_t journal_segment_mib = 64;
};

class BrokerImpl;

class Broker {
public:
    Broker(zmq::context_t& ctx, BrokerConfig config, Logger log);
    ~Broker();
    Broker(const Broker&) = delete;
    Broker& operator=(const Broker&) = delete;

    // Recovers the journal's tasks (if journal_dir is set), then binds
    // frontend and backend. Throws: zmq::error_t (address in use, bad
    // endpoint), std::runtime_error if the endpoints file cannot be written
    // or the journal cannot be opened (damaged: the message names the file,
    // offset and repair flag), std::invalid_argument for a bad fsync policy.
    void bind();

    // Serves until `stop` is requested, then says BYE to its peers.
    void run(const StopSource& stop);

    // Endpoints as bound, made connectable ("tcp://*:*" -> "tcp://127.0.0.1:PORT").
    [[nodiscard]] const std::string& frontend_endpoint() const;
    [[nodiscard]] const std::string& backend_endpoint() const;
    [[nodiscard]] std::size_t live_workers() const;

private:
    std::unique_ptr<BrokerImpl> impl_;
};

}  // namespace drover
