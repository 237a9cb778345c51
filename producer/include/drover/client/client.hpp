// Client: submits tasks to a broker and collects their outcomes at its own sink.
#pragma once

// A Client owns one I/O thread with two sockets: a DEALER to the broker's
// frontend (SUBMIT, SETTLE, HEARTBEAT) and the PULL sink that workers push
// results to. submit() may be called from any thread; it blocks while the
// window is full: tasks without an outcome, and outcomes whose SETTLE has
// not left yet (the broker counts a task until its SETTLE, so a window
// under the broker's --max-queued is never refused for queue_full).
// Callbacks run on the I/O thread, so they should be quick. Every task
// keeps its id until it reaches an outcome: if the broker goes silent for
// the liveness window, the client connects again and resends every
// unfinished task under the same id. A task the broker refuses with
// queue_full is held back and sent again after a back-off: the client then
// keeps no more tasks at the broker than it last took (one more a round
// trip as outcomes come). Only when the broker has taken and finished none
// of the client's tasks for queue_full_wait since a refusal do the tasks
// not sent end `rejected: queue_full`.
//
//   zmq::context_t ctx;
//   drover::Client client(ctx, {.broker = "tcp://127.0.0.1:5555"});
//   auto r = client.submit("sum_random", 1000000).get();
//   std::int64_t sum = r.as<std::int64_t>();

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <msgpack.hpp>
#include <zmq.hpp>

#include "drover/common/clock.hpp"
#include "drover/common/limits.hpp"
#include "drover/common/logging.hpp"
#include "drover/common/protocol.hpp"
#include "drover/common/retry.hpp"
#include "drover/common/security.hpp"

namespace drover {

struct ClientOptions {
    std::string broker = "tcp://127.0.0.1:5555";  // the broker's frontend
    std::string sink;                             // where to bind the sink; default derived from broker
    std::string sink_advertise;                   // reply_to given to workers; default: the bound sink
    std::size_t window = 20000;                   // unfinished tasks (and unsent SETTLEs) before submit() blocks
    // How long tasks refused with queue_full are held back and sent again,
    // while the broker takes none, before they end `rejected: queue_full`.
    Millis queue_full_wait{30000};
    Millis heartbeat{1000};
    int liveness = 3;
    std::uint32_t max_attempts = k_default_max_attempts;  // drover/common/retry.hpp
    std::int64_t max_message_bytes = k_default_max_message_bytes;
    // CurveZMQ to the broker, and the sink a CURVE server with this key pair
    // (reply_to then carries its key); nullptr: plain.
    std::shared_ptr<Security> security;
};

struct TaskOptions {
    std::optional<std::uint32_t> max_attempts;
    std::uint32_t timeout_ms = 0;
    // Retry an error (an exception in the task) too, with exponential
    // back-off, while attempts remain; by default only crashes and timeouts are.
    bool retry_on_error = false;
    // The task's id on the wire (default: "<session>.<n>"). Needed when the
    // outcome goes to another sink, which sees only this id: it must then be
    // unique among the broker's unsettled tasks, across producers.
    std::string id;
    // Deliver the outcome to another sink (e.g. drover-sink), given by the
    // address it printed, with its key ("tcp://HOST:PORT?secret=HEX"; the
    // key stays here: docs/security.md). The client's part then ends at
    // ACCEPTED: the result has status ok and `accepted_only`.
    std::string reply_to;
};

struct Result {
    std::string id;
    std::string task;
    proto::Status status = proto::Status::ok;
    std::string payload;  // msgpack bytes of the result when ok
    std::string error;
    std::uint32_t attempts = 0;
    std::string worker;
    double elapsed_ms = 0;
    bool accepted_only = false;

    [[nodiscard]] bool ok() const { return status == proto::Status::ok; }
    // The result converted to T. Throws: std::runtime_error unless ok();
    // msgpack::type_error if it is not a T; msgpack::unpack_error (or
    // size_overflow, past k_max_data_depth or a count past its bytes) if it
    // is not msgpack.
    template <class T>
    [[nodiscard]] T as() const {
        if (!ok()) throw std::runtime_error("task " + id + " " + proto::status_name(status) + ": " + error);
        const std::size_t n = payload.size();
        auto oh = msgpack::unpack(payload.data(), n, nullptr, nullptr,
                                  msgpack::unpack_limit(n, n, n, n, n, k_max_data_depth));
        return oh.get().as<T>();
    }
};

using ResultCallback = std::function<void(Result&&)>;

namespace detail {
// msgpack's packer writes into anything with write(): straight into the
// string, whose own bytes hold a few arguments without an allocation (an
// sbuffer would allocate 8 KiB a task, then be copied).
struct AppendTo {
    std::string& out;
    void write(const char* p, std::size_t n) { out.append(p, n); }
};
}  // namespace detail

// Packs values as one msgpack array: the argument list of a task.
template <class... A>
std::string pack_args(const A&... args) {
    std::string out;
    detail::AppendTo to{out};
    msgpack::pack(to, std::forward_as_tuple(args...));
    return out;
}

class ClientImpl;

class Client {
public:
    // Binds the sink and connects to the broker. Throws: zmq::error_t if the
    // sink cannot be bound.
    Client(zmq::context_t& ctx, ClientOptions options, Logger log = null_logger());
    // Cancels what is still queued at the broker and stops the I/O thread;
    // unfinished tasks end with status cancelled.
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Submits a task with msgpack-encoded arguments; `done` runs once with its
    // outcome. Returns the task's id. Blocks while the window is full.
    // Throws: std::invalid_argument if the task cannot fit in a message of
    // max_message_bytes; std::runtime_error if the client is closing.
    std::string submit_packed(std::string name, std::string args, ResultCallback done, TaskOptions options = {});

    template <class... A>
    std::future<Result> submit(std::string name, const A&... args) {
        auto promise = std::make_shared<std::promise<Result>>();
        auto future = promise->get_future();
        submit_packed(std::move(name), pack_args(args...), [promise](Result&& r) { promise->set_value(std::move(r)); });
        return future;
    }

    // Runs `name` once per element of `args` (each element is the task's only
    // argument) and returns the outcomes in input order.
    template <class T>
    std::vector<Result> map(const std::string& name, const std::vector<T>& args) {
        std::vector<std::future<Result>> futures;
        futures.reserve(args.size());
        for (const auto& a : args) futures.push_back(submit(name, a));
        std::vector<Result> out;
        out.reserve(args.size());
        for (auto& f : futures) out.push_back(f.get());
        return out;
    }

    // Blocks until every submitted task has an outcome.
    void wait_all();
    // The same for at most `timeout`: returns whether every task has one.
    bool wait_all_for(Millis timeout);
    // Sends CANCEL for every unfinished task (queued ones end `cancelled`).
    void cancel_all();

    // Waits until the broker reports at least `n` workers. Returns false on timeout.
    bool wait_for_workers(std::size_t n, Millis timeout);
    // Waits until the broker has answered this client once (it sends a
    // HEARTBEAT as it starts). Returns false if no answer came in `timeout`:
    // no broker there, or (with security) one that does not take its keys.
    bool wait_connected(Millis timeout);

    [[nodiscard]] const std::string& reply_to() const;
    [[nodiscard]] std::size_t unfinished() const;
    [[nodiscard]] std::uint64_t duplicates_dropped() const;
    // Outcomes dropped because their token did not prove them (forged).
    [[nodiscard]] std::uint64_t forged_dropped() const;
    // Results nested past k_max_data_depth, delivered as errors naming the
    // limit (drover/common/limits.hpp): reading them would recurse that deep.
    [[nodiscard]] std::uint64_t too_deep_results() const;
    // Lone tasks their callers sent themselves, not through the I/O thread.
    [[nodiscard]] std::uint64_t submitted_directly() const;

private:
    std::unique_ptr<ClientImpl> impl_;
};

}  // namespace drover
