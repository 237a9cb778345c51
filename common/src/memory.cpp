#include "drover/memory.hpp"

#include <malloc.h>

namespace drover {

void tune_allocator() {
    // Above the largest batch (k_batch_bytes = 1 MiB, messages up to 16 MiB):
    // 32 MiB is glibc's upper bound for the mmap threshold on 64-bit.
    ::mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    ::mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
}

bool trim_heap(std::size_t min_free) {
    // mallinfo2 walks the arenas' bins: cheap next to malloc_trim's madvise calls.
    if (min_free > 0 && ::mallinfo2().fordblks < min_free) return false;
    return ::malloc_trim(0) != 0;
}

}  // namespace drover
