// Process-wide allocator settings and heap trimming for drover's programs.
#pragma once

#include <cstddef>

namespace drover {

// Tunes glibc malloc for message traffic: batches of up to a few MiB are
// taken from the heap instead of a fresh mmap each (whose pages fault in on
// every first touch), and the heap's top is not given back after every
// burst. drover's executables call it first thing; a C++ program that runs
// a Client, LocalCluster or Worker at high rates may call it too. Measured
// with drover-bench W1 over tcp: about 1.7x the tasks/s (docs/performance.md).
void tune_allocator();

// Gives free heap memory back to the system (malloc_trim). For an idle
// process after a burst: with tune_allocator() nothing is given back by
// itself. Skipped while the allocator holds less than `min_free` free bytes:
// a trim costs madvise calls (TLB shoot-downs on every core) and page faults
// to take the memory back. Returns whether any memory was released.
bool trim_heap(std::size_t min_free = 0);

}  // namespace drover
