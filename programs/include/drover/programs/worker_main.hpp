// The drover-worker program, callable from a user's main.
#pragma once

#include "drover/worker/registry.hpp"

namespace drover {

// The whole drover-worker command line: parses argv, sets up logging and
// signals, and runs a Worker (solo, threads) or a supervisor of child
// processes (processes), each running the tasks in `registry`.
// Returns the process exit status. A C++ user calls it from their own main:
//
//   int main(int argc, char** argv) {
//       drover::Registry tasks;
//       drover::add_builtin_tasks(tasks);
//       tasks.add("square", [](double x) { return x * x; });
//       return drover::worker_main(argc, argv, tasks);
//   }
int worker_main(int argc, char** argv, const Registry& registry);

}  // namespace drover
