#include "drover/memory.hpp"

#include <malloc.h>

namespace drover {

void tune_allocator() {
    // Above the largest batch (k_batch_bytes = 1 MiB, messages up to 16 MiB):
    // 32 MiB is glibc's upper bound for the mmap threshold on 64-bit.
    ::mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    ::mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
}

bool trim_heap() { return ::malloc_trim(0) != 0; }

}  // namespace drover
