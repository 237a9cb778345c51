// JSON lines at full speed: task lines parsed with simdjson's On Demand API
// straight into msgpack, results printed from msgpack by hand. Both give
// byte for byte what the nlohmann path gives (json_lines.cpp), and leave to
// it whatever they do not handle: every refused line, binary data, maps
// whose keys are not in order, invalid UTF-8.
#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include <simdjson.h>

#include "drover/client/json_lines.hpp"
#include "internal/unpack.hpp"

namespace drover {

namespace od = simdjson::ondemand;

namespace {

// ---- msgpack writing, as nlohmann::json::to_msgpack writes each value ----

void put_be(std::string& out, std::uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_uint(std::string& out, std::uint64_t v) {
    if (v < 128) out.push_back(static_cast<char>(v));
    else if (v <= 0xff) out.push_back('\xcc'), put_be(out, v, 1);
    else if (v <= 0xffff) out.push_back('\xcd'), put_be(out, v, 2);
    else if (v <= 0xffffffffu) out.push_back('\xce'), put_be(out, v, 4);
    else out.push_back('\xcf'), put_be(out, v, 8);
}

void put_int(std::string& out, std::int64_t v) {
    const auto bits = static_cast<std::uint64_t>(v);
    if (v >= 0) put_uint(out, bits);
    else if (v >= -32) out.push_back(static_cast<char>(v));
    else if (v >= INT8_MIN) out.push_back('\xd0'), put_be(out, bits, 1);
    else if (v >= INT16_MIN) out.push_back('\xd1'), put_be(out, bits, 2);
    else if (v >= INT32_MIN) out.push_back('\xd2'), put_be(out, bits, 4);
    else out.push_back('\xd3'), put_be(out, bits, 8);
}

// float 32 when the value is exactly a float, as nlohmann's compact floats.
void put_double(std::string& out, double d) {
    const auto f = static_cast<float>(d);
    if (d >= static_cast<double>(std::numeric_limits<float>::lowest()) &&
        d <= static_cast<double>(std::numeric_limits<float>::max()) && static_cast<double>(f) == d) {
        std::uint32_t bits;
        std::memcpy(&bits, &f, sizeof bits);
        out.push_back('\xca');
        put_be(out, bits, 4);
    } else {
        std::uint64_t bits;
        std::memcpy(&bits, &d, sizeof bits);
        out.push_back('\xcb');
        put_be(out, bits, 8);
    }
}

void put_str(std::string& out, std::string_view s) {
    const auto n = s.size();
    if (n <= 31) out.push_back(static_cast<char>(0xa0 | n));
    else if (n <= 0xff) out.push_back('\xd9'), put_be(out, n, 1);
    else if (n <= 0xffff) out.push_back('\xda'), put_be(out, n, 2);
    else out.push_back('\xdb'), put_be(out, n, 4);
    out.append(s);
}

// The header of an array (`map` false) or map of `n` items, in place of the
// one byte reserved at `at`.
void patch_header(std::string& out, std::size_t at, std::size_t n, bool map) {
    if (n < 16) {
        out[at] = static_cast<char>((map ? 0x80 : 0x90) | n);
        return;
    }
    std::string header;
    if (n <= 0xffff) header.push_back(map ? '\xde' : '\xdc'), put_be(header, n, 2);
    else header.push_back(map ? '\xdf' : '\xdd'), put_be(header, n, 4);
    out.replace(at, 1, header);
}

// ---- JSON (simdjson On Demand) to msgpack ----

bool pack_value(od::value v, std::string& out);

// A number as nlohmann reads it: a float if its text has '.', 'e' or 'E';
// else an integer, or false (left to nlohmann) past 64 bits.
bool pack_number(od::value v, std::string& out) {
    const std::string_view raw = v.raw_json_token();
    if (raw.find_first_of(".eE") != std::string_view::npos) {
        double d;
        if (v.get_double().get(d) || !std::isfinite(d)) return false;
        put_double(out, d);
    } else if (!raw.empty() && raw.front() == '-') {
        std::int64_t i;
        if (v.get_int64().get(i)) return false;
        put_int(out, i);
    } else {
        std::uint64_t u;
        if (v.get_uint64().get(u)) return false;
        put_uint(out, u);
    }
    return true;
}

bool pack_array(od::value v, std::string& out) {
    od::array a;
    if (v.get_array().get(a)) return false;
    const auto at = out.size();
    out.push_back('\0');
    std::size_t n = 0;
    for (auto element : a) {
        od::value e;
        if (element.get(e) || !pack_value(e, out)) return false;
        ++n;
    }
    patch_header(out, at, n, false);
    return true;
}

// Keys in order, as nlohmann's std::map holds them; a repeated key (the last
// one wins there) is left to nlohmann.
bool pack_object(od::value v, std::string& out) {
    od::object o;
    if (v.get_object().get(o)) return false;
    std::vector<std::pair<std::string, std::string>> members;
    for (auto item : o) {
        od::field field;
        std::string_view key;
        if (std::move(item).get(field) || field.unescaped_key().get(key)) return false;
        std::string packed;
        if (!pack_value(field.value(), packed)) return false;
        members.emplace_back(std::string(key), std::move(packed));
    }
    std::stable_sort(members.begin(), members.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (std::size_t i = 1; i < members.size(); ++i)
        if (members[i].first == members[i - 1].first) return false;
    const auto at = out.size();
    out.push_back('\0');
    for (const auto& [key, packed] : members) {
        put_str(out, key);
        out.append(packed);
    }
    patch_header(out, at, members.size(), true);
    return true;
}

bool pack_value(od::value v, std::string& out) {
    od::json_type type;
    if (v.type().get(type)) return false;
    switch (type) {
        case od::json_type::array: return pack_array(v, out);
        case od::json_type::object: return pack_object(v, out);
        case od::json_type::number: return pack_number(v, out);
        case od::json_type::string: {
            std::string_view s;
            if (v.get_string().get(s)) return false;
            put_str(out, s);
            return true;
        }
        case od::json_type::boolean: {
            bool b;
            if (v.get_bool().get(b)) return false;
            out.push_back(b ? '\xc3' : '\xc2');
            return true;
        }
        case od::json_type::null: {
            bool null = false;
            if (v.is_null().get(null) || !null) return false;
            out.push_back('\xc0');
            return true;
        }
    }
    return false;
}

// Which fields of a task line were seen: a repeated one is left to nlohmann.
enum Field : unsigned { f_task = 1, f_args = 2, f_id = 4, f_max_attempts = 8, f_timeout = 16, f_retry = 32 };

// A number nlohmann holds as unsigned (no '-', '.', 'e') within 32 bits.
bool read_u32(od::value v, std::uint32_t& out) {
    od::json_type type;
    if (v.type().get(type) || type != od::json_type::number) return false;
    if (v.raw_json_token().find_first_of("-.eE") != std::string_view::npos) return false;
    std::uint64_t u;
    if (v.get_uint64().get(u) || u > 0xffffffffu) return false;
    out = static_cast<std::uint32_t>(u);
    return true;
}

// The line's "id": its JSON text as result lines print it, and the wire id
// another sink is given (a string's text, a number's JSON text).
bool read_id(od::value v, TaskLine& t) {
    od::json_type type;
    if (v.type().get(type)) return false;
    std::string packed;
    if (!pack_value(v, packed)) return false;
    if (type == od::json_type::null) return true;
    append_msgpack_json(t.id_json, packed);
    if (type == od::json_type::number) t.id_wire = t.id_json;
    if (type == od::json_type::string) {
        std::string_view s;
        if (v.get_string().get(s)) return false;
        t.id_wire.assign(s);
    }
    return true;
}

// One field of a task line into `t`; false for anything unknown, repeated
// or of the wrong kind (nlohmann then says why).
bool read_field(std::string_view key, od::value v, TaskLine& t, unsigned& seen) {
    const auto once = [&seen](Field f) { return !(seen & f) && (seen |= f); };
    if (key == "task") {
        std::string_view task;
        if (!once(f_task) || v.get_string().get(task) || task.empty()) return false;
        t.task.assign(task);
        return true;
    }
    if (key == "args") return once(f_args) && pack_value(v, t.args);
    if (key == "id") return once(f_id) && read_id(v, t);
    if (key == "max_attempts") {
        std::uint32_t n;
        if (!once(f_max_attempts) || !read_u32(v, n) || n == 0) return false;
        t.options.max_attempts = n;
        return true;
    }
    if (key == "timeout_ms") return once(f_timeout) && read_u32(v, t.options.timeout_ms);
    if (key == "retry_on_error") return once(f_retry) && !v.get_bool().get(t.options.retry_on_error);
    return false;
}

// Whether `line` is one object, '{' to its '}' with only spaces around, and
// has no control character: they are refused inside strings and needless
// outside them, and nlohmann judges such lines. Brackets in strings skipped.
bool one_object(std::string_view line) noexcept {
    const auto first = line.find_first_not_of(' ');
    if (first == std::string_view::npos || line[first] != '{') return false;
    std::size_t depth = 0;
    bool in_string = false;
    for (std::size_t i = first; i < line.size(); ++i) {
        const char c = line[i];
        if (static_cast<unsigned char>(c) < 0x20) return false;
        if (depth == 0 && i > first) {
            if (c != ' ') return false;
        } else if (in_string) {
            if (c == '\\') ++i;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            ++depth;
        } else if (c == ']' || c == '}') {
            --depth;  // a stray one is refused by simdjson
        }
    }
    return depth == 0 && !in_string;
}

}  // namespace

namespace {

// Lines up to this size are parsed with the thread's own parser and buffer,
// which keep their capacity; a longer one gets its own, freed after it, so
// that one huge line does not leave every reading thread holding its size.
constexpr std::size_t k_kept_line_capacity = std::size_t{1} << 20;

std::optional<TaskLine> parse_with(od::parser& parser, std::string& padded, const std::string& line) {
    padded.assign(line);
    padded.append(simdjson::SIMDJSON_PADDING, ' ');
    od::document doc;
    od::object object;
    if (parser.iterate(padded.data(), line.size(), padded.size()).get(doc) || doc.get_object().get(object))
        return std::nullopt;
    TaskLine t;
    unsigned seen = 0;
    for (auto item : object) {
        od::field field;
        std::string_view key;
        if (std::move(item).get(field) || field.unescaped_key().get(key) || !read_field(key, field.value(), t, seen))
            return std::nullopt;
    }
    if (!(seen & f_task)) return std::nullopt;
    if (!(seen & f_args)) t.args.push_back('\x90');  // []
    return t;
}

}  // namespace

std::optional<TaskLine> parse_task_line_fast(const std::string& line) {
    if (!one_object(line) || !json_within_depth_limit(line)) return std::nullopt;
    if (line.size() > k_kept_line_capacity) {
        od::parser parser;
        std::string padded;
        return parse_with(parser, padded, line);
    }
    thread_local od::parser parser;
    thread_local std::string padded;
    return parse_with(parser, padded, line);
}

}  // namespace drover
