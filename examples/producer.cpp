// shapes-producer BROKER: submits this project's tasks to the broker's
// frontend (e.g. tcp://127.0.0.1:5555) and prints their results, one a line.
// Exits 1 if a task fails or no result comes within 60 s.
#include <chrono>
#include <cstdint>
#include <future>
#include <iostream>
#include <vector>

#include "drover/client/client.hpp"
#include "shapes.hpp"

namespace {

// The result of `f`, or an exception if it does not come in time or failed.
drover::Result await(std::future<drover::Result>& f) {
    if (f.wait_for(std::chrono::seconds(60)) != std::future_status::ready)
        throw std::runtime_error("no result within 60 s");
    return f.get();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: shapes-producer BROKER_FRONTEND\n";
        return 2;
    }
    try {
        zmq::context_t ctx;
        drover::ClientOptions options;
        options.broker = argv[1];
        drover::Client client(ctx, options);

        // Two tasks in flight at once, each with its future.
        auto a = client.submit(shapes::k_rectangle, 3.0, 4.0);
        auto b = client.submit(shapes::k_rectangle, 2.5, 2.5);
        for (auto* f : {&a, &b}) {
            auto r = await(*f).as<shapes::Rectangle>();
            std::cout << "rectangle area=" << r.area << " perimeter=" << r.perimeter
                      << " square=" << (r.square ? "yes" : "no") << "\n";
        }

        // One task per argument, results in the arguments' order.
        std::vector<std::int64_t> ns{1, 6, 27, 97};
        auto results = client.map(shapes::k_collatz, ns);
        for (std::size_t i = 0; i < ns.size(); ++i)
            std::cout << "collatz " << ns[i] << " " << results[i].as<std::int64_t>() << "\n";

        // A task's exception comes back as its error.
        auto bad = client.submit(shapes::k_rectangle, -1.0, 2.0);
        auto r = await(bad);
        std::cout << "rectangle -1x2 " << drover::proto::status_name(r.status) << ": " << r.error << "\n";
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "shapes-producer: " << e.what() << "\n";
        return 1;
    }
}
