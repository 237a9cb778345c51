// A msgpack reader that builds msgpack::object trees in a zone.
#include "internal/unpack.hpp"

#include <cstdint>
#include <cstring>

namespace drover {

namespace {

class Reader {
public:
    Reader(msgpack::zone& zone, std::string_view bytes, std::size_t max_depth)
        : zone_(zone), p_(bytes.data()), end_(bytes.data() + bytes.size()), max_depth_(max_depth) {}

    msgpack::object value(std::size_t open) {
        msgpack::object o;
        const auto b = static_cast<std::uint8_t>(*take(1));
        if (b <= 0x7f) return positive(o, b);
        if (b >= 0xe0) return negative(o, static_cast<std::int8_t>(b));
        if (b <= 0x8f) return map(o, b & 0x0f, open);
        if (b <= 0x9f) return array(o, b & 0x0f, open);
        if (b <= 0xbf) return str(o, msgpack::type::STR, b & 0x1f);
        switch (b) {
            case 0xc0: o.type = msgpack::type::NIL; return o;
            case 0xc2:
                o.type = msgpack::type::BOOLEAN;
                o.via.boolean = false;
                return o;
            case 0xc3:
                o.type = msgpack::type::BOOLEAN;
                o.via.boolean = true;
                return o;
            case 0xc4: return str(o, msgpack::type::BIN, number(1));
            case 0xc5: return str(o, msgpack::type::BIN, number(2));
            case 0xc6: return str(o, msgpack::type::BIN, number(4));
            case 0xc7: return ext(o, number(1));
            case 0xc8: return ext(o, number(2));
            case 0xc9: return ext(o, number(4));
            case 0xca: {
                const auto bits = static_cast<std::uint32_t>(number(4));
                float f;
                std::memcpy(&f, &bits, sizeof f);
                o.type = msgpack::type::FLOAT32;
                o.via.f64 = f;
                return o;
            }
            case 0xcb: {
                const std::uint64_t bits = number(8);
                o.type = msgpack::type::FLOAT64;
                std::memcpy(&o.via.f64, &bits, sizeof bits);
                return o;
            }
            case 0xcc: return positive(o, number(1));
            case 0xcd: return positive(o, number(2));
            case 0xce: return positive(o, number(4));
            case 0xcf: return positive(o, number(8));
            case 0xd0: return signed_int(o, static_cast<std::int8_t>(number(1)));
            case 0xd1: return signed_int(o, static_cast<std::int16_t>(number(2)));
            case 0xd2: return signed_int(o, static_cast<std::int32_t>(number(4)));
            case 0xd3: return signed_int(o, static_cast<std::int64_t>(number(8)));
            case 0xd4: return ext(o, 1);
            case 0xd5: return ext(o, 2);
            case 0xd6: return ext(o, 4);
            case 0xd7: return ext(o, 8);
            case 0xd8: return ext(o, 16);
            case 0xd9: return str(o, msgpack::type::STR, number(1));
            case 0xda: return str(o, msgpack::type::STR, number(2));
            case 0xdb: return str(o, msgpack::type::STR, number(4));
            case 0xdc: return array(o, number(2), open);
            case 0xdd: return array(o, number(4), open);
            case 0xde: return map(o, number(2), open);
            case 0xdf: return map(o, number(4), open);
            default: throw UnpackError("unused byte 0xc1");
        }
    }

    [[nodiscard]] bool at_end() const { return p_ == end_; }

private:
    [[nodiscard]] std::size_t left() const { return static_cast<std::size_t>(end_ - p_); }

    const char* take(std::size_t n) {
        if (left() < n) throw UnpackError("truncated");
        const char* at = p_;
        p_ += n;
        return at;
    }

    // A big-endian unsigned number of n bytes.
    std::uint64_t number(std::size_t n) {
        const auto* at = reinterpret_cast<const std::uint8_t*>(take(n));
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < n; ++i) v = v << 8 | at[i];
        return v;
    }

    static msgpack::object& positive(msgpack::object& o, std::uint64_t v) {
        o.type = msgpack::type::POSITIVE_INTEGER;
        o.via.u64 = v;
        return o;
    }
    static msgpack::object& negative(msgpack::object& o, std::int64_t v) {
        o.type = msgpack::type::NEGATIVE_INTEGER;
        o.via.i64 = v;
        return o;
    }
    static msgpack::object& signed_int(msgpack::object& o, std::int64_t v) {
        return v >= 0 ? positive(o, static_cast<std::uint64_t>(v)) : negative(o, v);
    }

    msgpack::object& str(msgpack::object& o, msgpack::type::object_type type, std::uint64_t n) {
        const char* at = take(n);
        o.type = type;
        if (type == msgpack::type::STR) {
            o.via.str.size = static_cast<std::uint32_t>(n);
            o.via.str.ptr = at;
        } else {
            o.via.bin.size = static_cast<std::uint32_t>(n);
            o.via.bin.ptr = at;
        }
        return o;
    }

    // An extension: a type byte, then n bytes; ptr points at the type byte.
    msgpack::object& ext(msgpack::object& o, std::uint64_t n) {
        if (n >= left()) throw UnpackError("truncated");  // n + 1 could wrap a 32-bit size_t
        const char* at = take(n + 1);
        o.type = msgpack::type::EXT;
        o.via.ext.size = static_cast<std::uint32_t>(n);
        o.via.ext.ptr = at;
        return o;
    }

    // Every element takes a byte at least, so a count past what is left is
    // refused before anything is allocated for it.
    void open_container(std::uint64_t elements, std::size_t open) {
        if (open >= max_depth_) throw UnpackError("too deep");
        if (elements > left()) throw UnpackError("truncated");
    }

    msgpack::object& array(msgpack::object& o, std::uint64_t n, std::size_t open) {
        o.type = msgpack::type::ARRAY;
        o.via.array.size = static_cast<std::uint32_t>(n);
        o.via.array.ptr = nullptr;
        open_container(n, open);
        if (n == 0) return o;
        auto* items =
            static_cast<msgpack::object*>(zone_.allocate_align(sizeof(msgpack::object) * n, alignof(msgpack::object)));
        for (std::uint64_t i = 0; i < n; ++i) items[i] = value(open + 1);
        o.via.array.ptr = items;
        return o;
    }

    msgpack::object& map(msgpack::object& o, std::uint64_t n, std::size_t open) {
        o.type = msgpack::type::MAP;
        o.via.map.size = static_cast<std::uint32_t>(n);
        o.via.map.ptr = nullptr;
        open_container(n * 2, open);
        if (n == 0) return o;
        auto* pairs = static_cast<msgpack::object_kv*>(
            zone_.allocate_align(sizeof(msgpack::object_kv) * n, alignof(msgpack::object_kv)));
        for (std::uint64_t i = 0; i < n; ++i) {
            pairs[i].key = value(open + 1);
            pairs[i].val = value(open + 1);
        }
        o.via.map.ptr = pairs;
        return o;
    }

    msgpack::zone& zone_;
    const char* p_;
    const char* end_;
    std::size_t max_depth_;
};

}  // namespace

bool within_depth_limit(std::string_view bytes, std::size_t max_depth) noexcept {
    if (max_depth > k_max_data_depth) max_depth = k_max_data_depth;
    const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
    const auto* const end = p + bytes.size();
    // left_at[L]: values still to read in the container open at level L.
    std::uint64_t left_at[k_max_data_depth + 1];
    std::size_t level = 0;
    // Reads a big-endian count of n bytes; false if the bytes are cut.
    const auto count = [&](std::size_t n, std::uint64_t& v) {
        if (static_cast<std::size_t>(end - p) < n) return false;
        v = 0;
        for (std::size_t i = 0; i < n; ++i) v = v << 8 | p[i];
        p += n;
        return true;
    };
    while (p < end) {
        const std::uint8_t b = *p++;
        std::uint64_t elements = 0;  // of a container
        std::uint64_t skip = 0;      // bytes after the header of a scalar
        bool container = false;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        } else if (b <= 0x8f) {
            container = true;
            elements = 2u * (b & 0x0fu);
        } else if (b <= 0x9f) {
            container = true;
            elements = b & 0x0fu;
        } else if (b <= 0xbf) {
            skip = b & 0x1fu;
        } else {
            std::uint64_t n = 0;
            switch (b) {
                case 0xc4:
                case 0xd9:
                    if (!count(1, skip)) return true;
                    break;
                case 0xc5:
                case 0xda:
                    if (!count(2, skip)) return true;
                    break;
                case 0xc6:
                case 0xdb:
                    if (!count(4, skip)) return true;
                    break;
                case 0xc7:
                    if (!count(1, n)) return true;
                    skip = n + 1;
                    break;  // + the type byte
                case 0xc8:
                    if (!count(2, n)) return true;
                    skip = n + 1;
                    break;
                case 0xc9:
                    if (!count(4, n)) return true;
                    skip = n + 1;
                    break;
                case 0xcc:
                case 0xd0: skip = 1; break;
                case 0xcd:
                case 0xd1: skip = 2; break;
                case 0xca:
                case 0xce:
                case 0xd2: skip = 4; break;
                case 0xcb:
                case 0xcf:
                case 0xd3: skip = 8; break;
                case 0xd4: skip = 2; break;
                case 0xd5: skip = 3; break;
                case 0xd6: skip = 5; break;
                case 0xd7: skip = 9; break;
                case 0xd8: skip = 17; break;
                case 0xdc:
                    container = true;
                    if (!count(2, elements)) return true;
                    break;
                case 0xdd:
                    container = true;
                    if (!count(4, elements)) return true;
                    break;
                case 0xde:
                    container = true;
                    if (!count(2, n)) return true;
                    elements = 2 * n;
                    break;
                case 0xdf:
                    container = true;
                    if (!count(4, n)) return true;
                    elements = 2 * n;
                    break;
                default: return true;  // 0xc1
            }
        }
        if (container) {
            if (level == max_depth) return false;
            if (elements != 0) {
                left_at[++level] = elements;
                continue;
            }
        } else {
            if (static_cast<std::uint64_t>(end - p) < skip) return true;
            p += skip;
        }
        // One value read: it may end the containers around it.
        while (level > 0 && --left_at[level] == 0) --level;
    }
    return true;
}

std::string too_deep_message(std::string_view what) {
    return std::string(what) + " nested deeper than " + std::to_string(k_max_data_depth) + " levels (limit)";
}

msgpack::object unpack_object(msgpack::zone& zone, std::string_view bytes, std::size_t max_depth) {
    Reader r(zone, bytes, max_depth);
    msgpack::object o = r.value(0);
    if (!r.at_end()) throw UnpackError("trailing bytes", /*trailing=*/true);
    return o;
}

}  // namespace drover
