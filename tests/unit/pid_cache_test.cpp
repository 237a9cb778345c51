// getpid() from memory (programs/pid_cache.cpp, linked into this program as
// into drover's daemons): the process's pid, and the child's own in a child.
#include <catch2/catch.hpp>

#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

pid_t kernel_pid() { return static_cast<pid_t>(::syscall(SYS_getpid)); }

}  // namespace

TEST_CASE("getpid from memory is the process's pid, and the child's own after a fork", "[pid_cache]") {
    const pid_t parent = ::getpid();
    CHECK(parent == kernel_pid());
    CHECK(::getpid() == parent);

    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        const pid_t mine = ::getpid();
        ::_exit(mine == kernel_pid() && mine != parent ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(::getpid() == parent);
}
