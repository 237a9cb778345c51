// Process-wide allocator settings (process.hpp says why).
#include "process.hpp"

#include <malloc.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace drover {

void tune_allocator(bool one_arena) {
    // Above the largest batch (k_batch_bytes): 32 MiB is glibc's upper bound
    // for the mmap threshold on 64-bit.
    ::mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    ::mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
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

}  // namespace drover
