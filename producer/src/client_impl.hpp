// The client's insides: its I/O thread, window and sockets (Client's pimpl).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <msgpack.hpp>
#include <zmq.hpp>

#include "drover/client/client.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/protocol.hpp"
#include "drover/common/security.hpp"
#include "internal/net.hpp"
#include "internal/proof.hpp"
#include "internal/unpack.hpp"
#include "seq_table.hpp"

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
    std::string submit_packed(std::string name, std::string args, ResultCallback done, TaskOptions options = {});

    // Blocks until every submitted task has an outcome.
    void wait_all();
    // The same for at most `timeout`: returns whether every task has one.
    bool wait_all_for(Millis timeout);
    // Sends CANCEL for every unfinished task (queued ones end `cancelled`).
    void cancel_all();

    // Waits until the broker reports at least `n` workers. Returns false on timeout.
    bool wait_for_workers(std::size_t n, Millis timeout);

    [[nodiscard]] const std::string& reply_to() const { return reply_to_; }
    [[nodiscard]] std::size_t unfinished() const;
    [[nodiscard]] std::uint64_t duplicates_dropped() const { return duplicates_.load(); }
    // Outcomes dropped because their token did not prove them (forged).
    [[nodiscard]] std::uint64_t forged_dropped() const { return forged_.load(); }
    // Results nested past k_max_data_depth, delivered as errors naming the
    // limit (drover/unpack.hpp): reading them would recurse that deep.
    [[nodiscard]] std::uint64_t too_deep_results() const { return too_deep_.load(); }
    // Lone tasks their callers sent themselves, not through the I/O thread.
    [[nodiscard]] std::uint64_t submitted_directly() const { return submitted_directly_.load(); }

private:
    // What a SUBMIT carries of a task, kept until its outcome: no more than
    // that (the I/O thread walks thousands of these a second).
    struct Submitted {
        std::string id, name, args;
        std::string reply_to;  // "" for this client's sink (reply_to_, added when sent)
        std::uint32_t max_attempts = proto::k_default_max_attempts;
        std::uint32_t timeout_ms = 0;
        bool detached = false;
        bool retry_on_error = false;
        char secret[k_secret_bytes] = {};  // task_secret of id under its sink's key
    };
    struct Pending {
        Submitted task;
        ResultCallback done;
        bool accepted = false;   // kept for tasks that go elsewhere only: the others end at their result
        bool elsewhere = false;  // outcome goes to another sink
        bool named = false;      // its id was chosen by the caller (in named_)
    };
    struct Found {
        std::uint64_t seq = 0;
        Pending* pending = nullptr;
    };

    void io_loop();
    // Every task has its outcome and every callback has returned (mutex_ held).
    [[nodiscard]] bool all_finished() const { return pending_.empty() && delivering_ == 0; }
    void connect_broker();
    void connect_submit();
    // A pending task as a SUBMIT carries it (views into `p`; its attempt,
    // which SUBMIT ignores, 0).
    [[nodiscard]] proto::TaskRef wire_ref(const Pending& p) const;
    // What is left unsent after send_unsent(), and why.
    enum class Unsent { none, socket_full, no_room, backing_off };
    Unsent send_unsent();
    void send_settle();
    [[nodiscard]] Clock::time_point settle_due() const;  // when settle_ must leave
    void on_broker_message(std::vector<zmq::message_t>& frames);
    void on_results(std::string_view body);
    // The broker refused these tasks with queue_full: they go back to be
    // sent again (or end rejected past queue_full_wait); the client narrows
    // what it keeps at the broker and backs off.
    void hold_back(const std::vector<std::string>& ids);
    // The broker took or finished a task of ours: no back-off, not stalled.
    void made_room();
    // Once the broker has been refusing for queue_full_wait with no
    // progress, ends every task not sent (`rejected: queue_full`).
    void expire_refused(Clock::time_point now);
    void end_refused(std::vector<std::pair<std::string, std::string>>& expired);  // (id, task name)
    // Tasks sent and not refused, or finished and not yet settled: what
    // the broker holds of this client's, as far as it knows (mutex_ held).
    [[nodiscard]] std::size_t at_broker() const;
    void finish(const std::string& id, Result&& r);
    void deliver(std::vector<std::pair<ResultCallback, Result>>& ready);
    // The unfinished task with this id, if any. Called with mutex_ held.
    Found find_pending(std::string_view id);
    void erase_pending(const Found& f);
    [[nodiscard]] std::string own_id(std::uint64_t seq) const;
    [[nodiscard]] std::uint64_t own_seq(std::string_view id) const;  // 0: not of our own form
    void wake();
    void resend_unfinished();
    // After a reconnect: the SETTLEs the broker may not have read (the new
    // connection takes over the old one, with what was unread on it) go again.
    void settle_again();

    zmq::context_t& ctx_;
    ClientOptions options_;
    Logger log_;
    std::string session_;
    std::string route_;     // the routing id's random part (secret: see new_route)
    std::string sink_key_;  // this client's sink key: its tasks' secrets derive from it
    std::string reply_to_;
    std::string sink_ipc_path_;
    zmq::socket_t sink_;
    // Results from a worker key taken off the allow-list are dropped.
    PeerGuard sink_guard_{options_.security.get(), Domain::sink, log_};
    std::unique_ptr<zmq::socket_t> broker_;
    // Callers send SUBMIT here themselves while nothing waits for the I/O
    // thread (send-only: the broker answers on broker_).
    std::mutex submit_mutex_;
    std::unique_ptr<zmq::socket_t> submit_socket_;
    bool submit_closed_ = false;  // the destructor closed it: not opened again
    std::atomic<std::uint64_t> submitted_directly_{0};
    int wake_fd_ = -1;

    mutable std::mutex mutex_;
    std::condition_variable room_;      // window has room / all done
    std::size_t delivering_ = 0;        // outcomes taken from pending_ whose callback has not returned
    std::vector<std::uint64_t> inbox_;  // submitted, not yet handed to the I/O thread
    // Unfinished tasks by their number: an id of our own form ("<session>.<n>")
    // carries it, so finding a task costs no hashing (seq_table.hpp). A task
    // whose id the caller chose is found through named_.
    SeqTable<Pending> pending_;
    std::unordered_map<std::string, std::uint64_t> named_;
    // Tasks in pending_ whose outcome goes elsewhere: while there are none,
    // ACCEPTED needs no look-up (one decode and one find a task saved).
    std::atomic<std::size_t> elsewhere_pending_{0};
    std::vector<std::string> cancel_requests_;
    bool stopping_ = false;
    std::atomic<bool> broker_heard_{false};  // the broker answered on broker_ since it was connected

    // I/O thread only.
    std::vector<std::uint64_t> unsent_;
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
    std::uint64_t last_at_tick_ = 0;  // pending_.last() at the last heartbeat tick
    std::vector<std::string> settle_;
    std::uint32_t settle_timed_out_ = 0;  // timeouts among settle_
    Clock::time_point settle_since_{};    // when the oldest id in settle_ came
    bool settle_now_ = false;             // settle_ holds the last task in flight
    bool settle_last_at_once_ = false;    // the broker is in this process (inproc://): see k_settle_delay
    Clock::time_point last_from_broker_{};
    // Settled tasks of our own ids (never given twice, so settling one again
    // is harmless) that the broker may not have read yet: since the last
    // HEARTBEAT, and since the one before it while that is unanswered.
    std::vector<std::uint64_t> settled_recent_, settled_older_;
    Clock::time_point heartbeat_sent_{}, heartbeat_answered_{};
    std::string broker_instance_;
    bool results_via_broker_ = false;  // logged once
    std::atomic<std::uint64_t> duplicates_{0};
    std::atomic<std::uint64_t> forged_{0};
    std::atomic<std::uint64_t> too_deep_{0};
    std::thread io_;
};

}  // namespace drover
