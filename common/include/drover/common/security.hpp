// CurveZMQ for drover's tcp sockets: keys, allow-lists, the ZAP handler, and
// the one-line helpers that bind a server or connect a client securely.
#pragma once

// Security is loaded once per process from the command line (see
// security_cli.hpp) and shared by every socket of the process. Servers (the
// broker's frontend and backend, every sink) are CURVE servers whose ZAP
// handler, a thread owned by Security, admits only the client keys of an
// allow-list; clients (producers, workers, the broker pushing to sinks)
// carry their own key pair and the server's public key.
//
// Threading: the ZAP handler, the handshake-failure monitor and SIGHUP
// reloads run on Security's service thread, started by the first
// bind_server() in a context. allowed(), generation() and reload() may be
// called from any thread. PeerGuard belongs to the thread of its socket.
//
// Plain mode: with no Security (nullptr), or on an ipc:// or inproc://
// endpoint, sockets are plain ZeroMQ.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "drover/common/logging.hpp"

namespace drover {

// Unauthenticated connections are closed when their handshake takes longer.
inline constexpr int k_default_handshake_ms = 5000;

// A bad key file, a secret others may read, a missing allow-list, a libzmq
// without CURVE: configuration errors, thrown at start.
class SecurityError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct KeyPair {
    std::string public_key;  // Z85, 40 characters
    std::string secret_key;  // Z85, 40 characters
};

// Throws: SecurityError unless libzmq was built with CURVE.
[[nodiscard]] KeyPair generate_key_pair();
[[nodiscard]] bool is_z85_key(std::string_view text) noexcept;

// Reads a secret key file (its first 40-character Z85 word) and derives the
// public key. Throws: SecurityError if the file is missing or malformed, or
// if its group or others may read or write it (mode must be 0600 or 0400).
[[nodiscard]] KeyPair read_secret_key(const std::string& path);
// Reads a public key file. Throws: SecurityError if missing or malformed.
[[nodiscard]] std::string read_public_key(const std::string& path);

// Writes DIR/NAME.key (public, 0644) and DIR/NAME.key_secret (0600).
// Throws: SecurityError if the secret exists (unless overwrite) or on I/O errors.
void write_key_pair(const std::string& dir, const std::string& name, const KeyPair& keys, bool overwrite = false);

// Writes a fleet directory: key pairs broker, producer, worker, and the
// allow-lists allow/producers/producer.key and allow/workers/worker.key.
// Throws: SecurityError as write_key_pair.
void write_fleet(const std::string& dir, bool overwrite = false);

// Allowed public keys (Z85) and the name each is logged under.
using AllowList = std::map<std::string, std::string>;

// Reads an allow-list: a directory with one NAME.key file per key, or a
// file of "KEY [NAME]" lines ('#' starts a comment line). A malformed file
// or line adds a sentence to `problems` and allows nothing. A missing path
// is a problem too, and allows nobody.
[[nodiscard]] AllowList read_allow_list(const std::string& path, std::vector<std::string>& problems);

// A sink's endpoint with its server key: "tcp://HOST:PORT?curve=KEY".
// Workers and the broker learn a sink's key from the task's reply_to.
struct KeyedEndpoint {
    std::string endpoint;    // without the key
    std::string server_key;  // empty if none was given
};
[[nodiscard]] KeyedEndpoint split_keyed_endpoint(const std::string& text);
[[nodiscard]] std::string keyed_endpoint(const std::string& endpoint, const std::string& server_key);

// True for a tcp endpoint on an address other hosts may reach (not loopback).
[[nodiscard]] bool is_network_endpoint(const std::string& endpoint);

// Who checks a connecting key, and against which allow-list.
enum class Domain : std::uint8_t {
    producers,  // the broker's frontend: producers, sinks, status requests
    workers,    // the broker's backend: workers and their supervisors
    sink,       // a sink (a producer's or drover-sink): workers and the broker
};
[[nodiscard]] const char* domain_name(Domain d) noexcept;

// The programs, for the default file names in a fleet directory.
enum class Role : std::uint8_t { broker, worker, producer, sink };

// What the command line says (security_cli.hpp adds the flags).
struct SecurityOptions {
    std::string dir;              // --security DIR: the fleet directory
    std::string secret;           // --curve-secret FILE (default DIR/<role>.key_secret)
    std::string server_public;    // --curve-server-public FILE (default DIR/broker.key)
    std::string allow_producers;  // --allow-producers PATH (default DIR/allow/producers)
    std::string allow_workers;    // --allow-workers PATH (default DIR/allow/workers)
    int handshake_ms = k_default_handshake_ms;

    [[nodiscard]] bool enabled() const { return !dir.empty() || !secret.empty(); }
    // The flags that give the same options to another process (a processes
    // pool's children).
    [[nodiscard]] std::vector<std::string> to_args() const;
};

class Security {
public:
    // Loads this role's key pair, the broker's public key and the allow-lists
    // the role serves. Throws: SecurityError (missing or bad files, a secret
    // others may read, no CURVE in libzmq).
    Security(const SecurityOptions& options, Role role, Logger log);
    ~Security();
    Security(const Security&) = delete;
    Security& operator=(const Security&) = delete;

    [[nodiscard]] const KeyPair& keys() const { return keys_; }
    [[nodiscard]] const std::string& broker_key() const { return broker_key_; }
    [[nodiscard]] int handshake_ms() const { return options_.handshake_ms; }

    // The name `key` is allowed under in `domain`, if it is allowed now.
    [[nodiscard]] std::optional<std::string> allowed(Domain domain, const std::string& key) const;
    // Grows by one at every reload.
    [[nodiscard]] std::uint64_t generation() const { return generation_.load(); }
    // Reads the allow-lists again, logs who was added and removed.
    void reload();
    // Reloads on every SIGHUP for the rest of the process's life.
    void reload_on_sighup();

    // Starts the service thread (ZAP handler, monitor, reloads) in `ctx`
    // once. Throws: SecurityError if it already runs in another context.
    void serve(zmq::context_t& ctx);
    // Logs the handshake failures of server socket `s` (rate-limited). Call
    // after serve(), from the socket's thread.
    void watch(zmq::socket_t& s, Domain domain);

private:
    struct Lists {
        AllowList producers, workers, sink;
    };
    [[nodiscard]] Lists load_lists(std::vector<std::string>& problems) const;
    void service_loop(zmq::context_t& ctx, zmq::socket_t& zap);
    void answer_zap(zmq::socket_t& zap);

    SecurityOptions options_;
    Logger log_;
    KeyPair keys_;
    std::string broker_key_;
    std::string allow_producers_, allow_workers_;

    mutable std::mutex mutex_;
    std::shared_ptr<const Lists> lists_;
    std::atomic<std::uint64_t> generation_{0};

    zmq::context_t* served_ = nullptr;
    std::thread service_;
    int wake_fd_ = -1;  // stop requests and new monitors
    int hup_fd_ = -1;   // SIGHUP
    std::atomic<bool> stopping_{false};
    std::vector<std::pair<std::string, Domain>> new_monitors_;  // guarded by mutex_
    std::set<std::pair<Domain, std::string>> rejected_;         // keys logged (guarded by mutex_)
};

// A Security for `role` when `options` turn it on, else nullptr (plain mode).
// Throws: SecurityError.
[[nodiscard]] std::shared_ptr<Security> make_security(const SecurityOptions& options, Role role, Logger log);

// Binds `s` to `endpoint` as a server for `domain`. On tcp with `security`:
// CURVE server, ZAP domain enforced (no handler, no entry), handshake
// failures logged. Always: ZMQ_HANDSHAKE_IVL and a large accept backlog.
// `security` must outlive `s`: libzmq 4.3 stalls a watched socket whose
// monitor reader has gone. Throws: zmq::error_t from bind, SecurityError.
void bind_server(zmq::context_t& ctx, zmq::socket_t& s, Security* security, Domain domain, const std::string& endpoint);

// The CURVE server options bind_server sets: secret key, ZAP domain, and
// ZMQ_ZAP_ENFORCE_DOMAIN, so that with no ZAP handler in the context every
// client is refused. Throws: SecurityError if libzmq lacks that option.
void make_curve_server(zmq::socket_t& s, const Security& security, Domain domain);

// Connects `s` to `endpoint`. On tcp with `security`: CURVE client with this
// process's key pair, and as server key the endpoint's own ("?curve=KEY") or
// else the broker's. Throws: zmq::error_t from connect.
void connect_client(zmq::socket_t& s, const Security* security, const std::string& endpoint);

// `endpoint` with this process's public key appended when it is a tcp sink
// endpoint under security and carries no key yet; else unchanged.
[[nodiscard]] std::string with_sink_key(const std::string& endpoint, const Security* security);

// Logs once that `endpoints` are reachable from the network in clear, if
// any is and there is no security.
void warn_if_exposed(const Logger& log, const Security* security, const std::vector<std::string>& endpoints);

// Remembers the CURVE key each peer of one ROUTER socket authenticated with,
// so that a key taken off the allow-list loses its session at once: ZAP
// runs only at the handshake, the broker must shut the door itself.
class PeerGuard {
public:
    PeerGuard(const Security* security, Domain domain, Logger log)
        : security_(security), domain_(domain), log_(std::move(log)) {}

    // False if the peer that sent `frame` authenticated with a key that is
    // not allowed now: drop the message. True in plain mode.
    [[nodiscard]] bool admit(const std::string& peer, const zmq::message_t& frame);
    // The same for a socket without routing ids (a sink's PULL): the peer is its key.
    [[nodiscard]] bool admit(const zmq::message_t& frame);
    // Peers whose key was removed since the last call (after a reload);
    // their later messages are not admitted.
    [[nodiscard]] std::vector<std::string> revoked();

private:
    struct Peer {
        std::string key;
        std::string name;
        bool allowed = true;
        std::uint64_t generation = 0;
    };
    const Security* security_;
    Domain domain_;
    Logger log_;
    std::unordered_map<std::string, Peer> peers_;
    std::vector<std::string> revoked_;  // found by admit(), not yet returned by revoked()
    std::uint64_t checked_generation_ = 0;
};

}  // namespace drover
