// getpid() answered from memory, for drover's executables (drover-broker,
// drover-worker, drover-producer, drover-sink; and the unit tests, which
// test it: tests/unit/pid_cache_test.cpp) and for no library user's program.
//
// Why: libzmq asks getpid() at every signal between its threads (its check
// for a fork, in signaler_t), and glibc (2.25 on) does not cache the pid, so
// each call is a system call, many on a task's round trip through broker
// and worker (drover-bench W2 measures that round trip).
// This definition in the executable takes the place of glibc's for every
// library it loads. It holds its value across threads and is cleared in the
// child of a fork (pthread_atfork), the only way drover starts a process
// (fork then exec); it is set before main, so that a vfork child, which
// shares this memory, only ever reads it. A child made without fork()
// (vfork, posix_spawn, clone, _Fork) skips the atfork handler and reads the
// parent's pid until it execs: such a child must exec at once, as drover's
// do, and a fork child must not vfork before its first getpid().
#include <atomic>

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace {

std::atomic<pid_t> g_pid{0};

pid_t read_pid() { return static_cast<pid_t>(::syscall(SYS_getpid)); }

const bool g_ready = [] {
    g_pid.store(read_pid(), std::memory_order_relaxed);
    ::pthread_atfork(nullptr, nullptr, [] { g_pid.store(0, std::memory_order_relaxed); });
    return true;
}();

}  // namespace

extern "C" pid_t getpid() noexcept {
    pid_t pid = g_pid.load(std::memory_order_relaxed);
    if (pid == 0) {
        pid = read_pid();
        g_pid.store(pid, std::memory_order_relaxed);
    }
    return pid;
}
