// eventfd-backed stop requests, raised from signal handlers.
#include "drover/common/stop.hpp"

#include <csignal>
#include <cstdint>
#include <system_error>

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace drover {

namespace {
std::atomic<StopSource*> g_signal_target{nullptr};
std::atomic<bool> g_signal_once{false};

std::atomic<bool> g_signal_seen{false};  // with once: a SIGINT or SIGTERM came

extern "C" void on_stop_signal(int sig) {
    auto* s = g_signal_target.load();
    if (!s) return;
    // One exchange: two signals at once on two threads count once.
    if (sig == k_stop_now_signal || !g_signal_once.load() || !g_signal_seen.exchange(true)) s->request();
}
}  // namespace

StopSource::StopSource() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

StopSource::~StopSource() {
    StopSource* self = this;
    g_signal_target.compare_exchange_strong(self, nullptr);
    ::close(fd_);
}

void StopSource::request() noexcept {
    requests_.fetch_add(1);
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(fd_, &one, sizeof one);
}

namespace {
void on_hangup(int) {}
}  // namespace

// A handler that does nothing rather than SIG_IGN: an ignored signal stays
// ignored in the programs a task may exec, a handled one does not.
void ignore_hangup() {
    struct sigaction sa {};
    sa.sa_handler = on_hangup;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGHUP, &sa, nullptr);
}

void stop_on_signals(StopSource& stop, bool once) {
    g_signal_once.store(once);
    g_signal_target.store(&stop);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    if (once) ::sigaction(k_stop_now_signal, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
}

int fork_for_exec() noexcept {
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    ::pthread_sigmask(SIG_BLOCK, &block, &old);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::signal(SIGINT, SIG_DFL);
        ::signal(SIGTERM, SIG_DFL);
        ::signal(SIGPIPE, SIG_DFL);
        ::sigprocmask(SIG_SETMASK, &old, nullptr);
        return 0;
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return pid;
}

}  // namespace drover
