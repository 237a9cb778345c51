// Task registry: names mapped to functions, with msgpack conversion of
// arguments and results.
#pragma once

// A task is any callable. Its arguments arrive as one msgpack array and are
// converted to the callable's parameter types; a trailing std::optional
// parameter may be left out. Its return value is packed with msgpack (void
// packs nil). A string argument for an integer, floating-point or bool
// parameter is read from its text ("42", "1e6", "true"), as a shell's words
// arrive (drover-producer map). An exception thrown by the task becomes an `error` outcome
// with the exception's text. A Registry is filled before workers start and
// read concurrently afterwards; it is not modified while workers run.
//
//   drover::Registry tasks;
//   tasks.add("add", [](int a, int b) { return a + b; });

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <msgpack.hpp>

namespace drover {

// The function every typed task is wrapped into: msgpack args in, msgpack result out.
using RawTask = std::function<std::string(const msgpack::object& args)>;

// Thrown when arguments do not fit the task; becomes an `error` outcome.
class ArgumentError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

namespace detail {

template <class T>
struct FnTraits : FnTraits<decltype(&T::operator())> {};
template <class C, class R, class... A>
struct FnTraits<R (C::*)(A...) const> {
    using result = R;
    using args = std::tuple<std::decay_t<A>...>;
};
template <class C, class R, class... A>
struct FnTraits<R (C::*)(A...)> : FnTraits<R (C::*)(A...) const> {};
template <class R, class... A>
struct FnTraits<R (*)(A...)> {
    using result = R;
    using args = std::tuple<std::decay_t<A>...>;
};
template <class R, class... A>
struct FnTraits<R(A...)> : FnTraits<R (*)(A...)> {};

template <class T>
struct IsOptional : std::false_type {
    using inner = T;
};
template <class T>
struct IsOptional<std::optional<T>> : std::true_type {
    using inner = T;
};

struct StringBuffer {
    std::string data;
    void write(const char* p, std::size_t n) { data.append(p, n); }
};

template <class T>
std::string pack_value(const T& value) {
    StringBuffer b;
    msgpack::pack(b, value);
    return std::move(b.data);
}

// The arguments a call must give: those before the trailing optionals.
template <class Args, std::size_t... I>
constexpr std::size_t required_args(std::index_sequence<I...>) {
    std::size_t required = 0;
    ((required = IsOptional<std::tuple_element_t<I, Args>>::value ? required : I + 1), ...);
    return required;
}

// "expected 2 arguments", "expected 1 to 2 arguments".
std::string expected_args(std::size_t required, std::size_t arity);
// What a parameter of type T takes, and what an argument is, for errors.
template <class T>
const char* wanted_name() {
    if constexpr (IsOptional<T>::value) return wanted_name<typename IsOptional<T>::inner>();
    else if constexpr (std::is_same_v<T, bool>) return "a boolean";
    else if constexpr (std::is_integral_v<T>) return "an integer";
    else if constexpr (std::is_floating_point_v<T>) return "a number";
    else if constexpr (std::is_convertible_v<std::string, T>) return "a string";
    else return "a value of the parameter's type";
}
const char* msgpack_type_name(const msgpack::object& o);

// A string argument read as a number or boolean (a shell's words are strings):
// argument `i` (0-based) in full, or ArgumentError naming it and the text.
std::int64_t string_to_int(std::string_view text, std::size_t i, std::int64_t min, std::uint64_t max);
std::uint64_t string_to_uint(std::string_view text, std::size_t i, std::uint64_t max);
double string_to_double(std::string_view text, std::size_t i);
bool string_to_bool(std::string_view text, std::size_t i);

template <class V>
V from_string(const msgpack::object& o, std::size_t i) {
    const std::string_view text(o.via.str.ptr, o.via.str.size);
    if constexpr (std::is_same_v<V, bool>) return string_to_bool(text, i);
    else if constexpr (std::is_floating_point_v<V>) return static_cast<V>(string_to_double(text, i));
    else if constexpr (std::is_signed_v<V>)
        return static_cast<V>(string_to_int(text, i, std::numeric_limits<V>::min(), std::numeric_limits<V>::max()));
    else return static_cast<V>(string_to_uint(text, i, std::numeric_limits<V>::max()));
}

template <class T>
T convert_arg(const msgpack::object* items, std::size_t count, std::size_t i, std::size_t required, std::size_t arity) {
    if (i >= count) {
        if constexpr (IsOptional<T>::value) {
            return std::nullopt;
        } else {
            throw ArgumentError(expected_args(required, arity) + ", got " + std::to_string(count));
        }
    }
    using V = typename IsOptional<T>::inner;
    // One type test, on the arguments only that are not already numbers.
    if constexpr (std::is_arithmetic_v<V>)
        if (items[i].type == msgpack::type::STR) return from_string<V>(items[i], i);
    try {
        return items[i].as<T>();
    } catch (const std::bad_cast&) {
        // A whole number written as 1e3 or 1000.0 in JSON arrives as a float.
        if constexpr (std::is_integral_v<V> && !std::is_same_v<V, bool>) {
            const auto type = items[i].type;
            bool whole = type == msgpack::type::POSITIVE_INTEGER || type == msgpack::type::NEGATIVE_INTEGER;
            if (type == msgpack::type::FLOAT64 || type == msgpack::type::FLOAT32) {
                const double d = items[i].via.f64;
                const double bound = std::ldexp(1.0, std::numeric_limits<V>::digits);  // 2^63 for int64
                whole = d == std::trunc(d);
                if (whole && d < bound && d >= (std::is_signed_v<V> ? -bound : 0.0)) return static_cast<V>(d);
            }
            if (whole)
                throw ArgumentError("argument " + std::to_string(i + 1) +
                                    " is out of range: expected an integer from " +
                                    std::to_string(std::numeric_limits<V>::min()) + " to " +
                                    std::to_string(std::numeric_limits<V>::max()));
        }
        throw ArgumentError("argument " + std::to_string(i + 1) + " has the wrong type: expected " + wanted_name<T>() +
                            ", got " + msgpack_type_name(items[i]));
    }
}

template <class F, class Args, std::size_t... I>
decltype(auto) call_with(F& fn, [[maybe_unused]] const msgpack::object* items, [[maybe_unused]] std::size_t count,
                         std::index_sequence<I...> seq) {
    [[maybe_unused]] constexpr std::size_t arity = sizeof...(I);
    [[maybe_unused]] constexpr std::size_t required = required_args<Args>(seq);
    // Braced initialisation evaluates the conversions left to right.
    Args args{convert_arg<std::tuple_element_t<I, Args>>(items, count, I, required, arity)...};
    return std::apply(fn, std::move(args));
}

}  // namespace detail

class Registry {
public:
    // Registers `fn` under `name`, replacing any earlier one. Returns *this.
    template <class F>
    Registry& add(std::string name, F fn) {
        using Traits = detail::FnTraits<std::decay_t<F>>;
        using Args = typename Traits::args;
        using R = typename Traits::result;
        return add_raw(std::move(name), [fn = std::move(fn)](const msgpack::object& args) mutable -> std::string {
            const msgpack::object* items = nullptr;
            std::size_t count = 0;
            if (args.type == msgpack::type::ARRAY) {
                items = args.via.array.ptr;
                count = args.via.array.size;
            } else if (args.type != msgpack::type::NIL) {
                items = &args;  // a single bare argument
                count = 1;
            }
            constexpr std::size_t arity = std::tuple_size_v<Args>;
            if (count > arity)
                throw ArgumentError(
                    detail::expected_args(detail::required_args<Args>(std::make_index_sequence<arity>{}), arity) +
                    ", got " + std::to_string(count));
            if constexpr (std::is_void_v<R>) {
                detail::call_with<decltype(fn), Args>(fn, items, count, std::make_index_sequence<arity>{});
                return detail::pack_value(msgpack::type::nil_t{});
            } else {
                return detail::pack_value(
                    detail::call_with<decltype(fn), Args>(fn, items, count, std::make_index_sequence<arity>{}));
            }
        });
    }

    // Registers a function that takes the decoded arguments and returns msgpack bytes.
    Registry& add_raw(std::string name, RawTask fn);
    // The same for a task that may block for long (a command): it always
    // runs on an executor, never on the worker's I/O thread.
    Registry& add_blocking(std::string name, RawTask fn);

    [[nodiscard]] bool contains(std::string_view name) const;
    // Whether task `name` was added with add_blocking (false at once while none was).
    [[nodiscard]] bool blocking(std::string_view name) const {
        return !blocking_.empty() && blocking_.find(name) != blocking_.end();
    }
    [[nodiscard]] std::vector<std::string> names() const;

    // Runs task `name` on msgpack-encoded `args`.
    // Returns: the msgpack-encoded result.
    // Throws: ArgumentError for an unknown task or unusable arguments, and
    // whatever the task throws.
    [[nodiscard]] std::string run(const std::string& name, std::string_view args) const;

private:
    std::map<std::string, RawTask, std::less<>> tasks_;
    std::set<std::string, std::less<>> blocking_;
};

// Adds sum_random, hello, echo, sleep_ms, fail and crash.
void add_builtin_tasks(Registry& registry);

}  // namespace drover
