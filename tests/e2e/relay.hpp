// A fault-injecting TCP relay for the multi-host e2e tests: listens on an
// address, forwards each connection to a target, and can delay (with jitter,
// order preserved), stall, reset and cut the traffic on demand.
//
// It runs on one thread of the test process; given a network namespace name,
// that thread enters the namespace (setns) first, so its sockets live there.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace drover::test {

class Relay {
public:
    enum class Dir { up = 0, down = 1, both = 2 };  // up: client -> target, down: target -> client

    // Listens on listen_ip:listen_port and forwards to target_ip:target_port,
    // inside namespace `netns` ("" for the test's own namespace).
    Relay(std::string netns, std::string listen_ip, int listen_port, std::string target_ip, int target_port);
    ~Relay();
    Relay(const Relay&) = delete;
    Relay& operator=(const Relay&) = delete;

    // Each chunk read is forwarded delay +- jitter after it arrived, never
    // before the chunk read before it (order is kept).
    void set_delay(Dir dir, std::chrono::milliseconds delay, std::chrono::milliseconds jitter = {});
    // Forwards nothing for `d` (connections stay open; buffers fill, then reading stops).
    void stall(std::chrono::milliseconds d);
    // Closes every connection with a RST on both sides.
    void reset_all();
    // cut: resets every connection and refuses (accept + RST) new ones until restore().
    void cut();
    void restore();

    [[nodiscard]] std::uint64_t connections() const { return accepted_.load(); }
    [[nodiscard]] std::uint64_t bytes(Dir dir) const { return bytes_[dir == Dir::down ? 1 : 0].load(); }
    // Bytes read from the sending side (forwarded or still held by a delay or a stall).
    [[nodiscard]] std::uint64_t received(Dir dir) const { return received_[dir == Dir::down ? 1 : 0].load(); }

    // Per-direction buffering bound: reading from a side stops past this.
    static constexpr std::size_t k_max_buffered = 4u << 20;

private:
    void run();
    void wake();  // makes the poll loop look at the settings again
    struct Impl;

    std::string netns_, listen_ip_, target_ip_;
    int listen_port_, target_port_;
    std::mutex mu_;
    long long delay_ms_[2] = {0, 0}, jitter_ms_[2] = {0, 0};
    std::chrono::steady_clock::time_point stall_until_{};
    bool reset_requested_ = false, cut_ = false;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> accepted_{0};
    std::atomic<std::uint64_t> bytes_[2] = {{0}, {0}};
    std::atomic<std::uint64_t> received_[2] = {{0}, {0}};
    int wake_[2] = {-1, -1};  // self-pipe: wakes the poll loop on changes
    int ready_ = 0;           // 1 listening, -1 failed (under mu_)
    std::string error_;
    std::thread thread_;
};

}  // namespace drover::test
