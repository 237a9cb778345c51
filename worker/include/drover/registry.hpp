// Task registry: names mapped to functions, with msgpack conversion of
// arguments and results.
#pragma once

// A task is any callable. Its arguments arrive as one msgpack array and are
// converted to the callable's parameter types; a trailing std::optional
// parameter may be left out. Its return value is packed with msgpack (void
// packs nil). An exception thrown by the task becomes an `error` outcome
// with the exception's text. A Registry is filled before workers start and
// read concurrently afterwards; it is not modified while workers run.
//
//   drover::Registry tasks;
//   tasks.add("add", [](int a, int b) { return a + b; });

#include <functional>
#include <map>
#include <optional>
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
struct IsOptional : std::false_type {};
template <class T>
struct IsOptional<std::optional<T>> : std::true_type {};

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

template <class T>
T convert_arg(const msgpack::object* items, std::size_t count, std::size_t i, std::size_t arity) {
    if (i >= count) {
        if constexpr (IsOptional<T>::value) {
            return std::nullopt;
        } else {
            throw ArgumentError("expected " + std::to_string(arity) + " argument" + (arity == 1 ? "" : "s") +
                                ", got " + std::to_string(count));
        }
    }
    try {
        return items[i].as<T>();
    } catch (const std::bad_cast&) {
        throw ArgumentError("argument " + std::to_string(i + 1) + " has the wrong type");
    }
}

template <class F, class Args, std::size_t... I>
decltype(auto) call_with(F& fn, [[maybe_unused]] const msgpack::object* items, [[maybe_unused]] std::size_t count,
                         std::index_sequence<I...>) {
    [[maybe_unused]] constexpr std::size_t arity = sizeof...(I);
    // Braced initialisation evaluates the conversions left to right.
    Args args{convert_arg<std::tuple_element_t<I, Args>>(items, count, I, arity)...};
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
                throw ArgumentError("expected at most " + std::to_string(arity) + " argument" +
                                    (arity == 1 ? "" : "s") + ", got " + std::to_string(count));
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

    [[nodiscard]] bool contains(std::string_view name) const;
    [[nodiscard]] std::vector<std::string> names() const;

    // Runs task `name` on msgpack-encoded `args`.
    // Returns: the msgpack-encoded result.
    // Throws: ArgumentError for an unknown task or unusable arguments, and
    // whatever the task throws.
    [[nodiscard]] std::string run(const std::string& name, std::string_view args) const;

private:
    std::map<std::string, RawTask, std::less<>> tasks_;
};

// Adds sum_random, hello, echo, sleep_ms, fail and crash.
void add_builtin_tasks(Registry& registry);

}  // namespace drover
