// Running one command (command_spawn.hpp).
#include "command_spawn.hpp"
#include "drover/worker/commands.hpp"
#include "internal/children.hpp"

#include <array>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace drover {

namespace {

// The process groups of the commands running now: a pgid is removed before
// its leader is reaped, so a signal never reaches a reused id. `leaders`:
// the commands spawned and not reaped yet, which the orphan reaper leaves.
struct LiveGroups {
    std::shared_mutex spawning;  // shared by spawns, exclusive to signal_command_groups and the orphan reaper
    std::mutex mutex;
    std::set<pid_t> pgids;
    std::set<pid_t> leaders;
};
LiveGroups& live() {
    static auto* groups = new LiveGroups;  // never destroyed: the orphan reaper's thread outlives main
    return *groups;
}

struct Fd {
    int fd = -1;
    Fd() = default;
    explicit Fd(int f) : fd(f) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    Fd(Fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd = std::exchange(o.fd, -1);
        }
        return *this;
    }
    ~Fd() { reset(); }
    void reset() {
        if (fd >= 0) ::close(fd);
        fd = -1;
    }
};

std::array<Fd, 2> make_pipe() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    return {Fd(p[0]), Fd(p[1])};
}

// The spawn attributes: own process group, default signal dispositions and an empty mask.
struct Attributes {
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t actions;
    Attributes() {
        posix_spawnattr_init(&attr);
        posix_spawn_file_actions_init(&actions);
        sigset_t all, none;
        sigfillset(&all);
        sigemptyset(&none);
        posix_spawnattr_setsigdefault(&attr, &all);  // SIGPIPE and SIGHUP are ignored by the worker
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setpgroup(&attr, 0);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    }
    ~Attributes() {
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
    }
};

// Reads what `fd` has into `into` up to `max`; the rest is dropped. Returns false at EOF.
bool read_some(int fd, std::string& into, std::size_t max, bool& truncated) {
    char buf[65536];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) return errno == EINTR || errno == EAGAIN;
    if (n == 0) return false;
    const std::size_t room = max > into.size() ? max - into.size() : 0;
    into.append(buf, std::min(room, static_cast<std::size_t>(n)));
    if (static_cast<std::size_t>(n) > room) truncated = true;
    return true;
}

// The state of one running command, for the loop in run_command.
struct Run {
    pid_t pid = -1;
    Fd out, err, in;
    Fd pidfd;  // readable when the leader exits; -1 where pidfd_open is missing (polled then)
    std::string_view input;
    bool leader_gone = false;
    std::optional<Clock::time_point> kill_at;     // SIGKILL to the group then
    std::optional<Clock::time_point> give_up_at;  // stop reading pipes a grandchild escaped with
};

// Whether the leader has exited (left a zombie, so its pgid stays reserved,
// or was reaped by another part of this program: ECHILD).
bool leader_exited(pid_t pid) {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return errno == ECHILD;
    return info.si_pid == pid;
}

void write_some(Run& r) {
    const ssize_t n = ::write(r.in.fd, r.input.data(), std::min<std::size_t>(r.input.size(), 65536));
    if (n > 0) r.input.remove_prefix(static_cast<std::size_t>(n));
    if ((n < 0 && errno != EAGAIN && errno != EINTR) || r.input.empty()) r.in.reset();  // EPIPE: it stopped reading
}

int poll_ms(const Run& r, const SpawnRequest& q, bool timed_out) {
    // Without a pidfd the leader's exit is polled for: often once the pipes are closed.
    const bool pipes_open = r.out.fd >= 0 || r.err.fd >= 0;
    auto next = Clock::now() + Millis(r.pidfd.fd >= 0 && !r.leader_gone ? 1000 : pipes_open ? 20 : 1);
    if (q.deadline && !timed_out) next = std::min(next, *q.deadline);
    if (r.kill_at) next = std::min(next, *r.kill_at);
    const auto ms = std::chrono::duration_cast<Millis>(next - Clock::now()).count();
    return static_cast<int>(std::max<long long>(0, ms));
}

// Pumps the pipes until the leader has exited and the pipes are closed, killing the group on the way as due.
void pump(Run& r, const SpawnRequest& q, SpawnResult& res) {
    while (true) {
        const auto now = Clock::now();
        if (q.deadline && !res.timed_out && now >= *q.deadline) {
            res.timed_out = true;
            ::kill(-r.pid, SIGTERM);
            r.kill_at = now + q.grace;
        }
        if (r.kill_at && now >= *r.kill_at) {
            ::kill(-r.pid, SIGKILL);
            r.kill_at.reset();
        }
        if (!r.leader_gone && leader_exited(r.pid)) {
            r.leader_gone = true;
            ::kill(-r.pid, SIGKILL);  // what it left running in its group
            r.kill_at.reset();
            r.give_up_at = Clock::now() + Millis(1000);
        }
        if (r.leader_gone && ((r.out.fd < 0 && r.err.fd < 0) || Clock::now() >= *r.give_up_at)) return;
        pollfd fds[4];
        nfds_t n = 0;
        for (int fd : {r.out.fd, r.err.fd})
            if (fd >= 0) fds[n++] = {fd, POLLIN, 0};
        if (r.in.fd >= 0) fds[n++] = {r.in.fd, POLLOUT, 0};
        if (r.pidfd.fd >= 0 && !r.leader_gone) fds[n++] = {r.pidfd.fd, POLLIN, 0};
        if (::poll(fds, n, poll_ms(r, q, res.timed_out)) <= 0) continue;
        for (nfds_t i = 0; i < n; ++i) {
            if (fds[i].revents == 0 || fds[i].fd == r.pidfd.fd) continue;  // an exit is seen at the loop's top
            if (fds[i].fd == r.in.fd) {
                if (fds[i].revents & (POLLERR | POLLHUP)) r.in.reset();
                else write_some(r);
            } else if (fds[i].fd == r.out.fd) {
                if (!read_some(r.out.fd, res.out, q.max_output, res.out_truncated)) r.out.reset();
            } else if (!read_some(r.err.fd, res.err, q.max_output, res.err_truncated)) {
                r.err.reset();
            }
        }
    }
}

// Reaps the processes of group `pgid` (all sent SIGKILL): its leader, and
// orphans re-parented to this process, a subreaper. Returns the leader's
// status, or nullopt if another part of this program reaped it.
std::optional<int> reap_group(pid_t pgid) {
    int leader = 0;
    bool leader_reaped = false;
    const auto until = Clock::now() + Millis(2000);
    while (true) {
        int status = 0;
        const pid_t p = ::waitpid(-pgid, &status, leader_reaped ? WNOHANG : 0);
        if (p < 0 && errno == EINTR) continue;
        if (p == pgid) {
            leader = status;
            leader_reaped = true;
            continue;
        }
        if (p > 0) continue;
        if (!leader_reaped) return std::nullopt;  // ECHILD: its status was taken
        // No exited child of this group now: done once no process of it is left.
        if (::kill(-pgid, 0) != 0 || Clock::now() >= until) return leader;
        ::kill(-pgid, SIGKILL);
        std::this_thread::sleep_for(Millis(1));
    }
}

}  // namespace

SpawnResult run_command(const SpawnRequest& q) {
    SpawnResult res;
    auto out = make_pipe(), err = make_pipe();
    std::array<Fd, 2> in;
    if (q.input) in = make_pipe();
    Attributes a;
    if (q.input) posix_spawn_file_actions_adddup2(&a.actions, in[0].fd, 0);
    else posix_spawn_file_actions_addopen(&a.actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&a.actions, out[1].fd, 1);
    posix_spawn_file_actions_adddup2(&a.actions, err[1].fd, 2);
    if (!q.cwd.empty()) posix_spawn_file_actions_addchdir_np(&a.actions, q.cwd.c_str());
    std::vector<char*> argv, envp;
    for (const auto& s : q.argv) argv.push_back(const_cast<char*>(s.c_str()));
    argv.push_back(nullptr);
    if (q.env) {
        for (const auto& s : *q.env) envp.push_back(const_cast<char*>(s.c_str()));
        envp.push_back(nullptr);
    }
    Run r;
    {
        // Spawned and registered under a lock signal_command_groups waits for: no group is missed.
        std::shared_lock spawning(live().spawning);
        const int rc = ::posix_spawnp(&r.pid, argv[0], &a.actions, &a.attr, argv.data(), q.env ? envp.data() : environ);
        if (rc != 0) {
            res.spawn_errno = rc;
            return res;
        }
        std::lock_guard lock(live().mutex);
        live().pgids.insert(r.pid);
        live().leaders.insert(r.pid);
    }
    r.pidfd.fd = static_cast<int>(::syscall(SYS_pidfd_open, r.pid, 0));
    r.out.fd = std::exchange(out[0].fd, -1);
    r.err.fd = std::exchange(err[0].fd, -1);
    out[1].reset();
    err[1].reset();
    if (q.input) {
        r.in.fd = std::exchange(in[1].fd, -1);
        in[0].reset();
        ::fcntl(r.in.fd, F_SETFL, O_NONBLOCK);
        r.input = *q.input;
    }
    pump(r, q, res);
    {
        std::lock_guard lock(live().mutex);
        live().pgids.erase(r.pid);
    }
    const auto status = reap_group(r.pid);
    {
        std::lock_guard lock(live().mutex);
        live().leaders.erase(r.pid);
    }
    if (!status) res.status_taken = true;
    else if (WIFEXITED(*status)) res.exit_code = WEXITSTATUS(*status);
    else if (WIFSIGNALED(*status)) res.signal = WTERMSIG(*status);
    return res;
}

namespace {

// Reaps the zombies among this process's children that are no command's
// leader: orphans of commands (a process that left its command's group,
// then lost its parent) re-parented to this subreaper.
void reap_orphans() {
    std::vector<pid_t> zombies;
    for (const auto& c : child_processes())  // read without a lock: spawns go on meanwhile
        if (c.zombie) zombies.push_back(c.pid);
    if (zombies.empty()) return;
    std::unique_lock spawning(live().spawning);  // no leader is between its spawn and its registration
    std::lock_guard lock(live().mutex);
    for (const pid_t pid : zombies)
        if (!live().leaders.count(pid)) ::waitpid(pid, nullptr, WNOHANG);
}

}  // namespace

void adopt_command_orphans() {
    static const bool started = [] {
        if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) return false;
        std::thread([] {
            while (true) {
                std::this_thread::sleep_for(Millis(1000));
                reap_orphans();
            }
        }).detach();
        return true;
    }();
    (void)started;
}

void signal_command_groups(int sig) {
    std::unique_lock spawning(live().spawning);
    std::lock_guard lock(live().mutex);
    for (pid_t g : live().pgids) ::kill(-g, sig);
}

bool wait_command_groups(Millis limit) {
    const auto until = Clock::now() + limit;
    while (true) {
        {
            std::lock_guard lock(live().mutex);
            if (live().pgids.empty()) return true;
        }
        if (Clock::now() >= until) return false;
        std::this_thread::sleep_for(Millis(10));
    }
}

std::string signal_name(int sig) {
    const char* abbrev = ::sigabbrev_np(sig);
    return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

}  // namespace drover
