// Several "machines" on one: Linux network namespaces joined by a bridge, for
// the multi-host e2e tests. Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN).
//
// Layout of one Network (all names unique per process and instance):
//   switch namespace  drvmh-<pid>-<n>-sw : bridge br0, one veth "p<i>" per host
//   host namespace    drvmh-<pid>-<n>-h<i> : "eth0" (the peer of p<i>) with
//                     198.18.X.<i+1>/24, and lo up
// Nothing is created in the root namespace, so the host's own network is untouched.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "process.hpp"

namespace drover::test {

// Thrown when namespaces cannot be made here (not root, EPERM in a container):
// tests report it as a skip, never as a failure.
struct NetnsUnavailable : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Runs argv (argv[0] a path or a name looked up in PATH) to completion and
// returns its stdout; throws std::runtime_error with the command line and its
// stderr when it exits non-zero or outlives `timeout`.
std::string run_command(const std::vector<std::string>& argv,
                        std::chrono::milliseconds timeout = std::chrono::seconds(20));
// As run_command but returns the exit code (-1 on timeout); stdout into *out,
// stderr into *err (or also into *out when err is null).
int run_command_rc(const std::vector<std::string>& argv, std::string* out = nullptr,
                   std::chrono::milliseconds timeout = std::chrono::seconds(20), std::string* err = nullptr);
// The full path of the `ip` program.
const std::string& ip_exe();

class Network;

// One host: a network namespace with one address.
class Host {
public:
    Host(Network& net, std::size_t index, std::string ns, std::string address)
        : net_(&net), index_(index), ns_(std::move(ns)), address_(std::move(address)) {}
    [[nodiscard]] const std::string& name() const { return ns_; }  // the namespace name
    [[nodiscard]] const std::string& address() const { return address_; }
    // "tcp://ADDRESS:PORT"
    [[nodiscard]] std::string endpoint(int port) const { return "tcp://" + address_ + ":" + std::to_string(port); }
    // Starts argv inside this host (ip netns exec NS argv...), output to log_path.
    std::unique_ptr<Process> run(const std::vector<std::string>& argv, const std::string& log_path = {},
                                 const std::string& stdin_path = {}) const;
    // Runs argv inside this host to completion (see run_command).
    [[nodiscard]] std::string exec(const std::vector<std::string>& argv,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(20)) const;
    int exec_rc(const std::vector<std::string>& argv, std::string* out = nullptr,
                std::chrono::milliseconds timeout = std::chrono::seconds(20)) const;
    // The pids of every process in this namespace (ip netns pids).
    [[nodiscard]] std::vector<pid_t> pids() const;
    // kill -9 every process in this namespace: the machine "loses power".
    void kill_all() const;
    // Pulls / plugs the cable: the switch side of the host's link down / up.
    void cut() const;
    void restore() const;

private:
    Network* net_;
    std::size_t index_;
    std::string ns_, address_;
};

class Network {
public:
    // Creates the switch and `hosts` hosts. Throws NetnsUnavailable when
    // namespaces are refused here, std::runtime_error on other failures.
    explicit Network(std::size_t hosts);
    ~Network();
    Network(const Network&) = delete;
    Network& operator=(const Network&) = delete;

    // Returns a Network, or nullptr with `why` set when namespaces are unavailable.
    static std::unique_ptr<Network> try_create(std::size_t hosts, std::string& why);

    [[nodiscard]] Host& host(std::size_t i) { return hosts_.at(i); }
    [[nodiscard]] std::size_t size() const { return hosts_.size(); }
    [[nodiscard]] const std::string& switch_ns() const { return switch_ns_; }
    // Is tc netem usable here (kernel module sch_netem)? Checked once.
    [[nodiscard]] bool netem_available() const { return netem_; }

    void cut(std::size_t i) const { hosts_.at(i).cut(); }
    void restore(std::size_t i) const { hosts_.at(i).restore(); }

    // Deletes namespaces left by crashed earlier runs (prefix drvmh-<pid>- of a dead pid).
    static void remove_stale();

private:
    friend class Host;
    void teardown() noexcept;
    std::string prefix_, switch_ns_;
    std::vector<Host> hosts_;
    std::vector<std::string> created_;  // namespaces to delete, switch first
    bool netem_ = false;
};

}  // namespace drover::test
