// What the example's worker and producer share: the tasks' names and the
// struct one of them returns (msgpack'd as a map with named fields).
#pragma once

#include <msgpack.hpp>

namespace shapes {

// "rectangle": (width, height) -> Rectangle.
inline constexpr const char* k_rectangle = "rectangle";
// "collatz": n -> the number of steps from n down to 1.
inline constexpr const char* k_collatz = "collatz";

struct Rectangle {
    double area = 0;
    double perimeter = 0;
    bool square = false;
    MSGPACK_DEFINE_MAP(area, perimeter, square);
};

}  // namespace shapes
