// Giving free heap memory back to the system.
#pragma once

#include <cstddef>

namespace drover {

// Gives free heap memory back to the system (malloc_trim, after moving the
// calling thread's cached free chunks where it can see them). For an idle
// process after a burst: with tune_allocator() nothing is given back by
// itself. Skipped while the allocator holds less than `min_free` free bytes:
// a trim costs madvise calls (TLB shoot-downs on every core) and page faults
// to take the memory back. Returns whether any memory was released.
bool trim_heap(std::size_t min_free = 0);

}  // namespace drover
