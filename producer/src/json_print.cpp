// Result lines printed by hand from msgpack, without a JSON value in
// between: byte for byte what to_line gives for the same value (keys in
// order, nlohmann's number formats and escapes), with nlohmann itself
// printing what this does not handle (binary data, extension types, maps
// whose keys are not in order, invalid UTF-8, undecodable bytes).
#include <charconv>
#include <cmath>
#include <cstring>
#include <string_view>

#include "drover/client/json_lines.hpp"
#include "internal/unpack.hpp"

namespace drover {

namespace {

// Whether `s` is UTF-8 as nlohmann's decoder accepts it (RFC 3629: no
// overlong forms, no surrogates, nothing past U+10FFFF).
bool valid_utf8(std::string_view s) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* end = p + s.size();
    while (p < end) {
        const unsigned c = *p;
        if (c < 0x80) {
            ++p;
            continue;
        }
        int more;
        unsigned lo = 0x80, hi = 0xbf;  // the range of the second byte
        if (c >= 0xc2 && c <= 0xdf) more = 1;
        else if (c >= 0xe0 && c <= 0xef) more = 2, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        else if (c >= 0xf0 && c <= 0xf4) more = 3, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        else return false;
        if (end - p <= more || p[1] < lo || p[1] > hi) return false;
        for (int i = 2; i <= more; ++i)
            if ((p[i] & 0xc0) != 0x80) return false;
        p += more + 1;
    }
    return true;
}

// nlohmann's escape of one ASCII byte that needs one.
void append_escape(std::string& out, unsigned char c) {
    switch (c) {
        case '"': out.append("\\\""); return;
        case '\\': out.append("\\\\"); return;
        case '\b': out.append("\\b"); return;
        case '\f': out.append("\\f"); return;
        case '\n': out.append("\\n"); return;
        case '\r': out.append("\\r"); return;
        case '\t': out.append("\\t"); return;
        default: {
            static constexpr char hex[] = "0123456789abcdef";
            const char u[] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
            out.append(u, sizeof u);
        }
    }
}

void append_uint(std::string& out, std::uint64_t v) {
    char buf[24];
    out.append(buf, static_cast<std::size_t>(std::to_chars(buf, buf + sizeof buf, v).ptr - buf));
}

void append_int(std::string& out, std::int64_t v) {
    char buf[24];
    out.append(buf, static_cast<std::size_t>(std::to_chars(buf, buf + sizeof buf, v).ptr - buf));
}

// As nlohmann's serializer: null if not finite, else its shortest form.
void append_double(std::string& out, double d) {
    if (!std::isfinite(d)) {
        out.append("null");
        return;
    }
    char buf[64];
    out.append(buf, static_cast<std::size_t>(nlohmann::detail::to_chars(buf, buf + sizeof buf, d) - buf));
}

// msgpack bytes being read; every read checks that the bytes are there.
struct Reader {
    const unsigned char* p;
    const unsigned char* end;

    bool need(std::size_t n) const { return static_cast<std::size_t>(end - p) >= n; }
    // A big-endian number of `n` bytes; false if they are not there.
    bool be(int n, std::uint64_t& v) {
        if (!need(static_cast<std::size_t>(n))) return false;
        v = 0;
        for (int i = 0; i < n; ++i) v = (v << 8) | *p++;
        return true;
    }
};

bool print_value(Reader& r, std::string& out);

bool read_str(Reader& r, std::size_t n, std::string_view& s) {
    if (!r.need(n)) return false;
    s = std::string_view(reinterpret_cast<const char*>(r.p), n);
    r.p += n;
    return true;
}

bool print_array(Reader& r, std::uint64_t n, std::string& out) {
    if (!r.need(n)) return false;  // every item is a byte at least
    out.push_back('[');
    for (std::uint64_t i = 0; i < n; ++i) {
        if (i) out.push_back(',');
        if (!print_value(r, out)) return false;
    }
    out.push_back(']');
    return true;
}

// A string key of a map; false for any other kind (nlohmann refuses them).
bool read_key(Reader& r, std::string_view& key) {
    if (!r.need(1)) return false;
    const unsigned c = *r.p++;
    std::uint64_t n;
    if (c >= 0xa0 && c <= 0xbf) n = c & 0x1f;
    else if (c < 0xd9 || c > 0xdb || !r.be(1 << (c - 0xd9), n)) return false;
    return read_str(r, n, key);
}

// Keys strictly in order, as nlohmann's std::map prints them; else false.
bool print_map(Reader& r, std::uint64_t n, std::string& out) {
    if (!r.need(n)) return false;
    out.push_back('{');
    std::string_view last;
    for (std::uint64_t i = 0; i < n; ++i) {
        std::string_view key;
        if (!read_key(r, key) || (i > 0 && !(last < key))) return false;
        last = key;
        if (i) out.push_back(',');
        append_json_string(out, key);
        out.push_back(':');
        if (!print_value(r, out)) return false;
    }
    out.push_back('}');
    return true;
}

bool print_number(Reader& r, unsigned c, std::string& out) {
    std::uint64_t v;
    if (c == 0xca || c == 0xcb) {
        if (!r.be(c == 0xca ? 4 : 8, v)) return false;
        if (c == 0xca) {
            float f;
            const auto bits = static_cast<std::uint32_t>(v);
            std::memcpy(&f, &bits, sizeof f);
            append_double(out, static_cast<double>(f));
        } else {
            double d;
            std::memcpy(&d, &v, sizeof d);
            append_double(out, d);
        }
    } else if (c >= 0xcc && c <= 0xcf) {
        if (!r.be(1 << (c - 0xcc), v)) return false;
        append_uint(out, v);
    } else {  // 0xd0..0xd3
        const int n = 1 << (c - 0xd0);
        if (!r.be(n, v)) return false;
        const int shift = 64 - 8 * n;  // sign-extend
        append_int(out, static_cast<std::int64_t>(v << shift) >> shift);
    }
    return true;
}

bool print_value(Reader& r, std::string& out) {
    if (!r.need(1)) return false;
    const unsigned c = *r.p++;
    std::uint64_t n;
    std::string_view s;
    if (c <= 0x7f) append_uint(out, c);
    else if (c >= 0xe0) append_int(out, static_cast<std::int64_t>(c) - 0x100);
    else if (c <= 0x8f) return print_map(r, c & 0x0f, out);
    else if (c <= 0x9f) return print_array(r, c & 0x0f, out);
    else if (c <= 0xbf) {
        if (!read_str(r, c & 0x1f, s)) return false;
        append_json_string(out, s);
    } else if (c == 0xc0) out.append("null");
    else if (c == 0xc2 || c == 0xc3) out.append(c == 0xc3 ? "true" : "false");
    else if ((c >= 0xca && c <= 0xd3)) return print_number(r, c, out);
    else if (c >= 0xd9 && c <= 0xdb) {
        if (!r.be(1 << (c - 0xd9), n) || !read_str(r, n, s)) return false;
        append_json_string(out, s);
    } else if (c == 0xdc || c == 0xdd) return r.be(c == 0xdc ? 2 : 4, n) && print_array(r, n, out);
    else if (c == 0xde || c == 0xdf) return r.be(c == 0xde ? 2 : 4, n) && print_map(r, n, out);
    else return false;  // 0xc1, binary and extension types
    return true;
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
    bool ascii = true;
    for (const char c : s) ascii &= static_cast<unsigned char>(c) < 0x80;
    if (!ascii && !valid_utf8(s)) {
        out.append(to_line(std::string(s)));  // U+FFFD as nlohmann places it
        return;
    }
    out.push_back('"');
    std::size_t run = 0;  // s[run, i) needs no escape
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        out.append(s.data() + run, i - run);
        append_escape(out, c);
        run = i + 1;
    }
    out.append(s.data() + run, s.size() - run);
    out.push_back('"');
}

void append_msgpack_json(std::string& out, std::string_view bytes) {
    if (bytes.empty()) {
        out.append("null");
        return;
    }
    const auto mark = out.size();
    if (within_depth_limit(bytes)) {
        Reader r{reinterpret_cast<const unsigned char*>(bytes.data()),
                 reinterpret_cast<const unsigned char*>(bytes.data()) + bytes.size()};
        if (print_value(r, out) && r.p == r.end) return;
    }
    out.resize(mark);
    out.append(to_line(msgpack_to_json(std::string(bytes))));
}

void append_result_line(std::string& out, const Result& r, std::string_view id_json) {
    const auto id = [&] {
        if (id_json.empty()) append_json_string(out, r.id);
        else out.append(id_json);
    };
    if (r.accepted_only) {
        out.append("{\"id\":");
        id();
        out.append(",\"status\":\"accepted\",\"task\":");
        append_json_string(out, r.task);
        out.push_back('}');
        return;
    }
    out.append("{\"attempts\":");
    append_uint(out, r.attempts);
    out.append(",\"elapsed_ms\":");
    append_double(out, std::round(r.elapsed_ms * 1000.0) / 1000.0);
    if (!r.ok()) {
        out.append(",\"error\":");
        append_json_string(out, r.error);
    }
    out.append(",\"id\":");
    id();
    if (r.ok()) {
        out.append(",\"result\":");
        append_msgpack_json(out, r.payload);
    }
    out.append(",\"status\":");
    append_json_string(out, proto::status_name(r.status));
    out.append(",\"task\":");
    append_json_string(out, r.task);
    out.append(",\"worker\":");
    append_json_string(out, r.worker);
    out.push_back('}');
}

void append_rejected_line(std::string& out, std::size_t line_no, std::string_view error, std::string_view id_json) {
    out.append("{\"error\":");
    append_json_string(out, error);
    if (!id_json.empty()) out.append(",\"id\":").append(id_json);
    out.append(",\"line\":");
    append_uint(out, line_no);
    out.append(",\"status\":\"rejected\"}");
}

}  // namespace drover
