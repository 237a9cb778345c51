// The broker's insides: its sockets, its Scheduler and its poll loop (Broker's pimpl).
#pragma once

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include <zmq.hpp>

#include "drover/broker/broker.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/security.hpp"
#include "drover/common/stop.hpp"
#include "internal/net.hpp"
#include "internal/sink_sockets.hpp"
#include "internal/stall.hpp"
#include "journal.hpp"
#include "scheduler.hpp"

namespace drover {

// The broker's two sockets, as its handlers name them.
enum class Side : std::uint8_t { frontend, backend };

// Every member runs on run()'s thread, except live_workers() and the
// endpoint accessors (read from any thread after bind()). Its methods live
// in these files: the loop, reading and time (broker.cpp), ERROR replies
// (broker_errors.cpp), producers (broker_frontend.cpp), workers
// (broker_backend.cpp), outcomes (broker_outcomes.cpp), the journal
// (broker_journal.cpp).
class BrokerImpl {
public:
    BrokerImpl(zmq::context_t& ctx, BrokerConfig config, Logger log);
    ~BrokerImpl();
    BrokerImpl(const BrokerImpl&) = delete;
    BrokerImpl& operator=(const BrokerImpl&) = delete;

    // Binds frontend and backend. Throws: zmq::error_t (address in use, bad
    // endpoint), std::runtime_error if the endpoints file cannot be written.
    void bind();

    // Serves until `stop` is requested, then says BYE to its peers.
    void run(const StopSource& stop);

    // Endpoints as bound, made connectable ("tcp://*:*" -> "tcp://127.0.0.1:PORT").
    [[nodiscard]] const std::string& frontend_endpoint() const { return frontend_ep_; }
    [[nodiscard]] const std::string& backend_endpoint() const { return backend_ep_; }
    [[nodiscard]] std::size_t live_workers() const { return live_workers_.load(); }

private:
    // Reading (broker.cpp; the ERROR replies in broker_errors.cpp). Each
    // returns whether it read all that waited (not stopped by its budget).
    bool on_frontend();
    bool on_backend();
    // Reads up to a budget of messages from the side's socket, drops
    // malformed frames, and hands each message to handle(peer, command, body).
    template <class Handle>
    bool drain(Side side, PeerGuard& guard, Handle handle);
    // Counts n dropped under `reason` (STATUS "dropped"); returns whether this
    // (peer, reason) is new, so its caller logs it once.
    bool count_drop(const std::string& peer, const std::string& reason, std::size_t n);
    // A message the broker does not take: counted, logged once per peer and
    // reason, and answered ERROR (answer_error). `command`: the message's
    // command byte, when it had a 5-byte "DRV" header of any version;
    // `version`: that header's first 4 bytes, for wrong_version.
    void drop(const std::string& peer, Side side, proto::DecodeError reason,
              std::optional<std::uint8_t> command = std::nullopt, std::string_view version = {});
    void drop(const std::string& peer, Side side, proto::DecodeError reason, proto::Command command) {
        drop(peer, side, reason, static_cast<std::uint8_t>(command));
    }
    // Sends ERROR to `peer`, at most once a k_error_interval for each
    // (peer, reason) while k_error_peers pairs are remembered, never
    // blocking (a peer that does not read loses it). Returns whether it went.
    bool answer_error(const std::string& peer, Side side, proto::DecodeError reason,
                      std::optional<std::uint8_t> command, std::string_view version);
    // Forgets the (peer, reason) pairs answered more than an interval ago;
    // does nothing if it did so less than an interval ago.
    void forget_old_errors(Clock::time_point now);
    [[nodiscard]] zmq::socket_t& socket_of(Side side) { return side == Side::frontend ? frontend_ : backend_; }
    // Counts `n` ids of a SETTLE or CANCEL (`what`) that were not the peer's to end.
    void refuse(const std::string& peer, const char* what, std::size_t n, bool proofs, const std::string& first_id);

    // Producers (broker_frontend.cpp).
    void handle_frontend(const std::string& peer, proto::Command c, std::string_view body);
    void producer_submit(const std::string& peer, std::string_view body, Clock::time_point now);
    void flush_replies();
    // Sends a reply that is not kept: one its peer cannot take now (it does
    // not read) is dropped and counted.
    void reply(const std::string& peer, proto::Command c, std::string_view body);
    // Appends `ids` to a producer's replies in waiting (`kept`), up to
    // k_max_unsent_reply_ids of them in all; the rest are dropped and counted.
    void keep_reply(const std::string& producer, std::vector<std::string>& kept, std::vector<std::string>& ids);
    [[nodiscard]] static std::string producer_of(const std::string& peer);  // a SUBMIT's sender's producer
    void forget_producer(const std::string& peer);
    // Keeps SETTLED notices for the connected producers of `detached`.
    void tell_settled(IdsByProducer& detached);

    // Workers (broker_backend.cpp).
    void handle_backend(const std::string& peer, proto::Command c, std::string_view body);
    void worker_hello(const std::string& peer, std::string_view body, Clock::time_point now);
    void worker_heartbeat(const std::string& peer, std::string_view body, Clock::time_point now);
    void worker_retry(const std::string& peer, std::string_view body, Clock::time_point now);
    void remove_worker(const std::string& identity, const std::string& reason, bool died = true,
                       const std::vector<std::string>& finished = {});
    void dispatch_ready_tasks();
    // Sends one worker's batch in DISPATCH messages that fit its limit; ends the tasks
    // too large for it. Returns whether it ended any (their credits came back).
    bool send_dispatch(const Scheduler::Batch& batch);
    // Ends a dispatched task of about `bytes` that the batch's worker cannot
    // take. Returns whether it ended it (its credit came back).
    bool refuse_too_large(const Scheduler::Batch& batch, const proto::TaskRef& task, std::size_t bytes);

    // Outcomes (broker_outcomes.cpp).
    // Queues broker-made outcomes for their sinks (flush_outcomes sends them).
    void report(std::vector<FinalOutcome>&& finals);
    void flush_outcomes();
    // Passes RESULTs of a worker that cannot reach their sinks on to their
    // producers (or, detached, to their sinks); what cannot go runs again.
    void forward_results(const std::string& worker, std::vector<proto::Outcome>&& results);

    // The journal (broker_journal.cpp).
    // Opens the journal and restores its unsettled tasks; without one, says
    // that tasks live in memory only. Throws as Broker::bind().
    void open_journal();
    // Once a loop turn: commits what was appended, releases the ACCEPTED
    // replies now durable, relocates the tasks compaction asks for.
    void commit_journal(Clock::time_point now);
    // Holds the ACCEPTED ids of a SUBMIT until its records are durable.
    void hold_accepted(const std::string& producer, std::vector<std::string>&& ids);
    // At stop: flushes the journal, or warns how many tasks memory held.
    void close_journal();
    [[nodiscard]] nlohmann::json journal_status() const;

    // Time (broker.cpp).
    void tick(Clock::time_point now);
    // Ends workers and producers silent past their window, and resends broker-made outcomes due again.
    void expire_peers(Clock::time_point now);
    // Asks stall_meter_ whether this process was stopped; if it was, moves
    // every peer's liveness deadline on by the stall and holds expiry back
    // until the input that waited has been read.
    void notice_stall(Clock::time_point now);
    nlohmann::json status_json(Clock::time_point now) const;

    zmq::context_t& ctx_;
    BrokerConfig config_;
    Logger log_;
    zmq::socket_t frontend_;
    zmq::socket_t backend_;
    std::string frontend_ep_, backend_ep_;
    std::string instance_;  // new at every start: producers resend when it changes
    SinkSockets sinks_;     // for outcomes only the broker can report
    Scheduler scheduler_;
    PeerGuard frontend_guard_, backend_guard_;  // keys taken off the allow-lists lose their sessions
    std::atomic<std::size_t> live_workers_{0};

    // Replies gathered while draining input, sent once the loop is idle
    // (and kept while their producer cannot take them).
    std::unordered_map<std::string, std::vector<std::string>> accepted_;
    IdsByProducer settled_;  // SETTLED ids for producers of detached tasks
    std::unordered_map<std::string, std::map<std::string, std::vector<std::string>>> rejected_;
    std::unordered_map<std::string, std::vector<proto::Outcome>> outcomes_;  // by sink endpoint

    std::unordered_map<std::string, Clock::time_point> producers_;  // identity -> last seen
    std::map<std::string, std::uint64_t> dropped_;                  // reason -> count
    std::set<std::pair<std::string, std::string>> logged_drops_;    // (peer, reason) logged once
    // ERROR replies: when each (peer + reason byte) was last answered, at
    // most k_error_peers of them; pruned of old ones at most once an interval.
    std::unordered_map<std::string, Clock::time_point> errors_answered_;
    Clock::time_point errors_pruned_{};
    std::uint64_t errors_sent_ = 0;          // STATUS "errors_sent"
    std::set<std::string> logged_forwards_;  // workers whose forwarding was logged
    std::uint64_t received_ = 0, received_at_trim_ = 0,
                  received_at_tick_ = 0;  // messages, to trim the heap after traffic
    Clock::time_point next_tick_{};
    StallMeter stall_meter_{config_.heartbeat};
    bool catching_up_ = false;        // stalled, and input may still wait: no peer is judged yet (a window at most)
    Clock::time_point last_stall_{};  // when the last stall was noticed
    Clock::time_point next_retry_ = Clock::time_point::max();  // the next retry back-off to end

    std::unique_ptr<Journal> journal_;  // nullptr: no --journal
    JournalRecovery recovery_;          // what opening it found
    // ACCEPTED ids waiting for their SUBMIT's last record (seq) to be durable, oldest first.
    struct HeldAccepted {
        Journal::Seq seq;
        std::string producer;
        std::vector<std::string> ids;
    };
    std::deque<HeldAccepted> held_accepted_;
};

}  // namespace drover
