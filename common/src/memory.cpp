// Giving free heap memory back: the thread cache flushed, then malloc_trim.
#include "internal/memory.hpp"

#include <malloc.h>

#include <array>
#include <cstdlib>

namespace drover {

namespace {

// glibc's per-thread cache (tcache): up to 7 freed chunks of each of 64 sizes
// (up to 1,032 bytes), which malloc_trim neither sees nor gives back.
constexpr std::size_t k_cache_bins = 64;
constexpr std::size_t k_cache_count = 7;

// The cached chunks of a thread that held a backlog lie all over the heap,
// each pinning its page (the broker's RSS after a drain: drover-bench W4,
// tests/adversarial/memory_test.cpp). Takes them out,
// fills the cache with fresh chunks (cut next to each other from free
// memory), and frees the old ones behind them, so that they reach the bins
// that malloc_trim gives back.
void flush_thread_cache() {
    std::array<void*, k_cache_count> old{}, fresh{};
    for (std::size_t bin = 0; bin < k_cache_bins; ++bin) {
        const std::size_t request = 24 + 16 * bin;       // a chunk of 32 + 16 * bin bytes
        for (auto& p : old) p = std::malloc(request);    // the cache's chunks first
        for (auto& p : fresh) p = std::malloc(request);  // then from the bins
        for (auto* p : fresh) std::free(p);              // refill the cache
        for (auto* p : old) std::free(p);                // the cache is full: to the bins
    }
}

}  // namespace

bool trim_heap(std::size_t min_free) {
    // mallinfo2 walks the arenas' bins: cheap next to malloc_trim's madvise calls.
    if (min_free > 0 && ::mallinfo2().fordblks < min_free) return false;
    flush_thread_cache();
    return ::malloc_trim(0) != 0;
}

}  // namespace drover
