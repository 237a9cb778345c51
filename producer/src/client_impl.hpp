// The client's insides (Client's pimpl): its callers' side and its I/O thread.
#pragma once

// Callers submit and wait on any thread (client.cpp); one I/O thread talks
// to the broker and reads the sink: its loop and the broker's messages
// (client_loop.cpp), what it sends the broker (SUBMIT batches, the
// queue_full back-off, SETTLE, resends: client_broker.cpp), and the outcomes
// it checks, settles and delivers (client_outcomes.cpp). The two sides meet
// in the members under mutex_; members below are grouped by who owns them.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "drover/client/client.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/protocol.hpp"
#include "drover/common/security.hpp"
#include "internal/net.hpp"
#include "internal/stall.hpp"
#include "pending_tasks.hpp"

namespace drover {

class ClientImpl {
public:
    // Binds the sink and connects to the broker. Throws: zmq::error_t if the
    // sink cannot be bound.
    ClientImpl(zmq::context_t& ctx, ClientOptions options, Logger log = null_logger());
    // Cancels what is still queued at the broker and stops the I/O thread;
    // unfinished tasks end with status cancelled.
    ~ClientImpl();
    ClientImpl(const ClientImpl&) = delete;
    ClientImpl& operator=(const ClientImpl&) = delete;

    // Submits a task with msgpack-encoded arguments; `done` runs once with its
    // outcome. Returns the task's id. Blocks while the window is full.
    // Throws: std::invalid_argument if the task cannot fit in a message of
    // max_message_bytes; std::runtime_error if the client is closing.
    // Takes its arguments by reference: Client::submit_packed, which takes them by value, moves them on.
    std::string submit_packed(std::string&& name, std::string&& args, ResultCallback&& done, TaskOptions&& options);

    // Blocks until every submitted task has an outcome.
    void wait_all();
    // The same for at most `timeout`: returns whether every task has one.
    bool wait_all_for(Millis timeout);
    // Sends CANCEL for every unfinished task (queued ones end `cancelled`).
    void cancel_all();

    // Waits until the broker reports at least `n` workers. Returns false on timeout.
    bool wait_for_workers(std::size_t n, Millis timeout);
    bool wait_connected(Millis timeout);

    [[nodiscard]] const std::string& reply_to() const { return reply_to_; }
    [[nodiscard]] std::size_t unfinished() const;
    [[nodiscard]] std::uint64_t duplicates_dropped() const { return duplicates_.load(); }
    // Outcomes dropped because their token did not prove them (forged).
    [[nodiscard]] std::uint64_t forged_dropped() const { return forged_.load(); }
    // Results nested past k_max_data_depth, delivered as errors naming the
    // limit (drover/common/limits.hpp): reading them would recurse that deep.
    [[nodiscard]] std::uint64_t too_deep_results() const { return too_deep_.load(); }
    // Lone tasks their callers sent themselves, not through the I/O thread.
    [[nodiscard]] std::uint64_t submitted_directly() const { return submitted_directly_.load(); }

private:
    // Ids a SETTLE carries at most.
    static constexpr std::size_t k_settle_batch = 4096;
    // SETTLE waits up to this long for more ids: it carries no task (it lets
    // the broker forget finished ones), and one a result would wake the broker
    // and two I/O threads a task (drover-bench W3). Over tcp and ipc it waits
    // even with no task left in flight, so that the producer's next SUBMIT
    // does not follow it through the same threads (drover-bench W2); over
    // inproc the last one's goes at once: it wakes only the broker's thread,
    // which is then awake for the next SUBMIT (W2 with --transports inproc).
    static constexpr Millis k_settle_delay{10};

    using Found = PendingTasks::Found;

    // --- callers' side (client.cpp) ---
    // With mutex_ held in `lock`: waits for room in the window. Throws:
    // std::runtime_error once the client is closing.
    void wait_for_room(std::unique_lock<std::mutex>& lock);
    // A new pending task, with mutex_ held; `elsewhere`: its other sink
    // (empty: this client's), its reply_to taken. Returns it, its number in `seq`.
    Pending& add_task(std::string&& name, std::string&& args, ResultCallback&& done, TaskOptions& options,
                      SinkAddress& elsewhere, std::uint64_t& seq);
    // Sends the lone task `p` on the callers' own socket; called with mutex_
    // held in `lock`. Returns true if it went (mutex_ then released); false
    // with mutex_ held again (the I/O thread is to send it).
    bool send_directly(std::unique_lock<std::mutex>& lock, const Pending& p);
    // Hands task `seq` to the I/O thread, releasing mutex_.
    void hand_to_io_thread(std::unique_lock<std::mutex>& lock, std::uint64_t seq);
    // Wakes the I/O thread from its poll (any thread).
    void wake();
    // Every task has its outcome and every callback has returned (mutex_ held).
    [[nodiscard]] bool all_finished() const { return pending_.empty() && delivering_ == 0; }
    // The window has room for a task (mutex_ held): SETTLEs not sent count,
    // as the broker holds those tasks until it reads them.
    [[nodiscard]] bool has_room() const { return pending_.size() + settle_.size() < options_.window; }
    // A pending task as a SUBMIT carries it (views into `p`; its attempt,
    // which SUBMIT ignores, 0).
    [[nodiscard]] proto::TaskRef wire_ref(const Pending& p) const {
        const Submitted& t = p.task;
        return proto::TaskRef{
            t.id,         t.name,     t.args,           p.elsewhere ? t.reply_to : reply_to_,        0, t.max_attempts,
            t.timeout_ms, t.detached, t.retry_on_error, std::string_view(t.secret, sizeof t.secret), 0};
    }

    // --- the I/O thread's loop (client_loop.cpp) ---
    void io_loop();
    // Moves submitted tasks to unsent_ and sends the CANCELs asked for.
    // Returns false once the client is stopping; `has_named`: whether a
    // pending task has an id its caller chose.
    bool take_requests(bool& has_named);
    enum class Unsent { none, socket_full, no_room, backing_off };  // what send_unsent() left, and why
    // Polls the sink, the broker and the wake fd until input, the next
    // heartbeat or SETTLE, or (for what is left unsent) a retry is due.
    void wait_for_input(Unsent unsent);
    void drain_sink();
    void drain_broker();
    void on_broker_message(std::vector<zmq::message_t>& frames);
    void on_accepted(std::string_view body);
    // SETTLED: the sink of these detached tasks has their outcome.
    void on_settled(std::string_view body);
    void on_rejected(std::string_view body);
    void on_heartbeat(std::string_view body);
    // RESULT through the broker, from workers that cannot reach the sink.
    void on_relayed_results(std::string_view body);
    // This process was stopped for `stall`: the broker's silence meanwhile
    // is not the broker's.
    void after_stall(Clock::duration stall, Clock::time_point now);
    // Once a heartbeat period: HEARTBEAT, expiries, and a reconnect after
    // the broker's silence.
    void on_tick(Clock::time_point now);
    void reconnect(Clock::time_point now);
    // The last SETTLE, CANCEL and BYE as the I/O thread ends.
    void say_goodbye();

    // --- what the I/O thread sends the broker (client_broker.cpp) ---
    void connect_broker();
    void connect_submit();
    // Sends what unsent_ holds, in batches, as far as the socket and the
    // broker's room allow.
    Unsent send_unsent();
    // How many more tasks the broker may hold of ours (mutex_ held).
    [[nodiscard]] std::size_t submit_budget() const;
    // Tasks sent and not refused, or finished and not yet settled: what
    // the broker holds of this client's, as far as it knows (mutex_ held).
    [[nodiscard]] std::size_t at_broker() const;
    // The broker refused these tasks with queue_full: they go back to be
    // sent again (or end rejected past queue_full_wait); the client narrows
    // what it keeps at the broker and backs off.
    void hold_back(const std::vector<std::string>& ids);
    // The broker took or finished a task of ours: no back-off, not stalled.
    void made_room();
    // `n` outcomes came: after a queue_full, one task more at the broker a
    // round trip, back to no limit once the window fits.
    void widen_broker_room(std::size_t n);
    // Once the broker has been refusing for queue_full_wait with no
    // progress, ends every task not sent (`rejected: queue_full`).
    void expire_refused(Clock::time_point now);
    void end_refused(std::vector<std::pair<std::string, std::string>>& expired);  // (id, task name)
    // The broker may know none of our tasks: every one without an outcome
    // goes again, under its id, in the order submitted (mutex_ held). With
    // `restarted` (another broker instance), so do the detached tasks it
    // accepted whose sink has not settled them (detached_kept_).
    void resend_unfinished(bool restarted = false);
    // Moves detached_kept_ into pending_ (mutex_ held).
    void pend_kept_detached();
    [[nodiscard]] Clock::time_point settle_due() const;  // when settle_ must leave
    void send_settle();
    // After a reconnect: the SETTLEs the broker may not have read (the new
    // connection takes over the old one, with what was unread on it) go again.
    void settle_again();
    // A HEARTBEAT leaves: the settled ids the broker has read by now (it
    // answered the previous one) are no longer kept for settle_again().
    void forget_read_settles(Clock::time_point now);

    // --- the outcomes (client_outcomes.cpp) ---
    void on_results(std::string_view body);
    // What became of an outcome: dropped as forged; its task sent again (the
    // broker took this producer for gone); ignored; settled as a duplicate;
    // settled, with its task's callback taken out of pending_.
    enum class Taken { forged, resubmitted, ignored, duplicate, ready };
    // One outcome of a RESULT, with mutex_ held: checks its token, settles
    // it, and for a task of ours moves its callback into `taken` (its Result
    // is made after the lock, by to_result).
    Taken take_outcome(const proto::OutcomeView& o, ResultCallback& taken);
    // The Result of an outcome take_outcome took (any thread, no lock).
    Result to_result(const proto::OutcomeView& o);
    // Whether the outcome's token proves it, for the pending task `f` (if any).
    [[nodiscard]] bool proven(const proto::OutcomeView& o, const Found& f) const;
    void finish(const std::string& id, Result&& r);
    // Runs the callbacks of `n` outcomes taken from pending_ (and counted in
    // delivering_) by the caller, without the lock: run(k) for k in [0, n)
    // makes the k-th Result and calls run_callback with it.
    template <class Run>
    void deliver(std::size_t n, Run&& run);
    // Calls `done` (if any) with `r`; an exception it throws is logged under `id`.
    void run_callback(ResultCallback& done, Result&& r, std::string_view id);

    // --- set at construction, read-only after ---
    zmq::context_t& ctx_;
    ClientOptions options_;
    Logger log_;
    std::string route_;     // the routing id's random part (secret: see new_route)
    std::string sink_key_;  // this client's sink key: its tasks' secrets derive from it
    std::string reply_to_;
    std::string sink_ipc_path_;
    bool settle_last_at_once_ = false;  // the broker is in this process (inproc://): see k_settle_delay
    int wake_fd_ = -1;

    // --- the callers' own connection: they send SUBMIT there themselves
    // while nothing waits for the I/O thread (send-only: the broker answers
    // on broker_) ---
    std::mutex submit_mutex_;
    std::unique_ptr<zmq::socket_t> submit_socket_;
    bool submit_closed_ = false;  // the destructor closed it: not opened again
    std::atomic<std::uint64_t> submitted_directly_{0};

    // --- shared by callers and the I/O thread, under mutex_ ---
    mutable std::mutex mutex_;
    std::condition_variable room_;      // window has room / all done
    PendingTasks pending_;              // unfinished tasks
    std::size_t delivering_ = 0;        // outcomes taken from pending_ whose callback has not returned
    std::vector<std::uint64_t> inbox_;  // submitted, not yet handed to the I/O thread
    std::vector<std::string> cancel_requests_;
    bool stopping_ = false;
    // Ids whose SETTLE has not left: written by the I/O thread under mutex_
    // (submitters count them in the window).
    std::vector<std::string> settle_;

    // --- read by any thread ---
    std::atomic<bool> broker_heard_{false};  // the broker answered on broker_ since it was connected
    std::atomic<std::uint64_t> duplicates_{0};
    std::atomic<std::uint64_t> forged_{0};
    std::atomic<std::uint64_t> too_deep_{0};

    // --- I/O thread only ---
    zmq::socket_t sink_;
    // Results from a worker key taken off the allow-list are dropped.
    PeerGuard sink_guard_{options_.security.get(), Domain::sink, log_};
    std::unique_ptr<zmq::socket_t> broker_;
    Poller poller_;
    StallMeter stall_meter_{options_.heartbeat};
    std::vector<zmq::message_t> frames_;  // the message being read
    Clock::time_point next_heartbeat_ = Clock::now();
    std::vector<std::uint64_t> unsent_;  // tasks to send, in order (read under mutex_ by at_broker)
    // After a queue_full: tasks kept at the broker at most (SIZE_MAX: no
    // limit), results towards its next increase, and the back-off (nothing
    // is sent before resend_at_; `backoff_` doubles while refusals come
    // with no outcome between them).
    std::size_t broker_room_ = SIZE_MAX;
    std::size_t room_growth_ = 0;
    Millis backoff_{0};
    Clock::time_point resend_at_{};
    Clock::time_point stalled_since_{};  // the first queue_full since the broker last made room ({}: none)
    bool refused_logged_ = false;
    std::uint32_t settle_timed_out_ = 0;  // timeouts among settle_
    Clock::time_point settle_since_{};    // when the oldest id in settle_ came
    bool settle_now_ = false;             // settle_ holds the last task in flight
    Clock::time_point last_from_broker_{};
    // Settled tasks of our own ids (never given twice, so settling one again
    // is harmless) that the broker may not have read yet: since the last
    // HEARTBEAT, and since the one before it while that is unanswered.
    std::vector<std::uint64_t> settled_recent_, settled_older_;
    Clock::time_point heartbeat_sent_{}, heartbeat_answered_{};
    std::string broker_instance_;
    // Detached tasks the broker accepted and their sink has not settled
    // (SETTLED), by id: a broker that restarts without a journal has lost
    // them, so they go again.
    std::unordered_map<std::string, Submitted> detached_kept_;
    bool results_via_broker_ = false;  // logged once
    BrokerErrors broker_errors_;       // the broker's ERRORs, logged once per reason

    std::thread io_;
};

}  // namespace drover
