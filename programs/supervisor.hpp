// The supervisor of drover-worker's processes pool.
#pragma once

#include <string>
#include <vector>

#include "drover/common/logging.hpp"
#include "drover/common/stop.hpp"
#include "drover/worker/worker.hpp"

namespace drover {

// The environment variable by which a supervisor gives its children its
// key for LOST reports (hex); each child says it at HELLO (Hello::lost_key).
inline constexpr const char* k_lost_key_env = "DROVER_LOST_KEY";

// Keeps options.concurrency solo children alive until `stop`, each started
// as `child_args` (this program's command line for one child, run as
// /proc/self/exe). Tells the broker (LOST) at once when one dies, so that
// its tasks come back without waiting for its heartbeat to expire. A child
// that dies within a second of its start is restarted after a back-off
// doubling from 100 ms to 5 s; one that exits k_exit_replaced at once. The
// first two stop requests are passed to the children as SIGTERM (a child
// stops at once at its second), later ones as SIGKILL. Runs on the calling thread; returns the exit status (0) once
// every child has exited after a stop.
int run_supervisor(const WorkerOptions& options, const std::vector<std::string>& child_args, Logger log,
                   StopSource& stop);

}  // namespace drover
