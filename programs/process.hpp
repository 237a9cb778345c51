// Process-wide allocator settings: for a program's main, never a library.
#pragma once

namespace drover {

// Tunes glibc malloc for message traffic: batches of up to a few MiB are
// taken from the heap instead of a fresh mmap each (whose pages fault in on
// every first touch), and the heap's top is not given back after every
// burst. drover's executables call it first thing; a C++ program that runs
// a Client, LocalCluster or Worker at high rates may call it too. Measured
// with drover-bench W1 over tcp: about 1.7x the tasks/s (docs/performance.md).
// With `one_arena`, every thread allocates from the main arena, the only one
// trim_heap can give back whole: for a process whose other threads are
// libzmq's (the broker), called before the zmq context is made.
void tune_allocator(bool one_arena = false);

// Runs this program again (execv of its own path, same pid, name and arguments)
// with glibc's per-thread cache of freed chunks turned off
// (GLIBC_TUNABLES=glibc.malloc.tcache_count=0, the only way to turn it off),
// unless GLIBC_TUNABLES already sets a tcache count. For the broker: the
// caches of its two threads hold up to 900 chunks scattered over a heap that
// held a backlog, which trim_heap cannot give back (the I/O thread's is out of
// reach), 2 MiB of RSS after a drain. Returns only if it did not run again.
void exec_without_thread_cache(char** argv);

}  // namespace drover
