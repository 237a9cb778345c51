// The DRV4 wire protocol: every message drover peers exchange, frame by frame.
#pragma once

// DRV4 — drover protocol, version 4. The specification is
// docs/protocol.md: every message and field, each role's duties and
// timings, the proofs, the refusals, and byte-exact examples that are the
// golden vectors of tests/vectors/protocol.json. In short:
//
//   [ header: "DRV4" + command byte (5 bytes) ][ body: one msgpack map ]
//
// after the ROUTER routing id, if any. Fields are named, optional ones left
// out at their defaults, unknown ones ignored, a known one of the wrong type
// an error; task arguments and results are opaque msgpack bytes in `bin`
// fields; lists are batches. Decoding is bounded (k_max_depth, no container
// larger than its frame, no trailing bytes) and a decode error is a value,
// never an exception. The broker answers a message it cannot take with
// ERROR, whose header is "DRV" + any version + 0x7F in every version.
//
//   worker -> broker      HELLO READY HEARTBEAT BYE LOST RETRY RETURN RESULT
//   broker -> worker      DISPATCH HEARTBEAT BYE RESET ERROR
//   producer -> broker    SUBMIT SETTLE CANCEL STATUS HEARTBEAT BYE
//   broker -> producer    ACCEPTED REJECTED SETTLED STATUS_REPLY HEARTBEAT BYE RESULT ERROR
//   worker, broker -> sink   RESULT

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "drover/common/retry.hpp"

namespace drover::proto {

inline constexpr std::string_view k_protocol = "DRV4";
inline constexpr std::size_t k_header_size = 5;
inline constexpr std::size_t k_max_depth = 8;
using drover::k_default_max_attempts;                   // a Task field left out
inline constexpr std::size_t k_task_secret_bytes = 16;  // Task::secret
// The error of a `cancelled` outcome the broker made because the task's
// producer went silent. A producer that gets it is alive after all (it
// was stopped): it submits the task again.
inline constexpr std::string_view k_producer_gone = "producer gone";

enum class Command : std::uint8_t {
    hello = 0x01,
    ready = 0x02,
    dispatch = 0x03,
    heartbeat = 0x04,
    bye = 0x05,
    reset = 0x06,
    lost = 0x07,
    retry = 0x08,
    give_back = 0x0b,
    submit = 0x10,
    accepted = 0x11,
    rejected = 0x12,
    settle = 0x13,
    cancel = 0x14,
    status = 0x15,
    status_reply = 0x16,
    // broker -> producer: ids of its detached tasks that their sink settled
    // (body as ACCEPTED's); the producer stops keeping them for a resend.
    settled = 0x17,
    result = 0x20,
    // broker -> any peer: a message it could not take, and why (Error). Its
    // header is "DRV" + any version + 0x7F in every protocol version, so a
    // peer of another version can read it (is_error_header).
    error = 0x7f,
};

[[nodiscard]] const char* command_name(Command c) noexcept;

enum class Status : std::uint8_t { ok, error, timeout, lost, cancelled, rejected };

[[nodiscard]] const char* status_name(Status s) noexcept;
[[nodiscard]] std::optional<Status> parse_status(std::string_view s) noexcept;

struct Hello {
    std::string worker;  // required: the worker's name, unique among a fleet's live workers
    std::string host;
    std::int64_t pid = 0;
    std::string pool;                // "solo", "threads", "processes"
    std::uint32_t slots = 0;         // tasks it runs at once (0 is taken as 1)
    std::vector<std::string> tasks;  // the names it runs
    std::uint32_t restarts = 0;      // times a supervisor restarted this child's slot
    // The largest message the worker accepts (its --max-message-bytes; 0:
    // not said). A bigger one would cost it its connection (ZeroMQ drops a
    // peer that sends past ZMQ_MAXMSGSIZE), so the broker never sends one.
    std::uint64_t max_message_bytes = 0;
    // Tasks received under an earlier registration and still held (running,
    // queued, outcome not yet sent): a worker registering again says so.
    std::uint32_t held = 0;
    // A supervisor's secret for this child (k_task_secret_bytes random
    // bytes; empty: none): the broker takes a LOST of this worker only with
    // the same key, so that no other worker key holder can evict it.
    std::string lost_key{};
};

struct Ready {
    std::uint32_t credits = 0;  // required: tasks it may be sent beyond those granted before
    // Of these credits, how many are for a slot free now (or about to be:
    // an early credit); a task of a long or untimed name goes only on one.
    std::uint32_t starts = 0;
    // Task name -> the mean run time, in ns, of its tasks lately run here
    // (only names whose time is new or has changed much; usually none).
    std::vector<std::pair<std::string, std::uint64_t>> run_ns;
};

struct Lost {
    std::string worker;  // the dead worker's Hello::worker
    std::string key{};   // its Hello::lost_key: a LOST without the right one is refused
};

// A task's secret, held inline: 16 bytes is past std::string's small
// buffer, and the broker reads one a task. It keeps the first
// k_task_secret_bytes of what it is given, and how long that was.
class TaskSecret {
public:
    TaskSecret() = default;
    TaskSecret(std::string_view s) noexcept { assign(s); }  // NOLINT: as implicit as the std::string it replaces
    TaskSecret& operator=(std::string_view s) noexcept {
        assign(s);
        return *this;
    }
    void assign(std::string_view s) noexcept {
        size_ = s.size();
        std::memcpy(bytes_, s.data(), std::min(s.size(), sizeof bytes_));
    }
    // Zero-padded, or cut, to k_task_secret_bytes.
    void make_full() noexcept {
        if (size_ < sizeof bytes_) std::memset(bytes_ + size_, 0, sizeof bytes_ - size_);
        size_ = sizeof bytes_;
    }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }  // as given, even past k_task_secret_bytes
    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
    [[nodiscard]] std::string_view view() const noexcept { return {bytes_, std::min(size_, sizeof bytes_)}; }
    operator std::string_view() const noexcept { return view(); }  // NOLINT

private:
    char bytes_[k_task_secret_bytes] = {};
    std::size_t size_ = 0;
};

struct Task {
    std::string id;             // chosen by the producer, unique at the broker while it holds the task
    std::string name;           // what to run
    std::string args;           // msgpack bytes, opaque to the broker
    std::uint32_t attempt = 0;  // DISPATCH: the dispatches so far, this one included
    // Bounds the dispatches a task gets after deaths and timeouts (and
    // errors, with retry_on_error).
    std::uint32_t max_attempts = k_default_max_attempts;
    std::uint32_t timeout_ms = 0;  // 0: no timeout
    std::string reply_to;          // the sink's endpoint, with "?curve=KEY" under CurveZMQ
    bool detached = false;         // outcome goes to a standalone sink: keep it if the producer goes
    bool retry_on_error = false;   // an error is retried, with back-off, while attempts remain
    TaskSecret secret;             // SUBMIT: k_secret_bytes (docs/security.md)
    std::uint64_t token = 0;       // DISPATCH: this attempt's token
    bool start = false;            // DISPATCH: sent on one of the worker's start credits (Ready::starts)
    // decode_submit only, never on the wire: why the task is malformed
    // ("field 'max_attempts': expected an unsigned integer, got a float"),
    // "" if it is not.
    std::string problem;
};

// A task's fields by reference: what the broker encodes for DISPATCH
// without copying them out of its own records.
struct TaskRef {
    std::string_view id, name, args, reply_to;
    std::uint32_t attempt = 0;
    std::uint32_t max_attempts = 0;
    std::uint32_t timeout_ms = 0;
    bool detached = false;
    bool retry_on_error = false;
    std::string_view secret;
    std::uint64_t token = 0;
    bool start = false;
};

struct Tasks {  // SUBMIT and DISPATCH
    std::vector<Task> tasks;
};

struct Ids {  // ACCEPTED, SETTLED, CANCEL, RETRY, RETURN, a worker's BYE
    std::vector<std::string> ids;
};

struct Settle {
    std::vector<std::string> ids;  // taken from their producer, or from anyone with proofs
    std::uint32_t timed_out = 0;   // how many of these outcomes are timeouts
    // Empty, or one settle_proof for each id (on the wire: 8 bytes each, little-endian).
    std::vector<std::uint64_t> proofs;
};

struct Rejected {
    std::vector<std::string> ids;
    std::string reason;  // "queue_full" (send again later), "duplicate_id", "journal_unavailable", "invalid: ..."
};

struct Outcome {
    std::string id;
    std::string task;  // the task's name
    Status status = Status::ok;
    std::string result;         // msgpack bytes when status is ok
    std::string error;          // why, for the other statuses
    std::uint32_t attempt = 0;  // the dispatch it ends (0: never dispatched)
    std::string worker;         // who ran it: a worker's name, or "broker" for a broker-made outcome
    std::uint64_t elapsed_us = 0;
    // attempt_token(secret, attempt), or broker_token(...) when worker is
    // "broker" (internal/proof.hpp): a sink drops an outcome whose token is wrong.
    std::uint64_t token = 0;
};

struct Results {
    std::vector<Outcome> results;
};

// ERROR: why the broker did not take a message. Every version's ERROR body
// is a map with at least `reason` and `protocol`.
struct Error {
    std::string reason;                   // a decode_error_name ("bad_body", "wrong_version", ...)
    std::string detail;                   // for people: what was wrong, what to do ("" left out)
    std::optional<std::uint8_t> command;  // the refused message's command byte, when it had one
    std::string protocol{k_protocol};     // the version the sender speaks ("DRV4")
};

// An Outcome whose strings view the RESULT body it was read from.
struct OutcomeView {
    std::string_view id;
    std::string_view task;
    Status status = Status::ok;
    std::string_view result;
    std::string_view error;
    std::uint32_t attempt = 0;
    std::string_view worker;
    std::uint64_t elapsed_us = 0;
    std::uint64_t token = 0;
};

// Why a message was dropped; also the keys of the "dropped" counters in STATUS.
enum class DecodeError : std::uint8_t {
    bad_frames,       // wrong number of frames
    bad_header,       // header not 5 bytes or not "DRV4"
    wrong_version,    // "DRV" and another version: a peer of another drover release
    unknown_command,  // command byte not in the table above
    unexpected,       // a valid command this socket does not take
    bad_body,         // not msgpack, truncated, wrong types, missing fields
    too_deep,         // nesting or sizes past the limits
    trailing_bytes,   // bytes after the body's map
};

[[nodiscard]] const char* decode_error_name(DecodeError e) noexcept;

// A decoded value or the reason it could not be decoded.
template <class T>
class Decoded {
public:
    Decoded(T value) : value_(std::move(value)) {}  // NOLINT: implicit on purpose
    Decoded(DecodeError error) : error_(error) {}   // NOLINT
    [[nodiscard]] bool ok() const noexcept { return value_.has_value(); }
    explicit operator bool() const noexcept { return ok(); }
    [[nodiscard]] T& value() { return *value_; }
    [[nodiscard]] T& operator*() { return *value_; }
    [[nodiscard]] T* operator->() { return &*value_; }
    [[nodiscard]] DecodeError error() const noexcept { return error_; }

private:
    std::optional<T> value_;
    DecodeError error_ = DecodeError::bad_body;
};

// Header ---------------------------------------------------------------

[[nodiscard]] zmq::message_t make_header(Command c);
// Returns the command of a header frame, or why it is not one.
[[nodiscard]] Decoded<Command> parse_header(const void* data, std::size_t size) noexcept;
inline Decoded<Command> parse_header(const zmq::message_t& m) noexcept { return parse_header(m.data(), m.size()); }
// Whether a frame is the header of an ERROR of any protocol version: 5
// bytes, "DRV", any version byte, 0x7F. A peer never answers one.
[[nodiscard]] bool is_error_header(const void* data, std::size_t size) noexcept;
inline bool is_error_header(const zmq::message_t& m) noexcept { return is_error_header(m.data(), m.size()); }

// Bodies ---------------------------------------------------------------
// encode_* return the msgpack body; decode_* check limits and trailing bytes.

[[nodiscard]] std::string encode(const Hello& m);
[[nodiscard]] std::string encode(const Ready& m);
[[nodiscard]] std::string encode(const Lost& m);
[[nodiscard]] std::string encode(const Tasks& m);
[[nodiscard]] std::string encode(const TaskRef* tasks, std::size_t count);  // a Tasks body
// The same as a message to send: its bytes are not copied again.
[[nodiscard]] zmq::message_t encode_message(const TaskRef* tasks, std::size_t count);
[[nodiscard]] std::string encode(const Ids& m);
[[nodiscard]] std::string encode(const Settle& m);
[[nodiscard]] std::string encode(const Rejected& m);
[[nodiscard]] std::string encode(const Results& m);
[[nodiscard]] std::string encode(const Outcome* outcomes, std::size_t count);  // a Results body
[[nodiscard]] zmq::message_t encode_message(const Outcome* outcomes, std::size_t count);
[[nodiscard]] std::string encode(const Error& m);
[[nodiscard]] std::string encode_empty();
[[nodiscard]] std::string encode_heartbeat(std::string_view instance);
[[nodiscard]] std::string encode_worker_heartbeat(std::uint32_t held);

[[nodiscard]] Decoded<Hello> decode_hello(std::string_view body) noexcept;
[[nodiscard]] Decoded<Ready> decode_ready(std::string_view body) noexcept;
[[nodiscard]] Decoded<Lost> decode_lost(std::string_view body) noexcept;
// Each task without a reply_to of its own gets the batch's.
[[nodiscard]] Decoded<Tasks> decode_tasks(std::string_view body) noexcept;
// The same, but such tasks are left without one, and `batch_reply_to` views
// the batch's in `body` (the broker interns it once instead of copying it
// into every task).
[[nodiscard]] Decoded<Tasks> decode_tasks(std::string_view body, std::string_view& batch_reply_to) noexcept;
// A SUBMIT, as the broker reads it: like the above, but a malformed task
// (a field of the wrong type, an empty id or name, no secret) does not make
// the body invalid: it is kept with its `problem` set (and as much of its id
// as could be read: a string, or an integer as its decimal text).
[[nodiscard]] Decoded<Tasks> decode_submit(std::string_view body, std::string_view& batch_reply_to) noexcept;
[[nodiscard]] Decoded<Ids> decode_ids(std::string_view body) noexcept;
[[nodiscard]] Decoded<Settle> decode_settle(std::string_view body) noexcept;
// A BYE body: empty, any map, or a map with `ids`.
[[nodiscard]] Decoded<Ids> decode_bye(std::string_view body) noexcept;
[[nodiscard]] Decoded<Rejected> decode_rejected(std::string_view body) noexcept;
// An ERROR body of any version: `reason` required; the other fields optional.
[[nodiscard]] Decoded<Error> decode_error(std::string_view body) noexcept;
[[nodiscard]] Decoded<Results> decode_results(std::string_view body) noexcept;
// The same outcomes as views into `body`, valid while it is: a reader that
// copies each field once to its own type (the Client's Result) then spends
// no copy or move on an Outcome between.
[[nodiscard]] Decoded<std::vector<OutcomeView>> decode_result_views(std::string_view body) noexcept;
// An empty body, or any well-formed map (HEARTBEAT, BYE, STATUS, ...).
[[nodiscard]] Decoded<bool> decode_empty(std::string_view body) noexcept;
// The broker instance named in a HEARTBEAT body; empty if none.
[[nodiscard]] Decoded<std::string> decode_heartbeat(std::string_view body) noexcept;
// A worker's HEARTBEAT: its held count, or nullopt if it did not say (an
// empty body or map).
[[nodiscard]] Decoded<std::optional<std::uint32_t>> decode_worker_heartbeat(std::string_view body) noexcept;

// Checks that `bytes` is exactly one msgpack value within the limits
// (used on task arguments and results at the edges).
[[nodiscard]] bool is_valid_msgpack(std::string_view bytes, std::size_t max_depth = 64) noexcept;

// Sending --------------------------------------------------------------

// A message ready to send: header frame and optional body frame.
struct Frames {
    Command command;
    std::string body;
};

inline std::string_view view(const zmq::message_t& m) noexcept {
    return {static_cast<const char*>(m.data()), m.size()};
}

}  // namespace drover::proto
