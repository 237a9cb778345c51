// `drover-producer map`: one task per argument or input line, results in order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "drover/client/client.hpp"
#include "drover/common/stop.hpp"
#include "drover/worker/registry.hpp"

namespace drover {

struct MapOptions {
    std::string task;
    std::vector<std::string> args;  // one task per word; a lone "-": lines of stdin
    std::string args_from;          // lines of this file, one task each
    std::string joblog;             // a JSON line per finished task
    bool resume = false;            // skip the tasks the joblog has as ok
    bool bar = false;               // progress on stderr, terminal or not
    bool halt_on_error = false;     // stop submitting at the first failure
    bool timing = false;
    bool retry_on_error = false;
    std::uint32_t timeout_ms = 0;
};

// Checks what the parser cannot, the arguments' JSON included. Throws:
// std::invalid_argument naming the argument or option.
void check_map_options(const MapOptions& o);

// Runs the map through `client`; Ctrl-C (`stop`) cancels what is unfinished
// and ends the process with 130. Returns the exit status: 0 if every task
// was ok, 1 otherwise.
int run_map(Client& client, const MapOptions& o, const StopSource& stop);

// The same, each task run in turn on this thread through `registry`.
int run_map_inline(const MapOptions& o, const Registry& registry);

}  // namespace drover
