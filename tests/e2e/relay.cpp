// A fault-injecting TCP relay: one poll loop on its own thread.
#include "relay.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <list>
#include <random>
#include <stdexcept>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

namespace drover::test {

namespace {

using Clock = std::chrono::steady_clock;

sockaddr_in make_addr(const std::string& ip, int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1) throw std::runtime_error("relay: bad address " + ip);
    return a;
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Closes with a RST rather than a FIN.
void close_rst(int fd) {
    if (fd < 0) return;
    linger l{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(fd);
}

struct Chunk {
    Clock::time_point due;
    std::string data;
    std::size_t off = 0;
};

// One relayed connection. Side 0 is the client, side 1 the target; queue d
// holds what was read from side d and is written to side 1-d.
struct Conn {
    int fd[2] = {-1, -1};
    std::deque<Chunk> q[2];
    std::size_t queued[2] = {0, 0};
    Clock::time_point last_due[2]{};
    bool eof[2] = {false, false};        // side d sent FIN
    bool shut_sent[2] = {false, false};  // FIN passed on to side 1-d
    bool dead = false;
};

}  // namespace

Relay::Relay(std::string netns, std::string listen_ip, int listen_port, std::string target_ip, int target_port)
    : netns_(std::move(netns)),
      listen_ip_(std::move(listen_ip)),
      target_ip_(std::move(target_ip)),
      listen_port_(listen_port),
      target_port_(target_port) {
    if (::pipe(wake_) != 0) throw std::runtime_error("relay: pipe failed");
    set_nonblocking(wake_[0]);
    set_nonblocking(wake_[1]);
    thread_ = std::thread([this] { run(); });
    // Wait until it listens (or failed).
    for (int i = 0; i < 500; ++i) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (ready_ == 1) return;
            if (ready_ < 0) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    stop_ = true;
    thread_.join();
    ::close(wake_[0]);
    ::close(wake_[1]);
    throw std::runtime_error("relay did not start: " + error_);
}

void Relay::wake() {
    const char c = 'w';
    (void)!::write(wake_[1], &c, 1);
}

Relay::~Relay() {
    stop_ = true;
    wake();
    if (thread_.joinable()) thread_.join();
    ::close(wake_[0]);
    ::close(wake_[1]);
}

void Relay::set_delay(Dir dir, std::chrono::milliseconds delay, std::chrono::milliseconds jitter) {
    std::lock_guard<std::mutex> lock(mu_);
    for (int d = 0; d < 2; ++d) {
        if (dir != Dir::both && static_cast<int>(dir) != d) continue;
        delay_ms_[d] = delay.count();
        jitter_ms_[d] = jitter.count();
    }
}

void Relay::stall(std::chrono::milliseconds d) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stall_until_ = std::max(stall_until_, Clock::now() + d);
    }
    wake();
}

void Relay::reset_all() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        reset_requested_ = true;
    }
    wake();
}

void Relay::cut() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        cut_ = true;
        reset_requested_ = true;
    }
    wake();
}

void Relay::restore() {
    std::lock_guard<std::mutex> lock(mu_);
    cut_ = false;
}

void Relay::run() {
    auto fail = [this](const std::string& why) {
        std::lock_guard<std::mutex> lock(mu_);
        error_ = why + ": " + std::strerror(errno);
        ready_ = -1;
    };
    if (!netns_.empty()) {
        const std::string path = "/run/netns/" + netns_;
        const int nsfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (nsfd < 0) return fail("open " + path);
        // Only this thread moves: network namespaces are per thread.
        if (::setns(nsfd, CLONE_NEWNET) != 0) {
            ::close(nsfd);
            return fail("setns " + netns_);
        }
        ::close(nsfd);
    }
    const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in la{};
    try {
        la = make_addr(listen_ip_, listen_port_);
    } catch (const std::exception& e) {
        ::close(lfd);
        return fail(e.what());
    }
    if (::bind(lfd, reinterpret_cast<sockaddr*>(&la), sizeof la) != 0 || ::listen(lfd, 64) != 0) {
        fail("bind/listen " + listen_ip_ + ":" + std::to_string(listen_port_));
        ::close(lfd);
        return;
    }
    set_nonblocking(lfd);
    const sockaddr_in target = make_addr(target_ip_, target_port_);
    {
        std::lock_guard<std::mutex> lock(mu_);
        ready_ = 1;
    }

    std::mt19937_64 rng(std::random_device{}());
    std::list<Conn> conns;
    auto kill_conn = [](Conn& c) {
        close_rst(c.fd[0]);
        close_rst(c.fd[1]);
        c.fd[0] = c.fd[1] = -1;
        c.dead = true;
    };

    while (!stop_) {
        long long delay[2], jitter[2];
        Clock::time_point stall_until;
        bool reset = false, cut = false;
        {
            std::lock_guard<std::mutex> lock(mu_);
            for (int d = 0; d < 2; ++d) delay[d] = delay_ms_[d], jitter[d] = jitter_ms_[d];
            stall_until = stall_until_;
            reset = reset_requested_;
            reset_requested_ = false;
            cut = cut_;
        }
        if (reset)
            for (auto& c : conns) kill_conn(c);
        conns.remove_if([](const Conn& c) { return c.dead; });

        const auto now = Clock::now();
        const bool stalled = now < stall_until;
        // What to wait for, and until when.
        auto wake_at = now + std::chrono::milliseconds(100);
        if (stalled) wake_at = std::min(wake_at, stall_until);
        std::vector<pollfd> pfds{{wake_[0], POLLIN, 0}, {lfd, POLLIN, 0}};
        std::vector<std::pair<Conn*, int>> owners{{nullptr, 0}, {nullptr, 0}};
        for (auto& c : conns) {
            for (int side = 0; side < 2; ++side) {
                short ev = 0;
                if (!c.eof[side] && c.queued[side] < k_max_buffered) ev |= POLLIN;
                auto& out = c.q[1 - side];  // written to this side
                if (!out.empty() && !stalled) {
                    if (out.front().due <= now) ev |= POLLOUT;
                    else wake_at = std::min(wake_at, out.front().due);
                }
                // Nothing wanted: leave the fd out (a hung-up socket would wake poll at once).
                pfds.push_back({ev ? c.fd[side] : -1, ev, 0});
                owners.emplace_back(&c, side);
            }
        }
        const auto wait_ms =
            std::max<long long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(wake_at - now).count() + 1);
        const int n = ::poll(pfds.data(), pfds.size(), static_cast<int>(wait_ms));
        if (n < 0 && errno != EINTR) break;
        if (pfds[0].revents & POLLIN) {
            char buf[64];
            while (::read(wake_[0], buf, sizeof buf) > 0) {}
        }
        if (pfds[1].revents & POLLIN) {
            while (true) {
                const int cfd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
                if (cfd < 0) break;
                ++accepted_;
                if (cut) {
                    close_rst(cfd);
                    continue;
                }
                const int tfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                timeval tv{1, 0};
                ::setsockopt(tfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
                if (::connect(tfd, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0) {
                    close_rst(cfd);
                    ::close(tfd);
                    continue;
                }
                for (int fd : {cfd, tfd}) {
                    set_nonblocking(fd);
                    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                }
                Conn c;
                c.fd[0] = cfd;
                c.fd[1] = tfd;
                conns.push_back(std::move(c));
            }
        }
        const auto t = Clock::now();
        for (std::size_t i = 2; i < pfds.size(); ++i) {
            auto [cp, side] = owners[i];
            Conn& c = *cp;
            if (c.dead) continue;
            const short re = pfds[i].revents;
            if (re & (POLLIN | POLLHUP | POLLERR)) {
                if (!c.eof[side] && c.queued[side] < k_max_buffered) {
                    char buf[65536];
                    const auto got = ::recv(c.fd[side], buf, sizeof buf, 0);
                    if (got > 0) {
                        long long ms = delay[side];
                        if (jitter[side] > 0)
                            ms += std::uniform_int_distribution<long long>(-jitter[side], jitter[side])(rng);
                        const auto due = std::max(c.last_due[side], t + std::chrono::milliseconds(std::max(0LL, ms)));
                        c.last_due[side] = due;
                        c.q[side].push_back({due, std::string(buf, static_cast<std::size_t>(got)), 0});
                        c.queued[side] += static_cast<std::size_t>(got);
                        received_[side] += static_cast<std::uint64_t>(got);
                    } else if (got == 0) {
                        c.eof[side] = true;
                    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                        kill_conn(c);  // RST from one side: pass it on
                        continue;
                    }
                } else if (re & POLLERR) {
                    kill_conn(c);
                    continue;
                }
            }
            if ((re & POLLOUT) && !stalled) {
                auto& out = c.q[1 - side];
                while (!out.empty() && out.front().due <= t) {
                    auto& ch = out.front();
                    const auto sent =
                        ::send(c.fd[side], ch.data.data() + ch.off, ch.data.size() - ch.off, MSG_NOSIGNAL);
                    if (sent < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) kill_conn(c);
                        break;
                    }
                    ch.off += static_cast<std::size_t>(sent);
                    c.queued[1 - side] -= static_cast<std::size_t>(sent);
                    bytes_[1 - side] += static_cast<std::uint64_t>(sent);
                    if (ch.off < ch.data.size()) break;
                    out.pop_front();
                }
                if (c.dead) continue;
            }
        }
        // Pass FINs on once everything before them went out; drop finished connections.
        for (auto& c : conns) {
            if (c.dead) continue;
            for (int side = 0; side < 2; ++side)
                if (c.eof[side] && c.q[side].empty() && !c.shut_sent[side]) {
                    ::shutdown(c.fd[1 - side], SHUT_WR);
                    c.shut_sent[side] = true;
                }
            if (c.shut_sent[0] && c.shut_sent[1]) {
                ::close(c.fd[0]);
                ::close(c.fd[1]);
                c.fd[0] = c.fd[1] = -1;
                c.dead = true;
            }
        }
    }
    for (auto& c : conns) kill_conn(c);
    ::close(lfd);
}

}  // namespace drover::test
