// shapes-worker: a drover worker running this project's own tasks, with
// drover-worker's whole command line (--broker, --pool, -c, --security ...).
#include <cstdint>
#include <stdexcept>

#include "drover/programs/worker_main.hpp"
#include "shapes.hpp"

namespace {

shapes::Rectangle rectangle(double width, double height) {
    if (width < 0 || height < 0) throw std::invalid_argument("a side is negative");
    return {width * height, 2 * (width + height), width == height};
}

std::int64_t collatz(std::int64_t n) {
    if (n < 1) throw std::invalid_argument("n must be at least 1");
    std::int64_t steps = 0;
    for (; n != 1; ++steps) n = n % 2 == 0 ? n / 2 : 3 * n + 1;
    return steps;
}

}  // namespace

int main(int argc, char** argv) {
    drover::Registry tasks;
    tasks.add(shapes::k_rectangle, rectangle);
    tasks.add(shapes::k_collatz, collatz);
    return drover::worker_main(argc, argv, tasks);
}
