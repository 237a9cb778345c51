// Task registry and the built-in tasks.
#include "drover/worker/registry.hpp"
#include "internal/unpack.hpp"

#include <chrono>
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

}  // namespace detail

Registry& Registry::add_raw(std::string name, RawTask fn) {
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
