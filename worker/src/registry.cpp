// Task registry and the built-in tasks.
#include "drover/worker/registry.hpp"
#include "internal/unpack.hpp"

#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <unistd.h>

namespace drover {

namespace detail {

std::string expected_args(std::size_t required, std::size_t arity) {
    const std::string range =
        required == arity ? std::to_string(arity) : std::to_string(required) + " to " + std::to_string(arity);
    return "expected " + range + " argument" + (required == 1 && arity == 1 ? "" : "s");
}

const char* msgpack_type_name(const msgpack::object& o) {
    switch (o.type) {
        case msgpack::type::NIL: return "null";
        case msgpack::type::BOOLEAN: return "a boolean";
        case msgpack::type::POSITIVE_INTEGER:
        case msgpack::type::NEGATIVE_INTEGER: return "an integer";
        case msgpack::type::FLOAT32:
        case msgpack::type::FLOAT64: return "a number";
        case msgpack::type::STR: return "a string";
        case msgpack::type::BIN: return "binary data";
        case msgpack::type::ARRAY: return "an array";
        case msgpack::type::MAP: return "a map";
        default: return "another type";
    }
}

namespace {

// `argument 2: expected an integer, got "abc"`, the text cut at 64 bytes.
ArgumentError not_a(const char* wanted, std::string_view text, std::size_t i) {
    std::string shown(text.substr(0, 64));
    if (text.size() > 64) shown += "...";
    return ArgumentError("argument " + std::to_string(i + 1) + ": expected " + wanted + ", got \"" + shown + "\"");
}

ArgumentError out_of_range(std::size_t i, std::int64_t min, std::uint64_t max) {
    return ArgumentError("argument " + std::to_string(i + 1) + " is out of range: expected an integer from " +
                         std::to_string(min) + " to " + std::to_string(max));
}

// The whole of `text` as T, without a sign '+' or spaces; nullopt if it is not one, `range` set if too large.
template <class T>
std::optional<T> parse_all(std::string_view text, bool& range) {
    T value{};
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    range = ec == std::errc::result_out_of_range;
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

// "1e3" or "1000.0" for an integer parameter, as JSON's floats are taken;
// nullopt unless `text` is a whole number. Throws: out of [min, max].
std::optional<long double> whole_number(std::string_view text, std::size_t i, std::int64_t min, std::uint64_t max) {
    bool range = false;
    const auto d = parse_all<double>(text, range);
    if (!d || *d != std::trunc(*d)) return std::nullopt;
    if (*d < static_cast<long double>(min) || *d > static_cast<long double>(max)) throw out_of_range(i, min, max);
    return *d;
}

}  // namespace

std::int64_t string_to_int(std::string_view text, std::size_t i, std::int64_t min, std::uint64_t max) {
    bool range = false;
    if (const auto v = parse_all<std::int64_t>(text, range)) {
        if (*v < min || (*v > 0 && static_cast<std::uint64_t>(*v) > max)) throw out_of_range(i, min, max);
        return *v;
    }
    if (range) throw out_of_range(i, min, max);
    if (const auto d = whole_number(text, i, min, max)) return static_cast<std::int64_t>(*d);
    throw not_a("an integer", text, i);
}

std::uint64_t string_to_uint(std::string_view text, std::size_t i, std::uint64_t max) {
    bool range = false;
    if (const auto v = parse_all<std::uint64_t>(text, range)) {
        if (*v > max) throw out_of_range(i, 0, max);
        return *v;
    }
    if (range) throw out_of_range(i, 0, max);
    // "-1" is a number, out of an unsigned parameter's range.
    if (const auto d = whole_number(text, i, 0, max)) return static_cast<std::uint64_t>(*d);
    throw not_a("an integer", text, i);
}

double string_to_double(std::string_view text, std::size_t i) {
    bool range = false;
    if (const auto v = parse_all<double>(text, range)) return *v;
    throw not_a("a number", text, i);
}

bool string_to_bool(std::string_view text, std::size_t i) {
    if (text == "true") return true;
    if (text == "false") return false;
    throw not_a("true or false", text, i);
}

}  // namespace detail

Registry& Registry::add_raw(std::string name, RawTask fn) {
    blocking_.erase(name);
    tasks_[std::move(name)] = std::move(fn);
    return *this;
}

Registry& Registry::add_blocking(std::string name, RawTask fn) {
    blocking_.insert(name);
    tasks_[std::move(name)] = std::move(fn);
    return *this;
}

bool Registry::contains(std::string_view name) const { return tasks_.find(name) != tasks_.end(); }

std::vector<std::string> Registry::names() const {
    std::vector<std::string> out;
    for (const auto& [name, fn] : tasks_) out.push_back(name);
    return out;
}

std::string Registry::run(const std::string& name, std::string_view args) const {
    auto it = tasks_.find(name);
    if (it == tasks_.end()) throw ArgumentError("unknown task '" + name + "'");
    // The arguments are unpacked into a zone of this thread, kept from task to
    // task so that a quick task costs no allocation for it (drover-bench W2).
    // A task that runs another through here gets a zone of its own.
    thread_local msgpack::zone reused;
    thread_local bool in_use = false;
    std::optional<msgpack::zone> own;
    msgpack::zone& zone = in_use ? own.emplace() : reused;
    struct Release {
        msgpack::zone& zone;
        bool& in_use;
        bool owner;
        ~Release() {
            if (!owner) return;
            zone.clear();  // keeps its first chunk for the next task
            in_use = false;
        }
    } release{zone, in_use, !in_use};
    in_use = true;
    msgpack::object object;
    if (!args.empty()) {
        try {
            object = unpack_object(zone, args, k_max_data_depth);
        } catch (const UnpackError& e) {
            if (e.trailing) throw ArgumentError("arguments have trailing bytes");
            if (!within_depth_limit(args)) throw ArgumentError(too_deep_message("arguments"));
            throw ArgumentError(std::string("arguments are not valid msgpack: ") + e.what());
        }
    }
    return it->second(object);
}

// The seed task: the sum of n random integers in 1..100.
static std::int64_t sum_random(std::int64_t n, std::optional<std::uint64_t> seed) {
    if (n < 0) throw ArgumentError("n must be >= 0");
    std::mt19937_64 rng(seed ? *seed : std::random_device{}());
    std::uniform_int_distribution<int> dist(1, 100);
    std::int64_t sum = 0;
    for (std::int64_t i = 0; i < n; ++i) sum += dist(rng);
    return sum;
}

void add_builtin_tasks(Registry& registry) {
    registry.add("sum_random", sum_random);
    registry.add("hello", [](std::string name) { return "Hello, " + name + "!"; });
    registry.add_raw("echo", [](const msgpack::object& args) {
        // echo(value): the single argument back, unchanged.
        if (args.type == msgpack::type::ARRAY) {
            if (args.via.array.size != 1)
                throw ArgumentError("expected 1 argument, got " + std::to_string(args.via.array.size));
            return detail::pack_value(args.via.array.ptr[0]);
        }
        return detail::pack_value(args);
    });
    registry.add("sleep_ms", [](std::int64_t ms) {
        if (ms < 0) throw ArgumentError("ms must be >= 0");
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        return ms;
    });
    registry.add("fail", [](std::optional<std::string> message) -> std::int64_t {
        throw std::runtime_error(message.value_or("fail() was called"));
    });
    registry.add("fail_times", [](std::string key, std::int64_t n) -> std::int64_t {
        // For tests of retries: throws on the first n calls for `key` in this process, then returns the call count.
        static std::mutex mutex;
        static std::map<std::string, std::int64_t> calls;
        std::lock_guard lock(mutex);
        const auto call = ++calls[key];
        if (call <= n)
            throw std::runtime_error("fail_times: call " + std::to_string(call) + " of " + std::to_string(n));
        return call;
    });
    registry.add("crash", []() {
        // For tests of failure: the process dies at once, as on a segfault or OOM kill.
        ::kill(::getpid(), SIGKILL);
    });
}

}  // namespace drover
