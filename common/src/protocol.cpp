// Encoding and bounded decoding of DRV4 message bodies.
#include "drover/common/protocol.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <optional>
#include <type_traits>

#include <msgpack.hpp>

namespace drover::proto {

namespace {

// msgpack's packer writes into anything with write(), each header and each
// body separately, a few bytes at a time. This writes into spare room that
// it grows without zeroing, where std::string's append is out of line and
// its resize zeroes every byte it adds (both show in profiles of
// drover-bench W1 and W6), and hands its bytes to a ZeroMQ message without a
// copy, or copies them into a string.
class StringBuffer {
public:
    StringBuffer() = default;
    ~StringBuffer() { std::free(data_); }
    StringBuffer(const StringBuffer&) = delete;
    StringBuffer& operator=(const StringBuffer&) = delete;

    void reserve(std::size_t bytes) {
        if (bytes > capacity_) grow_to(bytes);
    }
    [[gnu::always_inline]] void write(const char* p, std::size_t n) {
        if (__builtin_expect(n > capacity_ - used_, 0)) grow_to(std::max(capacity_ * 2, used_ + n + 64));
        std::memcpy(data_ + used_, p, n);
        used_ += n;
    }
    std::string take() { return std::string(data_ ? data_ : "", used_); }
    zmq::message_t take_message() {
        if (used_ == 0) return zmq::message_t();
        if (used_ < k_copied_below) return zmq::message_t(data_, used_);
        zmq::message_t m(
            data_, used_, [](void* data, void*) { std::free(data); }, nullptr);
        data_ = nullptr;
        capacity_ = used_ = 0;
        return m;
    }

private:
    // A message this small is copied: cheaper than the bookkeeping of one
    // that owns its buffer, and ZeroMQ keeps up to 33 bytes within the message.
    static constexpr std::size_t k_copied_below = 64;

    [[gnu::noinline, gnu::cold]] void grow_to(std::size_t bytes) {
        auto* p = static_cast<char*>(std::realloc(data_, bytes));
        if (!p) throw std::bad_alloc();
        data_ = p;
        capacity_ = bytes;
    }

    char* data_ = nullptr;
    std::size_t capacity_ = 0;
    std::size_t used_ = 0;
};

// Writes msgpack into a StringBuffer, each value in the form msgpack-c's
// packer picks (the smallest that holds it), with the packer's names. Its
// calls inline into the encoders: msgpack-c's packer writes each header
// through an out-of-line call, the largest cost of encoding a DISPATCH or a
// RESULT batch (callgrind of drover-broker and drover-worker under W1).
// tests/unit/protocol_test.cpp holds its bytes to msgpack-c's packer's at
// every size boundary; the golden vectors (tests/vectors) to the protocol's.
class Packer {
public:
    explicit Packer(StringBuffer& b) : b_(b) {}

    [[gnu::always_inline]] void pack_map(std::uint32_t n) { container(n, 0x80, 0xde); }
    [[gnu::always_inline]] void pack_array(std::uint32_t n) { container(n, 0x90, 0xdc); }
    [[gnu::always_inline]] void pack_str(std::uint32_t n) {
        if (n < 32) return byte(static_cast<unsigned char>(0xa0 | n));
        sized(n, 0xd9);
    }
    [[gnu::always_inline]] void pack_bin(std::uint32_t n) { sized(n, 0xc4); }
    [[gnu::always_inline]] void pack_str_body(const char* p, std::uint32_t n) { b_.write(p, n); }
    [[gnu::always_inline]] void pack_bin_body(const char* p, std::uint32_t n) { b_.write(p, n); }
    [[gnu::always_inline]] void pack(bool v) { byte(v ? 0xc3 : 0xc2); }
    [[gnu::always_inline]] void pack(const std::string& s) {
        pack_str(static_cast<std::uint32_t>(s.size()));
        pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
    }
    template <class U, std::enable_if_t<std::is_integral_v<U> && std::is_unsigned_v<U>, int> = 0>
    [[gnu::always_inline]] void pack(U v) {
        unsigned_(static_cast<std::uint64_t>(v));
    }
    template <class I, std::enable_if_t<std::is_integral_v<I> && std::is_signed_v<I>, int> = 0>
    [[gnu::always_inline]] void pack(I v) {
        const auto d = static_cast<std::int64_t>(v);
        if (d >= 0) return unsigned_(static_cast<std::uint64_t>(d));
        if (d >= -32) return byte(static_cast<unsigned char>(d));  // negative fixint
        if (d >= INT8_MIN) return tagged(0xd0, static_cast<std::uint64_t>(d), 1);
        if (d >= INT16_MIN) return tagged(0xd1, static_cast<std::uint64_t>(d), 2);
        if (d >= INT32_MIN) return tagged(0xd2, static_cast<std::uint64_t>(d), 4);
        tagged(0xd3, static_cast<std::uint64_t>(d), 8);
    }

private:
    [[gnu::always_inline]] void byte(unsigned char c) {
        const char ch = static_cast<char>(c);
        b_.write(&ch, 1);
    }
    // `tag`, then the low `n` bytes of `v`, big-endian.
    [[gnu::always_inline]] void tagged(unsigned char tag, std::uint64_t v, std::size_t n) {
        char bytes[9];
        bytes[0] = static_cast<char>(tag);
        for (std::size_t i = 0; i < n; ++i) bytes[1 + i] = static_cast<char>(v >> (8 * (n - 1 - i)));
        b_.write(bytes, 1 + n);
    }
    [[gnu::always_inline]] void unsigned_(std::uint64_t v) {
        if (v < 128) return byte(static_cast<unsigned char>(v));
        if (v < 0x100) return tagged(0xcc, v, 1);
        if (v < 0x10000) return tagged(0xcd, v, 2);
        if (v < 0x100000000) return tagged(0xce, v, 4);
        tagged(0xcf, v, 8);
    }
    // A map's or array's header: fix form below 16, then 16 and 32 bits.
    [[gnu::always_inline]] void container(std::uint32_t n, unsigned char fix, unsigned char tag16) {
        if (n < 16) return byte(static_cast<unsigned char>(fix | n));
        if (n < 0x10000) return tagged(tag16, n, 2);
        tagged(static_cast<unsigned char>(tag16 + 1), n, 4);
    }
    // A str's (tag8 0xd9) or bin's (0xc4) header of 8, 16 or 32 bits.
    [[gnu::always_inline]] void sized(std::uint32_t n, unsigned char tag8) {
        if (n < 0x100) return tagged(tag8, n, 1);
        if (n < 0x10000) return tagged(static_cast<unsigned char>(tag8 + 1), n, 2);
        tagged(static_cast<unsigned char>(tag8 + 2), n, 4);
    }

    StringBuffer& b_;
};

// About the size of a batch's encoding, for StringBuffer::reserve: each
// item's `item_size`, and the shared field once (an item's own where it
// differs from the first's). Not a bound, which would be several times the
// size of small tasks: a larger encoding grows the buffer.
template <class T, class Field, class ItemSize>
std::size_t encoded_size_hint(const T* items, std::size_t count, Field field, ItemSize&& item_size) {
    std::size_t bytes = 32;
    const std::string_view first = count ? std::string_view(items[0].*field) : std::string_view();
    bytes += first.size();
    for (std::size_t i = 0; i < count; ++i) {
        bytes += item_size(items[i]);
        if (std::string_view(items[i].*field) != first) bytes += (items[i].*field).size() + 16;
    }
    return bytes;
}

[[gnu::always_inline]] inline void pack_str(Packer& pk, std::string_view s) {
    pk.pack_str(static_cast<std::uint32_t>(s.size()));
    pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

[[gnu::always_inline]] inline void pack_bin(Packer& pk, std::string_view s) {
    pk.pack_bin(static_cast<std::uint32_t>(s.size()));
    pk.pack_bin_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

// A key is a constant of fewer than 32 bytes: its fixstr header and its bytes
// go in one write of a constant size, which the compiler turns into a few
// stores (nine keys a task).
template <std::size_t N>
[[gnu::always_inline]] inline void pack_key(Packer& pk, const char (&k)[N]) {
    static_assert(N - 1 < 32, "a key is a fixstr");
    char bytes[N];
    bytes[0] = static_cast<char>(0xa0 | (N - 1));
    std::memcpy(bytes + 1, k, N - 1);
    pk.pack_str_body(bytes, static_cast<std::uint32_t>(N));  // raw bytes: the header is among them
}

void pack_strings(Packer& pk, const std::vector<std::string>& v) {
    pk.pack_array(static_cast<std::uint32_t>(v.size()));
    for (const auto& s : v) pack_str(pk, s);
}

// A field at its default is left out (the decoder restores it), and so is a
// task's reply_to or an outcome's worker equal to the batch's: most batches
// carry one of each, and a task is then three or four fields, not nine.
template <class T>
void pack_task(Packer& pk, const T& t, std::string_view batch_reply_to) {
    const bool own_reply_to = t.reply_to != batch_reply_to;
    pk.pack_map(2 + !t.args.empty() + (t.attempt != 0) + (t.max_attempts != k_default_max_attempts) +
                (t.timeout_ms != 0) + own_reply_to + t.detached + t.retry_on_error + !t.secret.empty() +
                (t.token != 0) + t.start);
    pack_key(pk, "id");
    pack_str(pk, t.id);
    pack_key(pk, "name");
    pack_str(pk, t.name);
    if (!t.args.empty()) {
        pack_key(pk, "args");
        pack_bin(pk, t.args);
    }
    if (t.attempt != 0) {
        pack_key(pk, "attempt");
        pk.pack(t.attempt);
    }
    if (t.max_attempts != k_default_max_attempts) {
        pack_key(pk, "max_attempts");
        pk.pack(t.max_attempts);
    }
    if (t.timeout_ms != 0) {
        pack_key(pk, "timeout_ms");
        pk.pack(t.timeout_ms);
    }
    if (own_reply_to) {
        pack_key(pk, "reply_to");
        pack_str(pk, t.reply_to);
    }
    if (t.detached) {
        pack_key(pk, "detached");
        pk.pack(true);
    }
    if (t.retry_on_error) {
        pack_key(pk, "retry_on_error");
        pk.pack(true);
    }
    if (!t.secret.empty()) {
        pack_key(pk, "secret");
        pack_bin(pk, t.secret);
    }
    if (t.token != 0) {
        pack_key(pk, "token");
        pk.pack(t.token);
    }
    if (t.start) {
        pack_key(pk, "start");
        pk.pack(true);
    }
}

// {list: [item, ...], shared: str}, a batch whose items share the value of
// `field`: written once as `shared`, each item writing its own only where it
// differs (pack_item(pk, item, shared)). The shared value is the first
// item's, or none if some item has none (it could not be told apart).
template <std::size_t N, std::size_t M, class T, class Field, class PackItem>
void pack_batch(Packer& pk, const char (&list)[N], const T* items, std::size_t count, Field field,
                const char (&shared_key)[M], PackItem&& pack_item) {
    std::string_view shared = count ? std::string_view(items[0].*field) : std::string_view();
    for (std::size_t i = 0; i < count && !shared.empty(); ++i)
        if ((items[i].*field).empty()) shared = {};
    pk.pack_map(shared.empty() ? 1 : 2);
    pack_key(pk, list);
    pk.pack_array(static_cast<std::uint32_t>(count));
    for (std::size_t i = 0; i < count; ++i) pack_item(pk, items[i], shared);
    if (!shared.empty()) {
        pack_key(pk, shared_key);
        pack_str(pk, shared);
    }
}

// {tasks: [Task], reply_to: str}
template <class T>
void pack_tasks(Packer& pk, const T* tasks, std::size_t count) {
    pack_batch(pk, "tasks", tasks, count, &T::reply_to, "reply_to", pack_task<T>);
}

void pack_outcome(Packer& pk, const Outcome& o, std::string_view batch_worker) {
    const bool own_worker = o.worker != batch_worker;
    pk.pack_map(2 + !o.task.empty() + !o.result.empty() + !o.error.empty() + (o.attempt != 0) + own_worker +
                (o.elapsed_us != 0) + (o.token != 0));
    pack_key(pk, "id");
    pack_str(pk, o.id);
    if (!o.task.empty()) {
        pack_key(pk, "task");
        pack_str(pk, o.task);
    }
    pack_key(pk, "status");
    pack_str(pk, status_name(o.status));
    if (!o.result.empty()) {
        pack_key(pk, "result");
        pack_bin(pk, o.result);
    }
    if (!o.error.empty()) {
        pack_key(pk, "error");
        pack_str(pk, o.error);
    }
    if (o.attempt != 0) {
        pack_key(pk, "attempt");
        pk.pack(o.attempt);
    }
    if (own_worker) {
        pack_key(pk, "worker");
        pack_str(pk, o.worker);
    }
    if (o.elapsed_us != 0) {
        pack_key(pk, "elapsed_us");
        pk.pack(o.elapsed_us);
    }
    if (o.token != 0) {
        pack_key(pk, "token");
        pk.pack(o.token);
    }
}

// Decoding ------------------------------------------------------------

// Thrown inside this file only, caught by decode_body.
struct Invalid {
    DecodeError error;
};

[[noreturn]] void invalid(DecodeError e = DecodeError::bad_body) { throw Invalid{e}; }

// Unpacks `body` with msgpack-c as one bounded msgpack value and hands it to
// `f` (is_valid_msgpack; the decoders read with the Cursor below, by the
// same rules). No container may claim more elements than the body has
// bytes: that stops a five-byte body from making the decoder allocate for
// four billion elements.
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

// Decoding bodies without building a msgpack::object tree, whose nodes and
// zone allocations would be the producer's largest cost (profile of
// drover-bench W1). The same rules in two passes: the first walks the whole
// body as msgpack-c would, with the same limits and the same errors (a cut
// or an invalid byte is bad_body, a container claiming more elements than
// the body has bytes or nested deeper than the limit is too_deep, bytes
// after the value are trailing_bytes); the second reads the fields from a
// body known to be well formed.
class Cursor {
public:
    // `unchecked`: pass 2 without pass 1, for the one-pass attempt of
    // decode_checked; the reads then check what pass 1 would have (each
    // container's size, the depth of what they skip), more strictly if
    // anything, never less.
    explicit Cursor(std::string_view body, bool unchecked = false)
        : p_(reinterpret_cast<const unsigned char*>(body.data())),
          end_(p_ + body.size()),
          limit_(body.size()),
          unchecked_(unchecked) {}

    [[nodiscard]] std::size_t left() const { return static_cast<std::size_t>(end_ - p_); }

    // Pass 1: steps over one value, checking it; a container at nesting
    // level L (the body's own map is level 1) may hold no more than `limit`
    // elements and L may not pass `max_depth` (at most k_max_depth).
    // A loop over a stack of counts, not a recursion: it runs for every
    // field of every task.
    void check_value(std::size_t limit, std::size_t max_depth) {
        std::size_t left_at[k_max_depth + 1];  // values still to read at each level
        std::size_t level = 0;
        left_at[0] = 1;
        while (true) {
            while (left_at[level] == 0) {
                if (level == 0) return;
                --level;
            }
            --left_at[level];
            const unsigned char b = take(1)[0];
            if (b <= 0x7f || b >= 0xe0) continue;  // fixint, negative fixint
            if ((b & 0xe0) == 0xa0) {              // fixstr
                skip_bytes(b & 0x1f);
                continue;
            }
            std::size_t claimed, values;  // elements claimed (pairs for a map), values to read
            if ((b & 0xf0) == 0x90) {
                claimed = values = b & 0x0f;
            } else if ((b & 0xf0) == 0x80) {
                claimed = b & 0x0f;
                values = claimed * 2;
            } else {
                switch (b) {
                    case 0xc0:
                    case 0xc2:
                    case 0xc3: continue;  // nil, false, true
                    case 0xcc:
                    case 0xd0: skip_bytes(1); continue;
                    case 0xcd:
                    case 0xd1: skip_bytes(2); continue;
                    case 0xce:
                    case 0xd2:
                    case 0xca: skip_bytes(4); continue;
                    case 0xcf:
                    case 0xd3:
                    case 0xcb: skip_bytes(8); continue;
                    case 0xd9:
                    case 0xc4: skip_bytes(be(1)); continue;  // str 8, bin 8
                    case 0xda:
                    case 0xc5: skip_bytes(be(2)); continue;
                    case 0xdb:
                    case 0xc6: skip_bytes(be(4)); continue;
                    case 0xd4: skip_bytes(2); continue;  // fixext: type + data
                    case 0xd5: skip_bytes(3); continue;
                    case 0xd6: skip_bytes(5); continue;
                    case 0xd7: skip_bytes(9); continue;
                    case 0xd8: skip_bytes(17); continue;
                    case 0xc7: skip_bytes(be(1) + 1); continue;  // ext: length, type, data
                    case 0xc8: skip_bytes(be(2) + 1); continue;
                    case 0xc9: skip_bytes(be(4) + 1); continue;
                    case 0xdc: claimed = values = be(2); break;
                    case 0xdd: claimed = values = be(4); break;
                    case 0xde:
                        claimed = be(2);
                        values = claimed * 2;
                        break;
                    case 0xdf:
                        claimed = be(4);
                        values = claimed * 2;
                        break;
                    default: invalid();  // 0xc1, never used
                }
            }
            // As msgpack-c's limits see a container: its size first, then
            // its depth, before any element is read.
            if (claimed > limit || level + 1 > max_depth) invalid(DecodeError::too_deep);
            left_at[++level] = values;
        }
    }

    // Pass 2, on a checked body: each reads one value of its type, or
    // rejects the body as bad_body.
    [[gnu::always_inline]] std::size_t map() {
        const unsigned char b = peek();
        if ((b & 0xf0) == 0x80) return ++p_, sized(b & 0x0f);
        if (b == 0xde) return ++p_, sized(be(2));
        if (b == 0xdf) return ++p_, sized(be(4));
        invalid();
    }
    [[gnu::always_inline]] std::size_t array() {
        const unsigned char b = peek();
        if ((b & 0xf0) == 0x90) return ++p_, sized(b & 0x0f);
        if (b == 0xdc) return ++p_, sized(be(2));
        if (b == 0xdd) return ++p_, sized(be(4));
        invalid();
    }
    // A str, or nullopt (and nothing read) if the value is of another type.
    [[gnu::always_inline]] std::optional<std::string_view> maybe_str() {
        const unsigned char b = peek();
        std::size_t n;
        if ((b & 0xe0) == 0xa0) n = (++p_, b & 0x1f);
        else if (b == 0xd9) n = (++p_, be(1));
        else if (b == 0xda) n = (++p_, be(2));
        else if (b == 0xdb) n = (++p_, be(4));
        else return std::nullopt;
        return bytes(n);
    }
    [[gnu::always_inline]] std::string_view str() {
        if (auto s = maybe_str()) return *s;
        invalid();
    }
    [[gnu::always_inline]] std::string_view bin_or_str() {
        const unsigned char b = peek();
        if (b == 0xc4) return ++p_, bytes(be(1));
        if (b == 0xc5) return ++p_, bytes(be(2));
        if (b == 0xc6) return ++p_, bytes(be(4));
        return str();
    }
    template <class U>
    [[gnu::always_inline]] U uint() {
        const Integer v = integer();
        if (v.negative || v.u > std::numeric_limits<U>::max()) invalid();
        return static_cast<U>(v.u);
    }
    std::int64_t int64() {
        const Integer v = integer();
        if (v.negative) return v.i;
        if (v.u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) invalid();
        return static_cast<std::int64_t>(v.u);
    }
    [[gnu::always_inline]] bool boolean() {
        const unsigned char b = peek();
        if (b != 0xc2 && b != 0xc3) invalid();
        return ++p_, b == 0xc3;
    }
    // Where the cursor is, to read a value again after a failed read.
    [[nodiscard]] const unsigned char* mark() const { return p_; }
    void reset(const unsigned char* at) { p_ = at; }
    // The kind of the next value, for messages ("a float", "a string").
    const char* kind() const {
        const unsigned char b = peek();
        if (b <= 0x7f || (b >= 0xcc && b <= 0xcf)) return "an unsigned integer";
        if (b >= 0xe0 || (b >= 0xd0 && b <= 0xd3)) return "a signed integer";
        if ((b & 0xe0) == 0xa0 || (b >= 0xd9 && b <= 0xdb)) return "a string";
        if ((b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd) return "an array";
        if ((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf) return "a map";
        if (b == 0xc0) return "nil";
        if (b == 0xc2 || b == 0xc3) return "a boolean";
        if (b == 0xca || b == 0xcb) return "a float";
        if (b >= 0xc4 && b <= 0xc6) return "bytes";
        return "an extension";
    }
    // Steps over a value the reader does not want. Unchecked, as if it were
    // nested as deep as any value is read (k_read_depth), and with the
    // size limit.
    void skip() {
        if (unchecked_) check_value(limit_, k_max_depth - k_read_depth);
        else check_value(std::numeric_limits<std::size_t>::max(), k_max_depth);
    }

private:
    // Any integer format, as msgpack-c reads it: a signed format holding a
    // value >= 0 is a positive integer too.
    struct Integer {
        bool negative;
        std::uint64_t u;  // when not negative
        std::int64_t i;   // when negative
    };
    [[gnu::always_inline]] Integer integer() {
        const unsigned char b = peek();
        if (b <= 0x7f) return ++p_, Integer{false, b, 0};
        if (b >= 0xe0) return ++p_, Integer{true, 0, static_cast<std::int8_t>(b)};  // negative fixint
        if (b >= 0xcc && b <= 0xcf) return ++p_, Integer{false, be(std::size_t{1} << (b - 0xcc)), 0};
        if (b < 0xd0 || b > 0xd3) invalid();
        ++p_;
        const std::size_t bits = std::size_t{8} << (b - 0xd0);
        const std::uint64_t raw = be(bits / 8);
        if (!(raw >> (bits - 1))) return Integer{false, raw, 0};
        const auto shift = static_cast<unsigned>(64 - bits);  // sign-extend
        return Integer{true, 0, static_cast<std::int64_t>(raw << shift) >> shift};
    }
    // The containers around any value the decoders read or skip: a body's
    // map, a batch's list, an item's map.
    static constexpr std::size_t k_read_depth = 3;
    static_assert(k_max_depth > k_read_depth);

    [[gnu::always_inline]] unsigned char peek() const {
        if (p_ == end_) invalid();  // cut short
        return *p_;
    }
    // A container's size, held to pass 1's limit when unchecked.
    [[gnu::always_inline]] std::size_t sized(std::size_t n) const {
        if (unchecked_ && n > limit_) invalid(DecodeError::too_deep);
        return n;
    }
    [[gnu::always_inline]] const unsigned char* take(std::size_t n) {
        if (n > left()) invalid();  // cut short
        const auto* at = p_;
        p_ += n;
        return at;
    }
    void skip_bytes(std::size_t n) { (void)take(n); }
    [[gnu::always_inline]] std::string_view bytes(std::size_t n) { return {reinterpret_cast<const char*>(take(n)), n}; }
    [[gnu::always_inline]] std::size_t be(std::size_t n) {  // a big-endian unsigned of n bytes
        const auto* b = take(n);
        if (n == 8 && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) {  // a token: one load, not eight
            std::uint64_t v;
            std::memcpy(&v, b, sizeof v);
            return static_cast<std::size_t>(__builtin_bswap64(v));
        }
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < n; ++i) v = v << 8 | b[i];
        return static_cast<std::size_t>(v);
    }
    const unsigned char* p_;
    const unsigned char* end_;
    std::size_t limit_;  // elements a container may claim: the body's size
    bool unchecked_;
};

// Whether a key read from a body is the constant `name`, compared at a
// constant size.
template <std::size_t N>
bool named(std::string_view k, const char (&name)[N]) {
    return k.size() == N - 1 && std::memcmp(k.data(), name, N - 1) == 0;
}

// Reads `body` with `f(Cursor&)` in one pass, checking as it reads; a body
// that pass does not take goes through both passes: checked (pass 1), then
// read (pass 2), which give msgpack-c's verdict on its form. The one pass
// takes only what the two take, with the same values, and saves walking
// each body twice on each of its hops.
template <class T, class F>
Decoded<T> decode_checked(std::string_view body, F&& f) noexcept {
    try {
        Cursor c(body, /*unchecked=*/true);
        T value = f(c);
        if (c.left() == 0) return Decoded<T>(std::move(value));
    } catch (...) {  // Invalid, bad_alloc: the two passes say which
    }
    try {
        Cursor check(body);
        check.check_value(body.size(), k_max_depth);
        if (check.left() != 0) return DecodeError::trailing_bytes;
        Cursor c(body);
        return Decoded<T>(f(c));
    } catch (const Invalid& e) {
        return e.error;
    } catch (...) {  // bad_alloc
        return DecodeError::bad_body;
    }
}

// Calls f(key) for each entry of a map; f reads or skips the value, and
// returns whether it read it.
template <class F>
void read_fields(Cursor& c, F&& f) {
    const std::size_t n = c.map();
    for (std::size_t i = 0; i < n; ++i) {
        const auto key = c.maybe_str();
        if (!key) c.skip();  // a key that is not a string matches no field
        if (!key || !f(*key)) c.skip();
    }
}

// A batch's body, {list: [item, ...], shared: str} (a list given twice adds
// both; other keys ignored): each item read in place by `read_item`. Returns
// the shared value, "" if absent; give it to the items with fill_shared.
template <std::size_t N, std::size_t M, class T, class Read>
std::string_view read_batch(Cursor& c, const char (&list)[N], std::vector<T>& out, Read&& read_item,
                            const char (&shared_key)[M]) {
    bool has = false;
    std::string_view shared;
    read_fields(c, [&](std::string_view k) {
        if (named(k, shared_key)) {
            shared = c.str();
            return true;
        }
        if (!named(k, list)) return false;
        const std::size_t n = c.array();
        out.reserve(out.size() + n);
        for (std::size_t i = 0; i < n; ++i) read_item(c, out.emplace_back());  // in place: no move of its strings
        has = true;
        return true;
    });
    if (!has) invalid();
    return shared;
}

// Each item without a value of its own for `field` takes the batch's.
template <class T, class S>
void fill_shared(std::vector<T>& items, S T::*field, std::string_view shared) {
    for (auto& item : items)
        if ((item.*field).empty()) item.*field = shared;
}

std::vector<std::string> read_strings(Cursor& c) {
    const std::size_t n = c.array();
    std::vector<std::string> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) out.emplace_back(c.str());
    return out;
}

// The fields of a task, into `t`; `has_id`, `has_name` say which were
// there. Keys are told apart by their length first: a DISPATCH's worker and
// the broker at SUBMIT read every field of every task. `start` is a
// DISPATCH's field only (in a SUBMIT, an unknown key, skipped).
template <bool Dispatch>
void read_task_fields(Cursor& c, Task& t, bool& has_id, bool& has_name) {
    read_fields(c, [&](std::string_view k) {
        switch (k.size()) {
            case 2:
                if (!named(k, "id")) return false;
                t.id = c.str();
                has_id = true;
                return true;
            case 4:
                if (named(k, "name")) {
                    t.name = c.str();
                    has_name = true;
                    return true;
                }
                if (!named(k, "args")) return false;
                t.args = c.bin_or_str();
                return true;
            case 5:
                if (named(k, "token")) {
                    t.token = c.uint<std::uint64_t>();
                    return true;
                }
                if (!Dispatch || !named(k, "start")) return false;
                t.start = c.boolean();
                return true;
            case 6:
                if (!named(k, "secret")) return false;
                t.secret = c.bin_or_str();
                return true;
            case 7:
                if (!named(k, "attempt")) return false;
                t.attempt = c.uint<std::uint32_t>();
                return true;
            case 8:
                if (named(k, "reply_to")) {
                    t.reply_to = c.str();
                    return true;
                }
                if (!named(k, "detached")) return false;
                t.detached = c.boolean();
                return true;
            case 10:
                if (!named(k, "timeout_ms")) return false;
                t.timeout_ms = c.uint<std::uint32_t>();
                return true;
            case 12:
                if (!named(k, "max_attempts")) return false;
                t.max_attempts = c.uint<std::uint32_t>();
                return true;
            case 14:
                if (!named(k, "retry_on_error")) return false;
                t.retry_on_error = c.boolean();
                return true;
            default: return false;
        }
    });
}

void read_task(Cursor& c, Task& t) {
    bool has_id = false, has_name = false;
    read_task_fields<true>(c, t, has_id, has_name);
    if (!has_id || !has_name || t.id.empty()) invalid();
}

// One field of a SUBMIT's task, read by `read` if its value has the right
// form (`expected` says which); otherwise skipped, and the first such
// problem of the task kept.
template <class Read>
void read_or_note(Cursor& c, Task& t, const char* field, const char* expected, Read&& read) {
    const auto* at = c.mark();
    try {
        read();
        return;
    } catch (const Invalid&) {}
    c.reset(at);
    if (t.problem.empty()) t.problem = std::string("field '") + field + "': expected " + expected + ", got " + c.kind();
    c.skip();
}

// Task::problem for a task read without one: the first required field that
// is missing or empty, or a secret of the wrong size.
void note_missing(Task& t, bool has_id, bool has_name);

// A SUBMIT's task: the fields as read_task reads them, but a field of the
// wrong form is a problem of this task alone (Task::problem), not of the body.
void read_submitted_task_by_field(Cursor& c, Task& t) {
    bool has_id = false, has_name = false;
    read_fields(c, [&](std::string_view k) {
        if (named(k, "id")) {
            has_id = true;
            const auto* at = c.mark();
            if (auto id = c.maybe_str()) {
                t.id = *id;
            } else {
                try {  // an integer id is named by its text in the rejection
                    t.id = std::to_string(c.int64());
                } catch (const Invalid&) {}
                c.reset(at);
                if (t.problem.empty()) t.problem = std::string("field 'id': expected a string, got ") + c.kind();
                c.skip();
            }
        } else if (named(k, "name")) {
            has_name = true;
            read_or_note(c, t, "name", "a string", [&] { t.name = c.str(); });
        } else if (named(k, "args")) {
            read_or_note(c, t, "args", "bytes (msgpack)", [&] { t.args = c.bin_or_str(); });
        } else if (named(k, "attempt")) {
            read_or_note(c, t, "attempt", "an unsigned 32-bit integer", [&] { t.attempt = c.uint<std::uint32_t>(); });
        } else if (named(k, "max_attempts")) {
            read_or_note(c, t, "max_attempts", "an unsigned 32-bit integer",
                         [&] { t.max_attempts = c.uint<std::uint32_t>(); });
        } else if (named(k, "timeout_ms")) {
            read_or_note(c, t, "timeout_ms", "an unsigned 32-bit integer",
                         [&] { t.timeout_ms = c.uint<std::uint32_t>(); });
        } else if (named(k, "reply_to")) {
            read_or_note(c, t, "reply_to", "a string", [&] { t.reply_to = c.str(); });
        } else if (named(k, "detached")) {
            read_or_note(c, t, "detached", "a boolean", [&] { t.detached = c.boolean(); });
        } else if (named(k, "retry_on_error")) {
            read_or_note(c, t, "retry_on_error", "a boolean", [&] { t.retry_on_error = c.boolean(); });
        } else if (named(k, "secret")) {
            read_or_note(c, t, "secret", "bytes", [&] { t.secret = c.bin_or_str(); });
        } else if (named(k, "token")) {
            read_or_note(c, t, "token", "an unsigned integer", [&] { t.token = c.uint<std::uint64_t>(); });
        } else {
            return false;
        }
        return true;
    });
    note_missing(t, has_id, has_name);
}

// A SUBMIT's task read as a DISPATCH's is, in one pass; only a task with a
// field of the wrong form is read again field by field, to name the field
// (read_submitted_task_by_field).
void read_submitted_task(Cursor& c, Task& t) {
    const auto* at = c.mark();
    bool has_id = false, has_name = false;
    try {
        read_task_fields<false>(c, t, has_id, has_name);
    } catch (const Invalid&) {
        c.reset(at);
        t = Task{};
        read_submitted_task_by_field(c, t);
        return;
    }
    note_missing(t, has_id, has_name);
}

void note_missing(Task& t, bool has_id, bool has_name) {
    if (!t.problem.empty()) return;
    if (!has_id) t.problem = "field 'id' is missing";
    else if (t.id.empty()) t.problem = "field 'id': expected a non-empty string, got an empty one";
    else if (!has_name) t.problem = "field 'name' is missing";
    else if (t.name.empty()) t.problem = "field 'name': expected a non-empty string, got an empty one";
    else if (t.secret.size() != k_task_secret_bytes)
        t.problem = t.secret.empty() ? "field 'secret' is missing (a task needs its producer's 16-byte secret)"
                                     : "field 'secret': expected 16 bytes, got " + std::to_string(t.secret.size());
}

template <class O>  // Outcome or OutcomeView
void read_outcome(Cursor& c, O& r) {
    bool has_id = false, has_status = false;
    // Keys told apart by their length first, as in read_task_fields.
    read_fields(c, [&](std::string_view k) {
        switch (k.size()) {
            case 2:
                if (!named(k, "id")) return false;
                r.id = c.str();
                has_id = true;
                return true;
            case 4:
                if (!named(k, "task")) return false;
                r.task = c.str();
                return true;
            case 5:
                if (named(k, "error")) {
                    r.error = c.str();
                    return true;
                }
                if (!named(k, "token")) return false;
                r.token = c.uint<std::uint64_t>();
                return true;
            case 6:
                if (named(k, "status")) {
                    auto s = parse_status(c.str());
                    if (!s) invalid();
                    r.status = *s;
                    has_status = true;
                    return true;
                }
                if (named(k, "result")) {
                    r.result = c.bin_or_str();
                    return true;
                }
                if (!named(k, "worker")) return false;
                r.worker = c.str();
                return true;
            case 7:
                if (!named(k, "attempt")) return false;
                r.attempt = c.uint<std::uint32_t>();
                return true;
            case 10:
                if (!named(k, "elapsed_us")) return false;
                r.elapsed_us = c.uint<std::uint64_t>();
                return true;
            default: return false;
        }
    });
    if (!has_id || !has_status) invalid();
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
        case Command::give_back: return "RETURN";
        case Command::submit: return "SUBMIT";
        case Command::accepted: return "ACCEPTED";
        case Command::rejected: return "REJECTED";
        case Command::settle: return "SETTLE";
        case Command::cancel: return "CANCEL";
        case Command::status: return "STATUS";
        case Command::status_reply: return "STATUS_REPLY";
        case Command::settled: return "SETTLED";
        case Command::result: return "RESULT";
        case Command::error: return "ERROR";
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
        case DecodeError::wrong_version: return "wrong_version";
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
    if (std::memcmp(p, k_protocol.data(), 4) != 0)
        return std::memcmp(p, k_protocol.data(), 3) == 0 ? DecodeError::wrong_version : DecodeError::bad_header;
    const auto c = static_cast<Command>(p[4]);
    if (std::string_view(command_name(c)) == "?") return DecodeError::unknown_command;
    return c;
}

std::string encode(const Hello& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(8 + (m.held > 0) + !m.lost_key.empty());
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
    pack_key(pk, "max_message_bytes");
    pk.pack(m.max_message_bytes);
    if (m.held > 0) {
        pack_key(pk, "held");
        pk.pack(m.held);
    }
    if (!m.lost_key.empty()) {
        pack_key(pk, "lost_key");
        pack_bin(pk, m.lost_key);
    }
    return b.take();
}

std::string encode(const Ready& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(1 + (m.starts != 0) + !m.run_ns.empty());
    pack_key(pk, "credits");
    pk.pack(m.credits);
    if (m.starts != 0) {
        pack_key(pk, "starts");
        pk.pack(m.starts);
    }
    if (!m.run_ns.empty()) {
        pack_key(pk, "run_ns");
        pk.pack_map(static_cast<std::uint32_t>(m.run_ns.size()));
        for (const auto& [name, ns] : m.run_ns) {
            pk.pack(name);
            pk.pack(ns);
        }
    }
    return b.take();
}

std::string encode(const Lost& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(m.key.empty() ? 1 : 2);
    pack_key(pk, "worker");
    pack_str(pk, m.worker);
    if (!m.key.empty()) {
        pack_key(pk, "key");
        pack_bin(pk, m.key);
    }
    return b.take();
}

std::string encode(const Tasks& m) {
    StringBuffer b;
    Packer pk(b);
    pack_tasks(pk, m.tasks.data(), m.tasks.size());
    return b.take();
}

namespace {
void encode_into(StringBuffer& b, const TaskRef* tasks, std::size_t count) {
    b.reserve(encoded_size_hint(tasks, count, &TaskRef::reply_to, [](const TaskRef& t) {
        // Keys and headers of a task with a few fields (with its secret in a
        // SUBMIT, its attempt, token and start in a DISPATCH); more grow the buffer.
        return t.id.size() + t.name.size() + t.args.size() + t.secret.size() + 64;
    }));
    Packer pk(b);
    pack_tasks(pk, tasks, count);
}
}  // namespace

std::string encode(const TaskRef* tasks, std::size_t count) {
    StringBuffer b;
    encode_into(b, tasks, count);
    return b.take();
}

zmq::message_t encode_message(const TaskRef* tasks, std::size_t count) {
    StringBuffer b;
    encode_into(b, tasks, count);
    return b.take_message();
}

bool is_error_header(const void* data, std::size_t size) noexcept {
    const auto* p = static_cast<const unsigned char*>(data);
    return size == k_header_size && std::memcmp(p, k_protocol.data(), 3) == 0 &&
           p[4] == static_cast<unsigned char>(Command::error);
}

std::string encode(const Ids& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(1);
    pack_key(pk, "ids");
    pack_strings(pk, m.ids);
    return b.take();
}

std::string encode(const Settle& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(m.proofs.empty() ? 2 : 3);
    pack_key(pk, "ids");
    pack_strings(pk, m.ids);
    pack_key(pk, "timed_out");
    pk.pack(m.timed_out);
    if (!m.proofs.empty()) {
        std::string bytes(m.proofs.size() * 8, '\0');
        for (std::size_t i = 0; i < m.proofs.size(); ++i)
            for (std::size_t j = 0; j < 8; ++j) bytes[i * 8 + j] = static_cast<char>(m.proofs[i] >> (8 * j));
        pack_key(pk, "proofs");
        pack_bin(pk, bytes);
    }
    return b.take();
}

std::string encode(const Rejected& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(2);
    pack_key(pk, "ids");
    pack_strings(pk, m.ids);
    pack_key(pk, "reason");
    pack_str(pk, m.reason);
    return b.take();
}

std::string encode(const Results& m) { return encode(m.results.data(), m.results.size()); }

namespace {
void encode_into(StringBuffer& b, const Outcome* outcomes, std::size_t count) {
    b.reserve(encoded_size_hint(outcomes, count, &Outcome::worker, [](const Outcome& o) {
        return o.id.size() + o.task.size() + o.result.size() + o.error.size() + 80;
    }));
    Packer pk(b);
    pack_batch(pk, "results", outcomes, count, &Outcome::worker, "worker", pack_outcome);  // {results, worker}
}
}  // namespace

std::string encode(const Outcome* outcomes, std::size_t count) {
    StringBuffer b;
    encode_into(b, outcomes, count);
    return b.take();
}

zmq::message_t encode_message(const Outcome* outcomes, std::size_t count) {
    StringBuffer b;
    encode_into(b, outcomes, count);
    return b.take_message();
}

std::string encode(const Error& m) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(2 + !m.detail.empty() + m.command.has_value());
    pack_key(pk, "reason");
    pack_str(pk, m.reason);
    if (!m.detail.empty()) {
        pack_key(pk, "detail");
        pack_str(pk, m.detail);
    }
    if (m.command) {
        pack_key(pk, "command");
        pk.pack(static_cast<std::uint32_t>(*m.command));
    }
    pack_key(pk, "protocol");
    pack_str(pk, m.protocol);
    return b.take();
}

std::string encode_empty() {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(0);
    return b.take();
}

std::string encode_heartbeat(std::string_view instance) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(1);
    pack_key(pk, "instance");
    pack_str(pk, instance);
    return b.take();
}

std::string encode_worker_heartbeat(std::uint32_t held) {
    StringBuffer b;
    Packer pk(b);
    pk.pack_map(1);
    pack_key(pk, "held");
    pk.pack(held);
    return b.take();
}

Decoded<std::optional<std::uint32_t>> decode_worker_heartbeat(std::string_view body) noexcept {
    if (body.empty()) return std::optional<std::uint32_t>();
    return decode_checked<std::optional<std::uint32_t>>(body, [](Cursor& c) {
        std::optional<std::uint32_t> held;
        read_fields(c, [&](std::string_view k) {
            if (!named(k, "held")) return false;
            held = c.uint<std::uint32_t>();
            return true;
        });
        return held;
    });
}

Decoded<std::string> decode_heartbeat(std::string_view body) noexcept {
    if (body.empty()) return std::string();
    return decode_checked<std::string>(body, [](Cursor& c) {
        std::string instance;
        read_fields(c, [&](std::string_view k) {
            if (!named(k, "instance")) return false;
            instance = c.str();
            return true;
        });
        return instance;
    });
}

Decoded<Hello> decode_hello(std::string_view body) noexcept {
    return decode_checked<Hello>(body, [](Cursor& c) {
        Hello h;
        bool has_worker = false;
        read_fields(c, [&](std::string_view k) {
            if (named(k, "worker")) {
                h.worker = c.str();
                has_worker = true;
            } else if (named(k, "host")) {
                h.host = c.str();
            } else if (named(k, "pid")) {
                h.pid = c.int64();
            } else if (named(k, "pool")) {
                h.pool = c.str();
            } else if (named(k, "slots")) {
                h.slots = c.uint<std::uint32_t>();
            } else if (named(k, "tasks")) {
                h.tasks = read_strings(c);
            } else if (named(k, "restarts")) {
                h.restarts = c.uint<std::uint32_t>();
            } else if (named(k, "max_message_bytes")) {
                h.max_message_bytes = c.uint<std::uint64_t>();
            } else if (named(k, "held")) {
                h.held = c.uint<std::uint32_t>();
            } else if (named(k, "lost_key")) {
                h.lost_key = c.bin_or_str();
            } else {
                return false;
            }
            return true;
        });
        if (!has_worker) invalid();
        return h;
    });
}

Decoded<Ready> decode_ready(std::string_view body) noexcept {
    return decode_checked<Ready>(body, [](Cursor& c) {
        Ready r;
        bool has = false;
        read_fields(c, [&](std::string_view k) {
            if (named(k, "credits")) {
                r.credits = c.uint<std::uint32_t>();
                has = true;
                return true;
            }
            if (named(k, "starts")) {
                r.starts = c.uint<std::uint32_t>();
                return true;
            }
            if (!named(k, "run_ns")) return false;
            const std::size_t n = c.map();
            r.run_ns.reserve(n);
            for (std::size_t i = 0; i < n; ++i) {
                std::string name(c.str());
                r.run_ns.emplace_back(std::move(name), c.uint<std::uint64_t>());
            }
            return true;
        });
        if (!has) invalid();
        return r;
    });
}

Decoded<Lost> decode_lost(std::string_view body) noexcept {
    return decode_checked<Lost>(body, [](Cursor& c) {
        Lost l;
        bool has = false;
        read_fields(c, [&](std::string_view k) {
            if (named(k, "key")) {
                l.key = c.bin_or_str();
                return true;
            }
            if (!named(k, "worker")) return false;
            l.worker = c.str();
            has = true;
            return true;
        });
        if (!has) invalid();
        return l;
    });
}

namespace {

Decoded<Tasks> decode_tasks_in(std::string_view body, std::string_view* batch_reply_to) noexcept {
    return decode_checked<Tasks>(body, [batch_reply_to](Cursor& c) {
        Tasks m;
        const auto reply_to = read_batch(c, "tasks", m.tasks, read_task, "reply_to");
        if (batch_reply_to) *batch_reply_to = reply_to;
        else fill_shared(m.tasks, &Task::reply_to, reply_to);
        return m;
    });
}

}  // namespace

Decoded<Tasks> decode_tasks(std::string_view body) noexcept { return decode_tasks_in(body, nullptr); }

Decoded<Tasks> decode_tasks(std::string_view body, std::string_view& batch_reply_to) noexcept {
    return decode_tasks_in(body, &batch_reply_to);
}

Decoded<Tasks> decode_submit(std::string_view body, std::string_view& batch_reply_to) noexcept {
    return decode_checked<Tasks>(body, [&batch_reply_to](Cursor& c) {
        Tasks m;
        batch_reply_to = read_batch(c, "tasks", m.tasks, read_submitted_task, "reply_to");
        return m;
    });
}

Decoded<Ids> decode_ids(std::string_view body) noexcept {
    return decode_checked<Ids>(body, [](Cursor& c) {
        Ids m;
        bool has = false;
        read_fields(c, [&](std::string_view k) {
            if (!named(k, "ids")) return false;
            m.ids = read_strings(c);
            has = true;
            return true;
        });
        if (!has) invalid();
        return m;
    });
}

Decoded<Settle> decode_settle(std::string_view body) noexcept {
    return decode_checked<Settle>(body, [](Cursor& c) {
        Settle m;
        bool has = false;
        read_fields(c, [&](std::string_view k) {
            if (named(k, "ids")) {
                m.ids = read_strings(c);
                has = true;
            } else if (named(k, "timed_out")) {
                m.timed_out = c.uint<std::uint32_t>();
            } else if (named(k, "proofs")) {
                const auto bytes = c.bin_or_str();
                if (bytes.size() % 8 != 0) invalid();
                m.proofs.resize(bytes.size() / 8);
                for (std::size_t i = 0; i < m.proofs.size(); ++i)
                    for (std::size_t j = 8; j-- > 0;)
                        m.proofs[i] = m.proofs[i] << 8 | static_cast<unsigned char>(bytes[i * 8 + j]);
            } else {
                return false;
            }
            return true;
        });
        if (!has || (!m.proofs.empty() && m.proofs.size() != m.ids.size())) invalid();
        return m;
    });
}

Decoded<Ids> decode_bye(std::string_view body) noexcept {
    if (body.empty()) return Ids{};
    return decode_checked<Ids>(body, [](Cursor& c) {
        Ids m;
        read_fields(c, [&](std::string_view k) {
            if (!named(k, "ids")) return false;
            m.ids = read_strings(c);
            return true;
        });
        return m;
    });
}

Decoded<Rejected> decode_rejected(std::string_view body) noexcept {
    return decode_checked<Rejected>(body, [](Cursor& c) {
        Rejected m;
        bool has = false;
        read_fields(c, [&](std::string_view k) {
            if (named(k, "ids")) {
                m.ids = read_strings(c);
                has = true;
            } else if (named(k, "reason")) {
                m.reason = c.str();
            } else {
                return false;
            }
            return true;
        });
        if (!has) invalid();
        return m;
    });
}

Decoded<Error> decode_error(std::string_view body) noexcept {
    return decode_checked<Error>(body, [](Cursor& c) {
        Error m;
        m.protocol.clear();
        bool has = false;
        read_fields(c, [&](std::string_view k) {
            if (named(k, "reason")) {
                m.reason = c.str();
                has = true;
            } else if (named(k, "detail")) {
                m.detail = c.str();
            } else if (named(k, "command")) {
                m.command = c.uint<std::uint8_t>();
            } else if (named(k, "protocol")) {
                m.protocol = c.str();
            } else {
                return false;
            }
            return true;
        });
        if (!has) invalid();
        return m;
    });
}

Decoded<Results> decode_results(std::string_view body) noexcept {
    return decode_checked<Results>(body, [](Cursor& c) {
        Results m;
        fill_shared(m.results, &Outcome::worker, read_batch(c, "results", m.results, read_outcome<Outcome>, "worker"));
        return m;
    });
}

Decoded<std::vector<OutcomeView>> decode_result_views(std::string_view body) noexcept {
    return decode_checked<std::vector<OutcomeView>>(body, [](Cursor& c) {
        std::vector<OutcomeView> m;
        fill_shared(m, &OutcomeView::worker, read_batch(c, "results", m, read_outcome<OutcomeView>, "worker"));
        return m;
    });
}

Decoded<bool> decode_empty(std::string_view body) noexcept {
    if (body.empty()) return true;
    return decode_checked<bool>(body, [](Cursor& c) {
        read_fields(c, [](std::string_view) { return false; });  // any map: its fields are skipped (checked)
        return true;
    });
}

bool is_valid_msgpack(std::string_view bytes, std::size_t max_depth) noexcept {
    return decode_body<bool>(bytes, max_depth, [](const msgpack::object&) { return true; }).ok();
}

}  // namespace drover::proto
