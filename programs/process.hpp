// Process-wide allocator settings: for a program's main, never a library.
#pragma once

namespace drover {

// Sets glibc malloc for message traffic: an mmap threshold of 32 MiB, so that
// batches of up to a few MiB come from the heap rather than fresh mappings
// whose pages fault in on every first touch, and a trim threshold of 128 MiB,
// so that the heap's top is not given back after every burst. Why: the
// tasks/s of drover-bench W1 over tcp, which runs these programs. drover's
// programs call it first thing; a C++ program that runs a Client,
// LocalCluster or Worker at high rates may call it too.
// With `one_arena`, every thread allocates from the main arena, the only one
// malloc_trim gives back whole (trim_heap, internal/memory.hpp): for a
// process whose other threads are libzmq's (the broker), called before the
// zmq context is made. Why: the broker's RSS after a drain (drover-bench W4;
// tests/adversarial/memory_test.cpp).
void tune_allocator(bool one_arena = false);

// Runs this program again (execv of its own path: same pid, name and
// arguments) with glibc's per-thread cache of freed chunks turned off
// (GLIBC_TUNABLES=glibc.malloc.tcache_count=0, the only way to turn it off),
// unless GLIBC_TUNABLES already sets a tcache count. For the broker: the
// caches of its threads keep freed chunks scattered over a heap that held a
// backlog, pinning its pages, and trim_heap cannot reach the I/O thread's.
// Why: the broker's RSS after a drain (drover-bench W4; the e2e test "a
// broker that queued and drained 200,000 tasks gives its memory back").
// Returns only if it did not run again.
void exec_without_thread_cache(char** argv);

}  // namespace drover
