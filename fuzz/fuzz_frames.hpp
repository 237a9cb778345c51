// The layout of a decode_fuzz input: one message in frames, as a socket delivers it.
#pragma once

// [ n: 1 byte ][ len: 2 bytes, little-endian ][ frame ] ... [ last frame: the rest ]
//
// The message has 1 + n % 4 frames (what follows the routing id on a ROUTER);
// every frame but the last is preceded by its length, cut to the bytes left.
// A length of at most 64 KiB is plenty: libFuzzer's inputs are smaller.

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace drover::fuzz {

inline constexpr std::size_t k_max_frames = 4;

// Returns the frames of an input; an empty input has none.
inline std::vector<std::string_view> split_frames(std::string_view in) {
    std::vector<std::string_view> frames;
    if (in.empty()) return frames;
    const std::size_t count = 1 + static_cast<unsigned char>(in[0]) % k_max_frames;
    in.remove_prefix(1);
    while (frames.size() + 1 < count) {
        std::size_t len = 0;
        for (std::size_t i = 0; i < 2 && !in.empty(); ++i) {
            len |= std::size_t{static_cast<unsigned char>(in[0])} << (8 * i);
            in.remove_prefix(1);
        }
        len = std::min(len, in.size());
        frames.push_back(in.substr(0, len));
        in.remove_prefix(len);
    }
    frames.push_back(in);
    return frames;
}

// The input that split_frames turns back into `frames` (1 to 4, each but the last < 64 KiB).
inline std::string join_frames(const std::vector<std::string>& frames) {
    std::string out(1, static_cast<char>(frames.size() - 1));
    for (std::size_t i = 0; i + 1 < frames.size(); ++i) {
        out.push_back(static_cast<char>(frames[i].size() & 0xff));
        out.push_back(static_cast<char>(frames[i].size() >> 8));
        out += frames[i];
    }
    out += frames.back();
    return out;
}

}  // namespace drover::fuzz
