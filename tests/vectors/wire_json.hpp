// A msgpack body as the golden vectors show it in JSON (tests/vectors/protocol.json).
#pragma once

// Maps are objects in wire order, str is a string, bin is {"bin": "<hex>"},
// integers are numbers, nil is null, arrays are arrays. Used by the vectors'
// generator and by the unit test that checks them against the real decoders.

#include <string>
#include <string_view>

#include <msgpack.hpp>
#include <nlohmann/json.hpp>

#include "internal/proof.hpp"

namespace drover::vectors {

using Json = nlohmann::ordered_json;

// Throws: std::invalid_argument for what the vectors never hold (a map key
// that is not a str, a float, an extension).
inline Json to_wire_json(const msgpack::object& o) {
    switch (o.type) {
        case msgpack::type::NIL: return nullptr;
        case msgpack::type::BOOLEAN: return o.via.boolean;
        case msgpack::type::POSITIVE_INTEGER: return o.via.u64;
        case msgpack::type::NEGATIVE_INTEGER: return o.via.i64;
        case msgpack::type::STR: return std::string(o.via.str.ptr, o.via.str.size);
        case msgpack::type::BIN: return Json{{"bin", to_hex_text(std::string_view(o.via.bin.ptr, o.via.bin.size))}};
        case msgpack::type::ARRAY: {
            Json a = Json::array();
            for (std::uint32_t i = 0; i < o.via.array.size; ++i) a.push_back(to_wire_json(o.via.array.ptr[i]));
            return a;
        }
        case msgpack::type::MAP: {
            Json m = Json::object();
            for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
                const auto& kv = o.via.map.ptr[i];
                if (kv.key.type != msgpack::type::STR) throw std::invalid_argument("a map key that is not a str");
                m[std::string(kv.key.via.str.ptr, kv.key.via.str.size)] = to_wire_json(kv.val);
            }
            return m;
        }
        default: throw std::invalid_argument("a msgpack type the vectors do not use");
    }
}

// The whole of `body` (one msgpack value) as JSON; "" is null (no body frame).
inline Json to_wire_json(std::string_view body) {
    if (body.empty()) return nullptr;
    std::size_t offset = 0;
    const auto oh = msgpack::unpack(body.data(), body.size(), offset);
    if (offset != body.size()) throw std::invalid_argument("bytes after the body");
    return to_wire_json(oh.get());
}

}  // namespace drover::vectors
