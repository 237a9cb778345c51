// CurveZMQ keys, allow-lists, the ZAP handler (RFC 27) and secure sockets.
#include "drover/common/security.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq_addon.hpp>

#include "internal/net.hpp"

namespace drover {

namespace {

namespace fs = std::filesystem;

// ZMQ_ZAP_ENFORCE_DOMAIN is a draft option in libzmq 4.3 (zmq.h declares it
// only with ZMQ_BUILD_DRAFT_API); Debian's library accepts it at run time.
constexpr int k_zap_enforce_domain = 93;
constexpr int k_backlog = 1024;
constexpr std::size_t k_logged_keys_limit = 10000;
constexpr auto k_failure_log_period = std::chrono::seconds(60);
const char* const k_key_property = "X-Key";  // ZAP metadata: the peer's public key

std::atomic<int> g_hup_fd{-1};

extern "C" void on_sighup(int) {
    const int fd = g_hup_fd.load();
    if (fd < 0) return;
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
}

void require_curve() {
    if (!zmq_has("curve"))
        throw SecurityError(
            "this libzmq was built without CURVE (zmq_has(\"curve\") is false): security needs "
            "libzmq with libsodium, e.g. Debian's libzmq5");
}

std::string role_file(Role role) {
    switch (role) {
        case Role::broker: return "broker";
        case Role::worker: return "worker";
        case Role::producer:
        case Role::sink: return "producer";
    }
    return "producer";
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw SecurityError("cannot read key file '" + path + "': " + std::strerror(errno));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The first 40-character Z85 word of a key file; comment lines start with '#'.
std::optional<std::string> first_key(const std::string& text) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream words(line);
        std::string word;
        if (!(words >> word)) continue;
        if (is_z85_key(word)) return word;
        if (word.front() == '#') continue;
        return std::nullopt;
    }
    return std::nullopt;
}

void write_file_mode(const std::string& path, const std::string& text, mode_t mode, bool overwrite) {
    const int flags = O_WRONLY | O_CREAT | (overwrite ? O_TRUNC : O_EXCL) | O_CLOEXEC;
    const int fd = ::open(path.c_str(), flags, mode);
    if (fd < 0) {
        if (errno == EEXIST) throw SecurityError("'" + path + "' exists: not overwritten (use --force to replace it)");
        throw SecurityError("cannot write '" + path + "': " + std::strerror(errno));
    }
    const bool ok =
        ::fchmod(fd, mode) == 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    if (!ok) throw SecurityError("cannot write '" + path + "': " + std::strerror(errno));
}

std::string zap_domain(Domain d) { return std::string("drover.") + domain_name(d); }

std::optional<Domain> parse_zap_domain(std::string_view s) {
    for (auto d : {Domain::producers, Domain::workers, Domain::sink})
        if (s == zap_domain(d)) return d;
    return std::nullopt;
}

std::string socket_label(Domain d) {
    switch (d) {
        case Domain::producers: return "frontend";
        case Domain::workers: return "backend";
        case Domain::sink: return "sink";
    }
    return "?";
}

bool is_tcp(const std::string& endpoint) { return endpoint.rfind("tcp://", 0) == 0; }

// Why a handshake failed, from a monitor event (the peer's address is not
// in 4.3's events: only the listening endpoint).
std::optional<std::string> failure_reason(std::uint16_t event, std::uint32_t value) {
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
        if (value == EAGAIN) return "timeout (a connection that did not finish its handshake in time)";
        if (value == EFAULT) return "no_zap_handler";
        if (value == ECONNRESET || value == EPIPE || value == ECONNABORTED)
            return "closed_by_client (a client without CURVE closes as soon as it sees the greeting)";
        return "errno_" + std::to_string(value);
    }
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
        if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) return "mechanism_mismatch (a client without CURVE?)";
        if (value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
            return "cryptographic (a client with the wrong server key?)";
        return "malformed_handshake (protocol error " + std::to_string(value) + ")";
    }
    return std::nullopt;  // AUTH: the ZAP handler has logged the key
}

// The monitors of server sockets under Security::watch: their handshake
// failures, logged at most once per k_failure_log_period per socket and
// reason. Owned by the security service thread.
class HandshakeMonitors {
public:
    explicit HandshakeMonitors(const Logger& log) : log_(log) {}

    // Connects to the monitor endpoints of sockets newly watched.
    void open(zmq::context_t& ctx, const std::vector<std::pair<std::string, Domain>>& fresh) {
        for (const auto& [endpoint, domain] : fresh) {
            zmq::socket_t pair(ctx, zmq::socket_type::pair);
            pair.set(zmq::sockopt::linger, 0);
            // libzmq 4.3 blocks the watched socket's I/O thread on an
            // event its reader cannot take: never let this pipe fill.
            pair.set(zmq::sockopt::rcvhwm, 0);
            pair.connect(endpoint);
            monitors_.push_back({std::move(pair), domain});
        }
    }

    // Appends a poll item per monitor, in order.
    void add_items(std::vector<zmq::pollitem_t>& items) {
        for (auto& m : monitors_) items.push_back({m.socket.handle(), 0, ZMQ_POLLIN, 0});
    }

    // Reads every monitor whose item (the first at items[first]) is ready.
    void read_ready(const std::vector<zmq::pollitem_t>& items, std::size_t first) {
        for (std::size_t i = 0; i < monitors_.size() && first + i < items.size(); ++i)
            if (items[first + i].revents & ZMQ_POLLIN) read(monitors_[i]);
    }

private:
    struct Monitor {
        zmq::socket_t socket;
        Domain domain;
    };
    struct Failures {
        std::uint64_t unlogged = 0;
        Clock::time_point last_log{};
    };

    void read(Monitor& m) {
        std::vector<zmq::message_t> frames;
        while (zmq::recv_multipart(m.socket, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
            if (frames.size() == 2 && frames[0].size() >= 6) {
                std::uint16_t event = 0;
                std::uint32_t value = 0;
                std::memcpy(&event, frames[0].data(), sizeof event);
                std::memcpy(&value, static_cast<const char*>(frames[0].data()) + 2, sizeof value);
                if (auto reason = failure_reason(event, value)) count(m.domain, *reason);
            }
            frames.clear();
        }
    }

    void count(Domain domain, const std::string& reason) {
        auto& f = failures_[{domain, reason}];
        ++f.unlogged;
        const auto now = Clock::now();
        if (f.last_log != Clock::time_point{} && now - f.last_log < k_failure_log_period) return;
        log_->warn("security.handshake_failed socket={} reason=\"{}\" n={} (logged at most once a minute per reason)",
                   socket_label(domain), reason, f.unlogged);
        f.unlogged = 0;
        f.last_log = now;
    }

    const Logger& log_;
    std::vector<Monitor> monitors_;
    std::map<std::pair<Domain, std::string>, Failures> failures_;
};

void set_keepalive(zmq::socket_t& s) {
    // Half-open connections (a peer host gone without a FIN) are closed in ~1 min.
    s.set(zmq::sockopt::tcp_keepalive, 1);
    s.set(zmq::sockopt::tcp_keepalive_idle, 30);
    s.set(zmq::sockopt::tcp_keepalive_intvl, 10);
    s.set(zmq::sockopt::tcp_keepalive_cnt, 3);
}

}  // namespace

// Keys ------------------------------------------------------------------

KeyPair generate_key_pair() {
    require_curve();
    std::array<char, 41> pub{}, sec{};
    if (zmq_curve_keypair(pub.data(), sec.data()) != 0)
        throw SecurityError(std::string("zmq_curve_keypair failed: ") + zmq_strerror(zmq_errno()));
    return {pub.data(), sec.data()};
}

bool is_z85_key(std::string_view text) noexcept {
    if (text.size() != 40) return false;
    const std::string copy(text);
    std::array<std::uint8_t, 32> bytes{};
    return zmq_z85_decode(bytes.data(), copy.c_str()) != nullptr;
}

KeyPair read_secret_key(const std::string& path) {
    require_curve();
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        throw SecurityError("cannot read secret key file '" + path + "': " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw SecurityError("secret key file '" + path + "' is not a regular file");
    if ((st.st_mode & 077) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        throw SecurityError("secret key file '" + path + "' may be read by others (mode " + mode +
                            "): refused; run chmod 600 '" + path + "'");
    }
    const auto key = first_key(read_text(path));
    if (!key) throw SecurityError("secret key file '" + path + "' holds no 40-character Z85 key");
    std::array<char, 41> pub{};
    if (zmq_curve_public(pub.data(), key->c_str()) != 0)
        throw SecurityError("secret key file '" + path + "': cannot derive its public key");
    return {pub.data(), *key};
}

std::string read_public_key(const std::string& path) {
    const auto key = first_key(read_text(path));
    if (!key) throw SecurityError("public key file '" + path + "' holds no 40-character Z85 key");
    return *key;
}

void write_key_pair(const std::string& dir, const std::string& name, const KeyPair& keys, bool overwrite) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw SecurityError("cannot create '" + dir + "': " + ec.message());
    const auto base = (fs::path(dir) / name).string();
    write_file_mode(base + ".key_secret",
                    "# drover secret key '" + name + "' (CurveZMQ, Z85). Keep it on its host, mode 0600.\n" +
                        keys.secret_key + "\n",
                    0600, overwrite);
    write_file_mode(base + ".key", "# drover public key '" + name + "' (CurveZMQ, Z85)\n" + keys.public_key + "\n",
                    0644, overwrite);
}

void write_fleet(const std::string& dir, bool overwrite) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw SecurityError("cannot create '" + dir + "': " + ec.message());
    fs::permissions(dir, fs::perms::owner_all, ec);  // it holds secrets
    for (const char* name : {"broker", "producer", "worker"}) write_key_pair(dir, name, generate_key_pair(), overwrite);
    for (const auto& [list, name] : {std::pair{"producers", "producer"}, std::pair{"workers", "worker"}}) {
        const auto allow = fs::path(dir) / "allow" / list;
        fs::create_directories(allow, ec);
        if (ec) throw SecurityError("cannot create '" + allow.string() + "': " + ec.message());
        const auto key = read_public_key((fs::path(dir) / (std::string(name) + ".key")).string());
        write_file_mode((allow / (std::string(name) + ".key")).string(),
                        "# drover public key '" + std::string(name) + "' (CurveZMQ, Z85)\n" + key + "\n", 0644,
                        overwrite);
    }
}

// Allow-lists -------------------------------------------------------------

AllowList read_allow_list(const std::string& path, std::vector<std::string>& problems) {
    AllowList out;
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (ec || !fs::exists(status)) {
        problems.push_back("allow-list '" + path + "' does not exist");
        return out;
    }
    if (fs::is_directory(status)) {
        std::vector<fs::path> files;
        for (const auto& entry : fs::directory_iterator(path, ec))
            if (entry.path().extension() == ".key" && entry.is_regular_file()) files.push_back(entry.path());
        if (ec) problems.push_back("allow-list '" + path + "': " + ec.message());
        std::sort(files.begin(), files.end());
        for (const auto& f : files) {
            try {
                out.emplace(read_public_key(f.string()), f.stem().string());
            } catch (const SecurityError& e) {
                problems.push_back(e.what());
            }
        }
        return out;
    }
    std::ifstream in(path);
    if (!in) {
        problems.push_back("cannot read allow-list '" + path + "': " + std::strerror(errno));
        return out;
    }
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
        std::istringstream words(line);
        std::string key, name;
        if (!(words >> key)) continue;
        if (!is_z85_key(key)) {
            if (key.front() != '#')
                problems.push_back("allow-list '" + path + "' line " + std::to_string(n) + ": not a Z85 key");
            continue;
        }
        if (!(words >> name)) name = "key-" + key.substr(0, 8);
        out.emplace(key, name);
    }
    return out;
}

// Endpoints ----------------------------------------------------------------

KeyedEndpoint split_keyed_endpoint(const std::string& text) {
    static const std::string marker = "?curve=";
    const auto at = text.find(marker);
    if (at == std::string::npos) return {text, {}};
    return {text.substr(0, at), text.substr(at + marker.size())};
}

std::string keyed_endpoint(const std::string& endpoint, const std::string& server_key) {
    return endpoint + "?curve=" + server_key;
}

bool is_network_endpoint(const std::string& endpoint) {
    if (!is_tcp(endpoint)) return false;
    const auto hostport = endpoint.substr(6);
    const auto colon = hostport.rfind(':');
    const auto host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
    return !(host.rfind("127.", 0) == 0 || host == "localhost" || host == "[::1]" || host == "::1" || host == "lo");
}

const char* domain_name(Domain d) noexcept {
    switch (d) {
        case Domain::producers: return "producers";
        case Domain::workers: return "workers";
        case Domain::sink: return "sink";
    }
    return "?";
}

std::vector<std::string> SecurityOptions::to_args() const {
    std::vector<std::string> args;
    if (!dir.empty()) args.insert(args.end(), {"--security", dir});
    if (!secret.empty()) args.insert(args.end(), {"--curve-secret", secret});
    if (!server_public.empty()) args.insert(args.end(), {"--curve-server-public", server_public});
    return args;
}

// Security ------------------------------------------------------------------

Security::Security(const SecurityOptions& options, Role role, Logger log) : options_(options), log_(std::move(log)) {
    require_curve();
    const auto in_dir = [&](const std::string& flag_value, const std::string& file, const char* flag) {
        if (!flag_value.empty()) return flag_value;
        if (options_.dir.empty())
            throw SecurityError(std::string(flag) + " FILE is needed (or --security DIR with " + file + ")");
        return (fs::path(options_.dir) / file).string();
    };
    keys_ = read_secret_key(in_dir(options_.secret, role_file(role) + ".key_secret", "--curve-secret"));
    broker_key_ = role == Role::broker && options_.server_public.empty()
                      ? keys_.public_key
                      : read_public_key(in_dir(options_.server_public, "broker.key", "--curve-server-public"));
    // An allow-list is needed only by a server socket: watch() insists on it.
    const auto list_path = [&](const std::string& flag_value, const char* file) {
        if (!flag_value.empty()) return flag_value;
        return options_.dir.empty() ? std::string() : (fs::path(options_.dir) / file).string();
    };
    if (role == Role::broker) allow_producers_ = list_path(options_.allow_producers, "allow/producers");
    if (role != Role::worker) allow_workers_ = list_path(options_.allow_workers, "allow/workers");

    std::vector<std::string> problems;
    auto lists = load_lists(problems);
    for (const auto& p : problems) log_->warn("security.allow_list problem=\"{}\"", p);
    lists_ = std::make_shared<const Lists>(std::move(lists));
    if (role == Role::worker) log_->info("security.on role=worker public_key={}", keys_.public_key);
    else
        log_->info("security.on role={} public_key={} allowed_producers={} allowed_workers={} handshake_ms={}",
                   role_file(role), keys_.public_key, lists_->producers.size(), lists_->workers.size(),
                   options_.handshake_ms);
    if (role == Role::broker && (lists_->producers.empty() || lists_->workers.empty()))
        log_->warn("security.allow_list_empty producers={} workers={} (an empty list lets nobody in)",
                   lists_->producers.size(), lists_->workers.size());
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    hup_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0 || hup_fd_ < 0) throw SecurityError(std::string("eventfd: ") + std::strerror(errno));
}

Security::~Security() {
    stopping_ = true;
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
    if (service_.joinable()) service_.join();
    int fd = hup_fd_;
    g_hup_fd.compare_exchange_strong(fd, -1);
    ::close(wake_fd_);
    ::close(hup_fd_);
}

Security::Lists Security::load_lists(std::vector<std::string>& problems) const {
    Lists lists;
    if (!allow_producers_.empty()) lists.producers = read_allow_list(allow_producers_, problems);
    if (!allow_workers_.empty()) lists.workers = read_allow_list(allow_workers_, problems);
    lists.sink = lists.workers;
    lists.sink.emplace(broker_key_, "broker");  // the broker pushes outcomes no worker can report
    return lists;
}

std::optional<std::string> Security::allowed(Domain domain, const std::string& key) const {
    std::shared_ptr<const Lists> lists;
    {
        std::lock_guard lock(mutex_);
        lists = lists_;
    }
    const auto& list = domain == Domain::producers ? lists->producers
                       : domain == Domain::workers ? lists->workers
                                                   : lists->sink;
    const auto it = list.find(key);
    if (it == list.end()) return std::nullopt;
    return it->second;
}

void Security::reload() {
    std::vector<std::string> problems;
    auto fresh = std::make_shared<const Lists>(load_lists(problems));
    for (const auto& p : problems) log_->error("security.allow_list problem=\"{}\" (those keys are not allowed)", p);
    std::shared_ptr<const Lists> old;
    {
        std::lock_guard lock(mutex_);
        old = lists_;
        lists_ = fresh;
    }
    ++generation_;
    // Names in `to` but not in `from`, over both lists.
    const auto changes = [](const Lists& from, const Lists& to) {
        std::string out;
        for (const auto& [f, t] : {std::pair{&from.producers, &to.producers}, std::pair{&from.workers, &to.workers}})
            for (const auto& [key, name] : *t)
                if (!f->count(key)) out += (out.empty() ? "" : ",") + name;
        return out;
    };
    log_->info("security.reloaded producers={} workers={} added=[{}] removed=[{}]", fresh->producers.size(),
               fresh->workers.size(), changes(*old, *fresh), changes(*fresh, *old));
}

void Security::reload_on_sighup() {
    g_hup_fd.store(hup_fd_);
    struct sigaction sa {};
    sa.sa_handler = on_sighup;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGHUP, &sa, nullptr);
}

void Security::serve(zmq::context_t& ctx) {
    std::lock_guard lock(mutex_);
    if (served_ == &ctx) return;
    if (served_) throw SecurityError("security serves one ZeroMQ context per process");
    // Bound here, before the caller binds its server socket: no connection
    // can arrive while no handler listens.
    auto zap = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::rep);
    zap->set(zmq::sockopt::linger, 0);
    try {
        zap->bind("inproc://zeromq.zap.01");
    } catch (const zmq::error_t& e) {
        throw SecurityError(std::string("cannot start the ZAP handler: ") + e.what() +
                            " (another one already runs in this ZeroMQ context)");
    }
    served_ = &ctx;
    // The thread owns the ZAP socket from here on, and closes it when it ends.
    service_ = std::thread([this, &ctx, zap = std::move(zap)] {
        try {
            service_loop(ctx, *zap);
        } catch (const zmq::error_t& e) {
            if (e.num() != ETERM) {
                log_->critical("security.service_failed error=\"{}\"", e.what());
                std::terminate();  // fail closed: no process runs on without its ZAP handler
            }
        }
    });
}

void Security::watch(zmq::socket_t& s, Domain domain) {
    const auto& list = domain == Domain::producers ? allow_producers_ : allow_workers_;
    const char* flag = domain == Domain::producers ? "--allow-producers" : "--allow-workers";
    if (list.empty())
        throw SecurityError(std::string("the ") + socket_label(domain) + " needs an allow-list: " + flag +
                            " PATH, or --security DIR with one in DIR/allow/");
    std::error_code ec;
    if (!fs::exists(list, ec))
        throw SecurityError("allow-list '" + list + "' does not exist (" + flag + ", or DIR/allow/ of --security)");
    const std::string endpoint = "inproc://drover-security-monitor-" + random_hex(8);
    const int events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
    if (zmq_socket_monitor(s.handle(), endpoint.c_str(), events) != 0) {
        log_->warn("security.monitor_unavailable error=\"{}\"", zmq_strerror(zmq_errno()));
        return;
    }
    {
        std::lock_guard lock(mutex_);
        new_monitors_.emplace_back(endpoint, domain);
    }
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void Security::service_loop(zmq::context_t& ctx, zmq::socket_t& zap) {
    HandshakeMonitors monitors(log_);
    std::vector<zmq::pollitem_t> items;
    while (!stopping_) {
        items = {
            {zap.handle(), 0, ZMQ_POLLIN, 0},
            {nullptr, wake_fd_, ZMQ_POLLIN, 0},
            {nullptr, hup_fd_, ZMQ_POLLIN, 0},
        };
        monitors.add_items(items);
        drover::poll(items.data(), items.size(), Millis(-1));
        if (items[1].revents & ZMQ_POLLIN) {
            std::uint64_t n;
            [[maybe_unused]] auto r = ::read(wake_fd_, &n, sizeof n);
            std::vector<std::pair<std::string, Domain>> fresh;
            {
                std::lock_guard lock(mutex_);
                fresh.swap(new_monitors_);
            }
            monitors.open(ctx, fresh);
        }
        if (items[2].revents & ZMQ_POLLIN) {
            std::uint64_t n;
            [[maybe_unused]] auto r = ::read(hup_fd_, &n, sizeof n);
            log_->info("security.sighup reloading allow-lists");
            reload();
        }
        if (items[0].revents & ZMQ_POLLIN) answer_zap(zap);
        monitors.read_ready(items, 3);
    }
}

void Security::answer_zap(zmq::socket_t& zap) {
    std::vector<zmq::message_t> req;
    if (!zmq::recv_multipart(zap, std::back_inserter(req), zmq::recv_flags::dontwait)) return;
    std::string request_id = req.size() > 1 ? req[1].to_string() : std::string();
    std::string status = "400", text = "not allowed", user, metadata;
    const auto domain = req.size() >= 7 ? parse_zap_domain(req[2].to_string_view()) : std::nullopt;
    const bool curve = req.size() >= 7 && req[0].to_string_view() == "1.0" && req[5].to_string_view() == "CURVE" &&
                       req[6].size() == 32;
    if (domain && curve) {
        std::array<char, 41> z85{};
        zmq_z85_encode(z85.data(), static_cast<const std::uint8_t*>(req[6].data()), 32);
        const std::string key = z85.data();
        if (auto name = allowed(*domain, key)) {
            status = "200";
            text = "OK";
            user = *name;
            // ZMTP metadata: name length, name, 4-byte big-endian value length, value.
            metadata.push_back(static_cast<char>(std::strlen(k_key_property)));
            metadata += k_key_property;
            const auto len = static_cast<std::uint32_t>(key.size());
            for (int shift : {24, 16, 8, 0}) metadata.push_back(static_cast<char>((len >> shift) & 0xff));
            metadata += key;
            log_->debug("security.admitted socket={} name={} address={}", socket_label(*domain), *name,
                        req[3].to_string());
        } else {
            std::lock_guard lock(mutex_);
            if (rejected_.size() > k_logged_keys_limit) rejected_.clear();  // bounded; may log a key again
            if (rejected_.emplace(*domain, key).second)
                log_->warn(
                    "security.rejected socket={} key={} address={} (a key not in the allow-list; logged "
                    "once per key)",
                    socket_label(*domain), key, req[3].to_string());
        }
    } else {
        text = "bad request";
        log_->warn("security.bad_zap_request frames={}", req.size());
    }
    const std::array<std::string, 6> reply = {"1.0", request_id, status, text, user, metadata};
    for (std::size_t i = 0; i < reply.size(); ++i)
        zap.send(zmq::buffer(reply[i]), i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
}

std::shared_ptr<Security> make_security(const SecurityOptions& options, Role role, Logger log) {
    if (!options.enabled()) return nullptr;
    return std::make_shared<Security>(options, role, std::move(log));
}

// Sockets --------------------------------------------------------------------

void bind_server(zmq::context_t& ctx, zmq::socket_t& s, Security* security, Domain domain,
                 const std::string& endpoint) {
    s.set(zmq::sockopt::handshake_ivl, security ? security->handshake_ms() : k_default_handshake_ms);
    s.set(zmq::sockopt::backlog, k_backlog);
    if (security && is_tcp(endpoint)) {
        security->serve(ctx);
        make_curve_server(s, *security, domain);
        security->watch(s, domain);
    }
    s.bind(endpoint);
}

void make_curve_server(zmq::socket_t& s, const Security& security, Domain domain) {
    s.set(zmq::sockopt::curve_server, 1);
    s.set(zmq::sockopt::curve_secretkey, security.keys().secret_key);
    s.set(zmq::sockopt::zap_domain, zap_domain(domain));
    const int on = 1;
    if (zmq_setsockopt(s.handle(), k_zap_enforce_domain, &on, sizeof on) != 0)
        throw SecurityError(
            "this libzmq lacks ZMQ_ZAP_ENFORCE_DOMAIN (a draft option): without it a client "
            "that knows the server key would get in whenever the ZAP handler is not running");
    set_keepalive(s);
}

void connect_client(zmq::socket_t& s, const Security* security, const std::string& endpoint) {
    const auto keyed = split_keyed_endpoint(endpoint);
    if (security && is_tcp(keyed.endpoint)) {
        s.set(zmq::sockopt::curve_serverkey, keyed.server_key.empty() ? security->broker_key() : keyed.server_key);
        s.set(zmq::sockopt::curve_publickey, security->keys().public_key);
        s.set(zmq::sockopt::curve_secretkey, security->keys().secret_key);
        // A refused client (key revoked, wrong server key) retries slowly.
        s.set(zmq::sockopt::reconnect_ivl_max, 5000);
        set_keepalive(s);
    }
    s.connect(keyed.endpoint);
}

std::string with_sink_key(const std::string& endpoint, const Security* security) {
    if (!security) return endpoint;
    const auto keyed = split_keyed_endpoint(endpoint);
    if (!keyed.server_key.empty() || !is_tcp(keyed.endpoint)) return endpoint;
    return keyed_endpoint(endpoint, security->keys().public_key);
}

void warn_if_exposed(const Logger& log, const Security* security, const std::vector<std::string>& endpoints) {
    if (security) return;
    std::string exposed;
    for (const auto& e : endpoints)
        if (is_network_endpoint(e)) exposed += (exposed.empty() ? "" : ",") + e;
    if (!exposed.empty())
        log->warn(
            "security.off endpoints={} are reachable from the network in clear and let anyone in: "
            "start with --security DIR (see docs/security.md)",
            exposed);
}

// PeerGuard -------------------------------------------------------------------

bool PeerGuard::admit(const std::string& peer, const zmq::message_t& frame) {
    if (!security_) return true;
    const auto generation = security_->generation();
    auto it = peers_.find(peer);
    if (it != peers_.end() && it->second.generation == generation) return it->second.allowed;
    if (it == peers_.end()) {
        if (peers_.size() >= 100000) peers_.clear();  // bounded: peers are learnt again from their next message
        Peer p;
        // Only CURVE connections carry the key; ipc peers have none.
        if (const char* key = zmq_msg_gets(frame.handle(), k_key_property)) p.key = key;
        if (const char* user = zmq_msg_gets(frame.handle(), "User-Id")) p.name = user;
        it = peers_.emplace(peer, std::move(p)).first;
    }
    auto& p = it->second;
    p.generation = generation;
    const bool was = p.allowed;
    p.allowed = p.key.empty() || security_->allowed(domain_, p.key).has_value();
    if (was && !p.allowed) {
        // Seen here before revoked() looked: it reports the peer all the same.
        log_->warn("security.revoked socket={} name={} key={} (no longer in the allow-list: session closed)",
                   socket_label(domain_), p.name, p.key);
        if (revoked_.size() < 10000) revoked_.push_back(peer);  // bounded for owners that never ask
    }
    return p.allowed;
}

bool PeerGuard::admit(const zmq::message_t& frame) {
    if (!security_) return true;
    const char* key = zmq_msg_gets(frame.handle(), k_key_property);
    return key ? admit(key, frame) : true;
}

std::vector<std::string> PeerGuard::revoked() {
    std::vector<std::string> out;
    out.swap(revoked_);
    if (!security_ || security_->generation() == checked_generation_) return out;
    checked_generation_ = security_->generation();
    for (auto& [peer, p] : peers_) {
        if (!p.allowed || p.key.empty()) continue;
        p.generation = checked_generation_;
        if (security_->allowed(domain_, p.key)) continue;
        p.allowed = false;
        log_->warn("security.revoked socket={} name={} key={} (no longer in the allow-list: session closed)",
                   socket_label(domain_), p.name, p.key);
        out.push_back(peer);
    }
    return out;
}

}  // namespace drover
