// This process's child processes, read from /proc.
#pragma once

#include <vector>

#include <sys/types.h>

namespace drover {

struct ChildProcess {
    pid_t pid = 0;
    pid_t pgid = 0;
    bool zombie = false;  // exited, not reaped yet
};

// The processes whose parent is this process, as /proc shows them now (an
// orphan re-parented to this process, a subreaper, among them). Empty if
// /proc cannot be read. Any thread; costs one read of /proc's listing.
std::vector<ChildProcess> child_processes();

}  // namespace drover
