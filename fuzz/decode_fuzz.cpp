// libFuzzer target: every DRV4 decoder, the task arguments' reader, and the result and task-line readers on arbitrary
// bytes, and what an accepted body promises.
//
// An input is one message in frames (fuzz_frames.hpp). The message is decoded
// the way its receiver decodes it, and every frame is also fed to every body
// decoder. Beyond "does not crash, leak or overflow", a broken invariant
// aborts, so libFuzzer keeps the input: an accepted header is the one
// make_header writes, an accepted body is one bounded msgpack map, and a
// decoded value survives encode and decode unchanged. Every frame is also
// read as a task's result (msgpack to a JSON line, as drover-sink and
// drover-producer print it) and as a task line on stdin: nesting past
// k_max_data_depth must be refused there, never recursed into.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <msgpack.hpp>

#include "drover/client/json_lines.hpp"
#include "drover/common/protocol.hpp"
#include "fuzz_frames.hpp"
#include "internal/unpack.hpp"

using namespace drover::proto;

namespace {

void check(bool holds, const char* invariant) {
    if (holds) return;
    std::fprintf(stderr, "decode_fuzz: invariant broken: %s\n", invariant);
    std::abort();
}

template <class T>
std::string encoded(const T& m) {
    return encode(m);
}
std::string encoded(const std::string& instance) { return encode_heartbeat(instance); }
std::string encoded(bool) { return encode_empty(); }
std::string encoded(const std::optional<std::uint32_t>& held) {
    return held ? encode_worker_heartbeat(*held) : encode_empty();
}

// Decodes `body`; if it is accepted, checks what that promises and that the
// value survives encode and decode (an encoding is a function of the value,
// fields at their defaults left out, so equal encodings mean equal values).
template <class T>
void check_decoder(std::string_view body, Decoded<T> (*decode)(std::string_view) noexcept) {
    auto first = decode(body);
    if (!first) return;
    if (!body.empty()) {  // decode_empty and decode_heartbeat accept no body at all
        check(is_valid_msgpack(body, k_max_depth), "an accepted body is one msgpack value within the limits");
        check(decode_empty(body).ok(), "an accepted body is a map");
    }
    const std::string bytes = encoded(*first);
    auto second = decode(bytes);
    check(second.ok(), "a decoded value encodes to a body that decodes");
    check(encoded(*second) == bytes, "a decoded value survives encode and decode");
}

// msgpack-c's verdict on a body's form with the decoders' limits (every
// container at most as many elements as the body has bytes, nesting at most
// k_max_depth, nothing after the value), and whether it is a map: the
// reference for the decoders, which read bodies with their own cursor.
struct Form {
    std::optional<DecodeError> error;
    bool map = false;
};
Form msgpack_c_form(std::string_view body) {
    try {
        const std::size_t n = body.size();
        const msgpack::unpack_limit limit(n, n, n, n, n, k_max_depth);
        std::size_t offset = 0;
        const auto reference_all = [](msgpack::type::object_type, std::size_t, void*) { return true; };
        const msgpack::object_handle oh = msgpack::unpack(body.data(), n, offset, reference_all, nullptr, limit);
        if (offset != n) return {DecodeError::trailing_bytes};
        return {std::nullopt, oh.get().type == msgpack::type::MAP};
    } catch (const msgpack::size_overflow&) {
        return {DecodeError::too_deep};
    } catch (...) {
        return {DecodeError::bad_body};
    }
}

// What a decoder rejects for its form it rejects as msgpack-c does, with the
// same error; a body that is not a map it rejects as bad_body.
template <class T>
void check_same_form_errors(std::string_view body, Decoded<T> (*decode)(std::string_view) noexcept) {
    if (body.empty()) return;  // decode_empty, decode_heartbeat and decode_bye take no body at all
    const auto fast = decode(body);
    const Form reference = msgpack_c_form(body);
    if (reference.error) {
        check(!fast && fast.error() == *reference.error, "a malformed body rejected with msgpack-c's error");
    } else {
        check(fast || fast.error() == DecodeError::bad_body, "a well-formed body rejected only as bad_body");
        if (!reference.map) check(!fast, "a body that is not a map rejected");
    }
}

// The task arguments' reader (worker) accepts exactly what msgpack-c accepts
// with the limits it replaced, and builds the same value.
std::optional<std::string> repacked(const msgpack::object& o) {
    msgpack::sbuffer b;
    msgpack::pack(b, o);
    return std::string(b.data(), b.size());
}
void check_arguments_reader(std::string_view bytes) {
    if (bytes.empty()) return;  // a task without arguments is not read
    const std::size_t n = bytes.size();
    std::optional<std::string> reference, fast;
    try {
        std::size_t offset = 0;
        const auto oh =
            msgpack::unpack(bytes.data(), n, offset, nullptr, nullptr, msgpack::unpack_limit(n, n, n, n, n, 64));
        if (offset == n) reference = repacked(oh.get());
    } catch (...) {}
    try {
        msgpack::zone zone;
        fast = repacked(drover::unpack_object(zone, bytes, 64));
    } catch (const drover::UnpackError&) {}
    check(reference.has_value() == fast.has_value(), "the arguments reader accepts what msgpack-c accepts");
    if (reference) check(*reference == *fast, "the arguments reader builds msgpack-c's value");
}

// The depth scan agrees with the arguments reader: what the reader accepts
// within a limit the scan passes, and what the scan refuses the reader refuses.
void check_depth_scan(std::string_view bytes) {
    for (const std::size_t limit : {std::size_t{2}, std::size_t{8}, drover::k_max_data_depth}) {
        const bool within = drover::within_depth_limit(bytes, limit);
        bool read = false;
        try {
            msgpack::zone zone;
            (void)drover::unpack_object(zone, bytes, limit);
            read = true;
        } catch (const drover::UnpackError&) {}
        if (read) check(within, "bytes the arguments reader accepts are within the depth limit");
        if (!within) check(!read, "bytes past the depth limit are refused by the arguments reader");
    }
}

// A task's result as its sink prints it: any bytes give one JSON line, and
// bytes past the limit say so instead of being read.
void check_result_line(std::string_view bytes) {
    const std::string result(bytes);
    const nlohmann::json j = drover::msgpack_to_json(result);
    const std::string line = drover::to_line(j);
    check(!line.empty() && line.find('\n') == std::string::npos, "a result is one JSON line");
    if (!drover::within_depth_limit(result))
        check(j == "<" + drover::too_deep_message("result") + ">", "a result past the depth limit is named so");
}

// A task line on stdin: parsed or refused with a reason, never recursed
// past the limit; what is accepted packs arguments within it.
void check_task_line(std::string_view bytes) {
    std::string error;
    const auto t = drover::parse_task_line(std::string(bytes), error);
    if (!drover::json_within_depth_limit(bytes))
        check(!t && error == drover::too_deep_message("task line"), "a task line past the depth limit is refused so");
    if (!t) {
        check(!error.empty(), "a refused task line says why");
        return;
    }
    check(!t->task.empty(), "an accepted task line names its task");
    check(drover::within_depth_limit(t->args, drover::k_max_data_depth - 1), "accepted arguments are within the limit");
}

// The results in a RESULT body, read as their sink reads them.
void check_result_path(std::string_view body) {
    auto views = decode_result_views(body);
    if (!views) return;
    for (const auto& v : *views)
        if (v.status == Status::ok) check_result_line(v.result);
}

// decode_result_views accepts what decode_results accepts, with the same values.
void check_result_views(std::string_view body) {
    auto full = decode_results(body);
    auto views = decode_result_views(body);
    check(full.ok() == views.ok(), "result views accepted as results are");
    if (!full) {
        check(full.error() == views.error(), "result views rejected with the results' error");
        return;
    }
    check(views->size() == full->results.size(), "as many result views as results");
    for (std::size_t i = 0; i < views->size(); ++i) {
        const auto& v = (*views)[i];
        const auto& o = full->results[i];
        check(v.id == o.id && v.task == o.task && v.status == o.status && v.result == o.result && v.error == o.error &&
                  v.attempt == o.attempt && v.worker == o.worker && v.elapsed_us == o.elapsed_us,
              "a result view holds its result's values");
    }
}

void check_every_decoder(std::string_view body) {
    check_arguments_reader(body);
    check_depth_scan(body);
    check_result_line(body);
    check_task_line(body);
    check_result_path(body);
    check_result_views(body);
    check_same_form_errors(body, decode_hello);
    check_same_form_errors(body, decode_ready);
    check_same_form_errors(body, decode_lost);
    check_same_form_errors(body, decode_tasks);
    check_same_form_errors(body, decode_ids);
    check_same_form_errors(body, decode_settle);
    check_same_form_errors(body, decode_bye);
    check_same_form_errors(body, decode_rejected);
    check_same_form_errors(body, decode_results);
    check_same_form_errors(body, decode_error);
    check_same_form_errors(body, decode_heartbeat);
    check_same_form_errors(body, decode_worker_heartbeat);
    check_same_form_errors(body, decode_empty);
    check_decoder(body, decode_hello);
    check_decoder(body, decode_ready);
    check_decoder(body, decode_lost);
    check_decoder(body, decode_tasks);
    check_decoder(body, decode_ids);
    check_decoder(body, decode_settle);
    check_decoder(body, decode_bye);
    check_decoder(body, decode_rejected);
    check_decoder(body, decode_results);
    check_decoder(body, decode_error);
    check_decoder(body, decode_heartbeat);
    check_decoder(body, decode_worker_heartbeat);
    check_decoder(body, decode_empty);
    if (is_valid_msgpack(body, k_max_depth))
        check(is_valid_msgpack(body), "a deeper limit accepts what a shallower one does");
}

// Decodes a message as its receiver does after the routing id (broker,
// worker, producer or sink): a header frame and an optional body frame.
void check_message(const std::vector<std::string_view>& frames) {
    if (frames.empty() || frames.size() > 2) return;  // dropped as bad_frames
    auto cmd = parse_header(frames[0].data(), frames[0].size());
    if (!cmd) return;
    check(view(make_header(*cmd)) == frames[0], "an accepted header is the one make_header writes");
    const std::string_view body = frames.size() == 2 ? frames[1] : std::string_view{};
    switch (*cmd) {
        case Command::hello: return check_decoder(body, decode_hello);
        case Command::ready: return check_decoder(body, decode_ready);
        case Command::lost: return check_decoder(body, decode_lost);
        case Command::dispatch:
        case Command::submit: return check_decoder(body, decode_tasks);
        case Command::accepted:
        case Command::retry:
        case Command::give_back:
        case Command::cancel:
        case Command::settled: return check_decoder(body, decode_ids);
        case Command::settle: return check_decoder(body, decode_settle);
        case Command::rejected: return check_decoder(body, decode_rejected);
        case Command::result: return check_decoder(body, decode_results);
        case Command::error: return check_decoder(body, decode_error);
        case Command::heartbeat:  // the broker reads a worker's held count, a producer the instance
            check_decoder(body, decode_worker_heartbeat);
            return check_decoder(body, decode_heartbeat);
        case Command::bye:  // a worker's may name ids; the others take any map
            check_decoder(body, decode_empty);
            return check_decoder(body, decode_bye);
        case Command::reset:
        case Command::status:
        case Command::status_reply: return check_decoder(body, decode_empty);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto views = drover::fuzz::split_frames(std::string_view(reinterpret_cast<const char*>(data), size));
    // Each frame in an allocation of exactly its size, as zmq delivers it, so
    // that AddressSanitizer sees a read past the end of any one frame.
    std::vector<std::vector<char>> buffers;
    std::vector<std::string_view> frames;
    buffers.reserve(views.size());
    for (auto v : views) {
        const auto& b = buffers.emplace_back(v.begin(), v.end());
        frames.emplace_back(b.data(), b.size());
    }
    check_message(frames);
    for (auto f : frames) check_every_decoder(f);
    return 0;
}
