// Encoding and bounded decoding of DRV1 message bodies.
#include "drover/protocol.hpp"

#include <cstring>
#include <limits>
#include <type_traits>

#include <msgpack.hpp>

namespace drover::proto {

namespace {

// msgpack's packer writes into anything with write(); we want a std::string.
struct StringBuffer {
    std::string data;
    void write(const char* p, std::size_t n) { data.append(p, n); }
};

using Packer = msgpack::packer<StringBuffer>;

void pack_str(Packer& pk, std::string_view s) {
    pk.pack_str(static_cast<std::uint32_t>(s.size()));
    pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

void pack_bin(Packer& pk, std::string_view s) {
    pk.pack_bin(static_cast<std::uint32_t>(s.size()));
    pk.pack_bin_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

void pack_key(Packer& pk, std::string_view k) { pack_str(pk, k); }

void pack_strings(Packer& pk, const std::vector<std::string>& v) {
    pk.pack_array(static_cast<std::uint32_t>(v.size()));
    for (const auto& s : v) pack_str(pk, s);
}

template <class T>
void pack_task(Packer& pk, const T& t) {
    pk.pack_map(9);
    pack_key(pk, "id");
    pack_str(pk, t.id);
    pack_key(pk, "name");
    pack_str(pk, t.name);
    pack_key(pk, "args");
    pack_bin(pk, t.args);
    pack_key(pk, "attempt");
    pk.pack(t.attempt);
    pack_key(pk, "max_attempts");
    pk.pack(t.max_attempts);
    pack_key(pk, "timeout_ms");
    pk.pack(t.timeout_ms);
    pack_key(pk, "reply_to");
    pack_str(pk, t.reply_to);
    pack_key(pk, "detached");
    pk.pack(t.detached);
    pack_key(pk, "retry_on_error");
    pk.pack(t.retry_on_error);
}

void pack_outcome(Packer& pk, const Outcome& o) {
    pk.pack_map(8);
    pack_key(pk, "id");
    pack_str(pk, o.id);
    pack_key(pk, "task");
    pack_str(pk, o.task);
    pack_key(pk, "status");
    pack_str(pk, status_name(o.status));
    pack_key(pk, "result");
    pack_bin(pk, o.result);
    pack_key(pk, "error");
    pack_str(pk, o.error);
    pack_key(pk, "attempt");
    pk.pack(o.attempt);
    pack_key(pk, "worker");
    pack_str(pk, o.worker);
    pack_key(pk, "elapsed_us");
    pk.pack(o.elapsed_us);
}

// Decoding ------------------------------------------------------------

// Thrown inside this file only, caught by decode_body.
struct Invalid {
    DecodeError error;
};

[[noreturn]] void invalid(DecodeError e = DecodeError::bad_body) { throw Invalid{e}; }

bool key_is(const msgpack::object& k, std::string_view name) {
    return k.type == msgpack::type::STR && k.via.str.size == name.size() &&
           std::memcmp(k.via.str.ptr, name.data(), name.size()) == 0;
}

std::string get_str(const msgpack::object& o) {
    if (o.type != msgpack::type::STR) invalid();
    return std::string(o.via.str.ptr, o.via.str.size);
}

std::string get_bin(const msgpack::object& o) {
    if (o.type == msgpack::type::BIN) return std::string(o.via.bin.ptr, o.via.bin.size);
    if (o.type == msgpack::type::STR) return std::string(o.via.str.ptr, o.via.str.size);
    invalid();
}

template <class U>
U get_uint(const msgpack::object& o) {
    if (o.type != msgpack::type::POSITIVE_INTEGER) invalid();
    if (o.via.u64 > std::numeric_limits<U>::max()) invalid();
    return static_cast<U>(o.via.u64);
}

bool get_bool(const msgpack::object& o) {
    if (o.type != msgpack::type::BOOLEAN) invalid();
    return o.via.boolean;
}

std::int64_t get_int(const msgpack::object& o) {
    if (o.type == msgpack::type::POSITIVE_INTEGER) {
        if (o.via.u64 > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) invalid();
        return static_cast<std::int64_t>(o.via.u64);
    }
    if (o.type == msgpack::type::NEGATIVE_INTEGER) return o.via.i64;
    invalid();
}

std::vector<std::string> get_strings(const msgpack::object& o) {
    if (o.type != msgpack::type::ARRAY) invalid();
    std::vector<std::string> out;
    out.reserve(o.via.array.size);
    for (std::uint32_t i = 0; i < o.via.array.size; ++i) out.push_back(get_str(o.via.array.ptr[i]));
    return out;
}

// Calls f(key, value) for each entry of a map.
template <class F>
void for_each_field(const msgpack::object& o, F&& f) {
    if (o.type != msgpack::type::MAP) invalid();
    for (std::uint32_t i = 0; i < o.via.map.size; ++i) f(o.via.map.ptr[i].key, o.via.map.ptr[i].val);
}

Task get_task(const msgpack::object& o) {
    Task t;
    bool has_id = false, has_name = false;
    for_each_field(o, [&](const msgpack::object& k, const msgpack::object& v) {
        if (key_is(k, "id")) {
            t.id = get_str(v);
            has_id = true;
        } else if (key_is(k, "name")) {
            t.name = get_str(v);
            has_name = true;
        } else if (key_is(k, "args")) {
            t.args = get_bin(v);
        } else if (key_is(k, "attempt")) {
            t.attempt = get_uint<std::uint32_t>(v);
        } else if (key_is(k, "max_attempts")) {
            t.max_attempts = get_uint<std::uint32_t>(v);
        } else if (key_is(k, "timeout_ms")) {
            t.timeout_ms = get_uint<std::uint32_t>(v);
        } else if (key_is(k, "reply_to")) {
            t.reply_to = get_str(v);
        } else if (key_is(k, "detached")) {
            t.detached = get_bool(v);
        } else if (key_is(k, "retry_on_error")) {
            t.retry_on_error = get_bool(v);
        }
    });
    if (!has_id || !has_name || t.id.empty()) invalid();
    return t;
}

Outcome get_outcome(const msgpack::object& o) {
    Outcome r;
    bool has_id = false, has_status = false;
    for_each_field(o, [&](const msgpack::object& k, const msgpack::object& v) {
        if (key_is(k, "id")) {
            r.id = get_str(v);
            has_id = true;
        } else if (key_is(k, "task")) {
            r.task = get_str(v);
        } else if (key_is(k, "status")) {
            auto s = parse_status(get_str(v));
            if (!s) invalid();
            r.status = *s;
            has_status = true;
        } else if (key_is(k, "result")) {
            r.result = get_bin(v);
        } else if (key_is(k, "error")) {
            r.error = get_str(v);
        } else if (key_is(k, "attempt")) {
            r.attempt = get_uint<std::uint32_t>(v);
        } else if (key_is(k, "worker")) {
            r.worker = get_str(v);
        } else if (key_is(k, "elapsed_us")) {
            r.elapsed_us = get_uint<std::uint64_t>(v);
        }
    });
    if (!has_id || !has_status) invalid();
    return r;
}

// Unpacks `body` as one bounded msgpack value and hands it to `f`. No
// container may claim more elements than the body has bytes: that stops a
// five-byte body from making the decoder allocate for four billion elements.
template <class T, class F>
Decoded<T> decode_body(std::string_view body, std::size_t max_depth, F&& f) noexcept {
    try {
        const std::size_t n = body.size();
        const msgpack::unpack_limit limit(n, n, n, n, n, max_depth);
        std::size_t offset = 0;
        // Strings and bytes are referenced in `body`, not copied into the
        // handle's zone: `f` copies what it keeps before the handle goes.
        const auto reference_all = [](msgpack::type::object_type, std::size_t, void*) { return true; };
        msgpack::object_handle oh = msgpack::unpack(body.data(), n, offset, reference_all, nullptr, limit);
        if (offset != n) return DecodeError::trailing_bytes;
        return Decoded<T>(f(oh.get()));
    } catch (const Invalid& e) {
        return e.error;
    } catch (const msgpack::size_overflow&) {
        return DecodeError::too_deep;
    } catch (const std::exception&) {  // unpack_error, type_error (bad_cast), bad_alloc
        return DecodeError::bad_body;
    } catch (...) {
        return DecodeError::bad_body;
    }
}

}  // namespace

const char* command_name(Command c) noexcept {
    switch (c) {
        case Command::hello: return "HELLO";
        case Command::ready: return "READY";
        case Command::dispatch: return "DISPATCH";
        case Command::heartbeat: return "HEARTBEAT";
        case Command::bye: return "BYE";
        case Command::reset: return "RESET";
        case Command::lost: return "LOST";
        case Command::retry: return "RETRY";
        case Command::submit: return "SUBMIT";
        case Command::accepted: return "ACCEPTED";
        case Command::rejected: return "REJECTED";
        case Command::settle: return "SETTLE";
        case Command::cancel: return "CANCEL";
        case Command::status: return "STATUS";
        case Command::status_reply: return "STATUS_REPLY";
        case Command::result: return "RESULT";
    }
    return "?";
}

const char* status_name(Status s) noexcept {
    switch (s) {
        case Status::ok: return "ok";
        case Status::error: return "error";
        case Status::timeout: return "timeout";
        case Status::lost: return "lost";
        case Status::cancelled: return "cancelled";
        case Status::rejected: return "rejected";
    }
    return "?";
}

std::optional<Status> parse_status(std::string_view s) noexcept {
    for (auto st : {Status::ok, Status::error, Status::timeout, Status::lost, Status::cancelled, Status::rejected})
        if (s == status_name(st)) return st;
    return std::nullopt;
}

const char* decode_error_name(DecodeError e) noexcept {
    switch (e) {
        case DecodeError::bad_frames: return "bad_frames";
        case DecodeError::bad_header: return "bad_header";
        case DecodeError::unknown_command: return "unknown_command";
        case DecodeError::unexpected: return "unexpected";
        case DecodeError::bad_body: return "bad_body";
        case DecodeError::too_deep: return "too_deep";
        case DecodeError::trailing_bytes: return "trailing_bytes";
    }
    return "?";
}

zmq::message_t make_header(Command c) {
    char h[k_header_size];
    std::memcpy(h, k_protocol.data(), 4);
    h[4] = static_cast<char>(c);
    return zmq::message_t(h, k_header_size);
}

Decoded<Command> parse_header(const void* data, std::size_t size) noexcept {
    if (size != k_header_size) return DecodeError::bad_header;
    const auto* p = static_cast<const unsigned char*>(data);
    if (std::memcmp(p, k_protocol.data(), 4) != 0) return DecodeError::bad_header;
    const auto c = static_cast<Command>(p[4]);
    if (std::string_view(command_name(c)) == "?") return DecodeError::unknown_command;
    return c;
}

std::string encode(const Hello& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(7);
    pack_key(pk, "worker");
    pack_str(pk, m.worker);
    pack_key(pk, "host");
    pack_str(pk, m.host);
    pack_key(pk, "pid");
    pk.pack(m.pid);
    pack_key(pk, "pool");
    pack_str(pk, m.pool);
    pack_key(pk, "slots");
    pk.pack(m.slots);
    pack_key(pk, "tasks");
    pack_strings(pk, m.tasks);
    pack_key(pk, "restarts");
    pk.pack(m.restarts);
    return std::move(b.data);
}

std::string encode(const Ready& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(1);
    pack_key(pk, "credits");
    pk.pack(m.credits);
    return std::move(b.data);
}

std::string encode(const Lost& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(1);
    pack_key(pk, "worker");
    pack_str(pk, m.worker);
    return std::move(b.data);
}

std::string encode(const Tasks& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(1);
    pack_key(pk, "tasks");
    pk.pack_array(static_cast<std::uint32_t>(m.tasks.size()));
    for (const auto& t : m.tasks) pack_task(pk, t);
    return std::move(b.data);
}

std::string encode(const TaskRef* tasks, std::size_t count) {
    StringBuffer b;
    std::size_t bytes = 16;
    for (std::size_t i = 0; i < count; ++i)
        bytes += tasks[i].id.size() + tasks[i].name.size() + tasks[i].args.size() + tasks[i].reply_to.size() + 112;
    b.data.reserve(bytes);
    Packer pk(b);
    pk.pack_map(1);
    pack_key(pk, "tasks");
    pk.pack_array(static_cast<std::uint32_t>(count));
    for (std::size_t i = 0; i < count; ++i) pack_task(pk, tasks[i]);
    return std::move(b.data);
}

std::string encode(const Ids& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(1);
    pack_key(pk, "ids");
    pack_strings(pk, m.ids);
    return std::move(b.data);
}

std::string encode(const Settle& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(2);
    pack_key(pk, "ids");
    pack_strings(pk, m.ids);
    pack_key(pk, "timed_out");
    pk.pack(m.timed_out);
    return std::move(b.data);
}

std::string encode(const Rejected& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(2);
    pack_key(pk, "ids");
    pack_strings(pk, m.ids);
    pack_key(pk, "reason");
    pack_str(pk, m.reason);
    return std::move(b.data);
}

std::string encode(const Results& m) { return encode(m.results.data(), m.results.size()); }

std::string encode(const Outcome* outcomes, std::size_t count) {
    StringBuffer b;
    // One allocation: the strings plus a bound on keys and headers.
    std::size_t bytes = 16;
    for (std::size_t i = 0; i < count; ++i) {
        const auto& o = outcomes[i];
        bytes += o.id.size() + o.task.size() + o.result.size() + o.error.size() + o.worker.size() + 96;
    }
    b.data.reserve(bytes);
    Packer pk(b);
    pk.pack_map(1);
    pack_key(pk, "results");
    pk.pack_array(static_cast<std::uint32_t>(count));
    for (std::size_t i = 0; i < count; ++i) pack_outcome(pk, outcomes[i]);
    return std::move(b.data);
}

std::string encode_empty() {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(0);
    return std::move(b.data);
}

std::string encode_heartbeat(std::string_view instance) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(1);
    pack_key(pk, "instance");
    pack_str(pk, instance);
    return std::move(b.data);
}

Decoded<std::string> decode_heartbeat(std::string_view body) noexcept {
    if (body.empty()) return std::string();
    return decode_body<std::string>(body, k_max_depth, [](const msgpack::object& o) {
        std::string instance;
        for_each_field(o, [&](const msgpack::object& k, const msgpack::object& v) {
            if (key_is(k, "instance")) instance = get_str(v);
        });
        return instance;
    });
}

Decoded<Hello> decode_hello(std::string_view body) noexcept {
    return decode_body<Hello>(body, k_max_depth, [](const msgpack::object& o) {
        Hello h;
        bool has_worker = false;
        for_each_field(o, [&](const msgpack::object& k, const msgpack::object& v) {
            if (key_is(k, "worker")) {
                h.worker = get_str(v);
                has_worker = true;
            } else if (key_is(k, "host")) {
                h.host = get_str(v);
            } else if (key_is(k, "pid")) {
                h.pid = get_int(v);
            } else if (key_is(k, "pool")) {
                h.pool = get_str(v);
            } else if (key_is(k, "slots")) {
                h.slots = get_uint<std::uint32_t>(v);
            } else if (key_is(k, "tasks")) {
                h.tasks = get_strings(v);
            } else if (key_is(k, "restarts")) {
                h.restarts = get_uint<std::uint32_t>(v);
            }
        });
        if (!has_worker) invalid();
        return h;
    });
}

Decoded<Ready> decode_ready(std::string_view body) noexcept {
    return decode_body<Ready>(body, k_max_depth, [](const msgpack::object& o) {
        Ready r;
        bool has = false;
        for_each_field(o, [&](const msgpack::object& k, const msgpack::object& v) {
            if (key_is(k, "credits")) {
                r.credits = get_uint<std::uint32_t>(v);
                has = true;
            }
        });
        if (!has) invalid();
        return r;
    });
}

Decoded<Lost> decode_lost(std::string_view body) noexcept {
    return decode_body<Lost>(body, k_max_depth, [](const msgpack::object& o) {
        Lost l;
        bool has = false;
        for_each_field(o, [&](const msgpack::object& k, const msgpack::object& v) {
            if (key_is(k, "worker")) {
                l.worker = get_str(v);
                has = true;
            }
        });
        if (!has) invalid();
        return l;
    });
}

Decoded<Tasks> decode_tasks(std::string_view body) noexcept {
    return decode_body<Tasks>(body, k_max_depth, [](const msgpack::object& o) {
        Tasks m;
        bool has = false;
        for_each_field(o, [&](const msgpack::object& k, const msgpack::object& v) {
            if (!key_is(k, "tasks")) return;
            if (v.type != msgpack::type::ARRAY) invalid();
            m.tasks.reserve(v.via.array.size);
            for (std::uint32_t i = 0; i < v.via.array.size; ++i) m.tasks.push_back(get_task(v.via.array.ptr[i]));
            has = true;
        });
        if (!has) invalid();
        return m;
    });
}

Decoded<Ids> decode_ids(std::string_view body) noexcept {
    return decode_body<Ids>(body, k_max_depth, [](const msgpack::object& o) {
        Ids m;
        bool has = false;
        for_each_field(o, [&](const msgpack::object& k, const msgpack::object& v) {
            if (key_is(k, "ids")) {
                m.ids = get_strings(v);
                has = true;
            }
        });
        if (!has) invalid();
        return m;
    });
}

Decoded<Settle> decode_settle(std::string_view body) noexcept {
    return decode_body<Settle>(body, k_max_depth, [](const msgpack::object& o) {
        Settle m;
        bool has = false;
        for_each_field(o, [&](const msgpack::object& k, const msgpack::object& v) {
            if (key_is(k, "ids")) {
                m.ids = get_strings(v);
                has = true;
            } else if (key_is(k, "timed_out")) {
                m.timed_out = get_uint<std::uint32_t>(v);
            }
        });
        if (!has) invalid();
        return m;
    });
}

Decoded<Ids> decode_bye(std::string_view body) noexcept {
    if (body.empty()) return Ids{};
    return decode_body<Ids>(body, k_max_depth, [](const msgpack::object& o) {
        Ids m;
        for_each_field(o, [&](const msgpack::object& k, const msgpack::object& v) {
            if (key_is(k, "ids")) m.ids = get_strings(v);
        });
        return m;
    });
}

Decoded<Rejected> decode_rejected(std::string_view body) noexcept {
    return decode_body<Rejected>(body, k_max_depth, [](const msgpack::object& o) {
        Rejected m;
        bool has = false;
        for_each_field(o, [&](const msgpack::object& k, const msgpack::object& v) {
            if (key_is(k, "ids")) {
                m.ids = get_strings(v);
                has = true;
            } else if (key_is(k, "reason")) {
                m.reason = get_str(v);
            }
        });
        if (!has) invalid();
        return m;
    });
}

Decoded<Results> decode_results(std::string_view body) noexcept {
    return decode_body<Results>(body, k_max_depth, [](const msgpack::object& o) {
        Results m;
        bool has = false;
        for_each_field(o, [&](const msgpack::object& k, const msgpack::object& v) {
            if (!key_is(k, "results")) return;
            if (v.type != msgpack::type::ARRAY) invalid();
            m.results.reserve(v.via.array.size);
            for (std::uint32_t i = 0; i < v.via.array.size; ++i)
                m.results.push_back(get_outcome(v.via.array.ptr[i]));
            has = true;
        });
        if (!has) invalid();
        return m;
    });
}

Decoded<bool> decode_empty(std::string_view body) noexcept {
    if (body.empty()) return true;
    return decode_body<bool>(body, k_max_depth, [](const msgpack::object& o) {
        if (o.type != msgpack::type::MAP) invalid();
        return true;
    });
}

bool is_valid_msgpack(std::string_view bytes, std::size_t max_depth) noexcept {
    return decode_body<bool>(bytes, max_depth, [](const msgpack::object&) { return true; }).ok();
}

}  // namespace drover::proto
