#include "drover/memory.hpp"

#include <malloc.h>

#include <unistd.h>

#include <array>
#include <cstdlib>
#include <string>

namespace drover {

namespace {

// glibc's per-thread cache (tcache): up to 7 freed chunks of each of 64 sizes
// (up to 1,032 bytes), which malloc_trim neither sees nor gives back.
constexpr std::size_t k_cache_bins = 64;
constexpr std::size_t k_cache_count = 7;

// The cached chunks of a thread that held a backlog lie all over the heap,
// each pinning its page (2 MiB of a drained broker's RSS). Takes them out,
// fills the cache with fresh chunks (cut next to each other from free
// memory), and frees the old ones behind them, so that they reach the bins
// that malloc_trim gives back.
void flush_thread_cache() {
    std::array<void*, k_cache_count> old{}, fresh{};
    for (std::size_t bin = 0; bin < k_cache_bins; ++bin) {
        const std::size_t request = 24 + 16 * bin;  // a chunk of 32 + 16 * bin bytes
        for (auto& p : old) p = std::malloc(request);    // the cache's chunks first
        for (auto& p : fresh) p = std::malloc(request);  // then from the bins
        for (auto* p : fresh) std::free(p);  // refill the cache
        for (auto* p : old) std::free(p);    // the cache is full: to the bins
    }
}

}  // namespace

void tune_allocator(bool one_arena) {
    // Above the largest batch (k_batch_bytes = 1 MiB, messages up to 16 MiB):
    // 32 MiB is glibc's upper bound for the mmap threshold on 64-bit.
    ::mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    ::mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
    // Another thread's arena (libzmq's I/O thread) is never given back:
    // malloc_trim trims only the main arena's top, and a drained broker kept
    // 5 MiB resident there.
    if (one_arena) ::mallopt(M_ARENA_MAX, 1);
}

void exec_without_thread_cache(char** argv) {
    const char* current = std::getenv("GLIBC_TUNABLES");
    const std::string before = current ? current : "";
    if (before.find("glibc.malloc.tcache_count") != std::string::npos) return;  // set by the user, or done
    const std::string value = before + (before.empty() ? "" : ":") + "glibc.malloc.tcache_count=0";
    if (::setenv("GLIBC_TUNABLES", value.c_str(), 1) != 0) return;
    // The program's own path rather than /proc/self/exe, whose name ("exe")
    // would become the process's name in ps, top and pgrep.
    char path[4096];
    const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
    if (n > 0) {
        path[n] = '\0';
        ::execv(path, argv);
    }
    ::execv("/proc/self/exe", argv);
    // Could not run again (no /proc?): go on with the cache.
    if (current) ::setenv("GLIBC_TUNABLES", before.c_str(), 1);
    else ::unsetenv("GLIBC_TUNABLES");
}

bool trim_heap(std::size_t min_free) {
    // mallinfo2 walks the arenas' bins: cheap next to malloc_trim's madvise calls.
    if (min_free > 0 && ::mallinfo2().fordblks < min_free) return false;
    flush_thread_cache();
    return ::malloc_trim(0) != 0;
}

}  // namespace drover
