// drover-broker: run a broker, or ask one for its status.
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "cli.hpp"
#include "drover/broker/broker.hpp"
#include "drover/client/status.hpp"
#include "process.hpp"
#include "security_cli.hpp"

namespace {

// The frontend endpoint in the endpoints file `path` (--endpoints-file), or
// "" when there is no such file. Throws std::runtime_error naming the file
// when it holds no "frontend" string, or, with `shared_dir` (under /tmp),
// is not this user's or root's own.
std::string frontend_in(const std::string& path, bool shared_dir) {
    // In a directory every user may create (/tmp), a file another user made
    // could point status elsewhere: there only the caller's or root's is read.
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return "";
    if (shared_dir && (!S_ISREG(st.st_mode) || (st.st_uid != ::getuid() && st.st_uid != 0)))
        throw std::runtime_error(path + " is not a regular file of this user's or root's: not read");
    std::ifstream in(path);
    if (!in) return "";
    const auto doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object() || !doc.contains("frontend") || !doc["frontend"].is_string())
        throw std::runtime_error(path + " holds no \"frontend\" endpoint");
    return doc["frontend"].get<std::string>();
}

// The broker `status` asks when no --broker is given, and where it was
// read: the endpoints file that scripts/start-broker.sh keeps in
// $DROVER_RUN_DIR (only there when that is set), else in /tmp/drover-run
// (its default), else the one drover-broker.service keeps in /run/drover.
// Throws std::runtime_error naming the files looked at when none exists.
std::pair<std::string, std::string> status_broker_from_run_dir() {
    const char* run_dir = std::getenv("DROVER_RUN_DIR");
    const std::vector<std::string> files =
        run_dir && *run_dir ? std::vector<std::string>{std::string(run_dir) + "/broker.json"}
                            : std::vector<std::string>{"/tmp/drover-run/broker.json", "/run/drover/broker.json"};
    std::string looked;
    for (const auto& f : files) {
        if (auto ep = frontend_in(f, f.rfind("/tmp/", 0) == 0); !ep.empty()) return {ep, f};
        looked += (looked.empty() ? "" : ", ") + f;
    }
    throw std::runtime_error("no --broker given and no endpoints file found (looked for " + looked +
                             "): give --broker tcp://HOST:PORT, the broker's frontend, or set DROVER_RUN_DIR to "
                             "the run directory of scripts/start-broker.sh");
}

// `drover-broker status`: prints the STATUS_REPLY of the broker at `broker`
// (read from the file `from`, or "" when given) as JSON. Returns the exit status.
int print_status(zmq::context_t& ctx, const std::string& broker, const std::string& from, int timeout_ms,
                 const drover::SecurityOptions& security) {
    std::shared_ptr<drover::Security> sec;
    try {
        sec = drover::make_security(security, drover::Role::producer, drover::make_logger("broker", "warn"));
    } catch (const std::exception& e) {
        std::cerr << "drover-broker: " << e.what() << "\n";
        return 2;
    }
    auto doc = drover::fetch_status(ctx, broker, drover::Millis(timeout_ms), sec.get());
    if (!doc) {
        std::cerr << "drover-broker: no answer from " << broker << (from.empty() ? "" : " (read from " + from + ")")
                  << " within " << timeout_ms << " ms\n";
        return 1;
    }
    std::cout << doc->dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
}

// Runs the broker until SIGINT or SIGTERM. Returns the exit status.
int run_broker(zmq::context_t& ctx, drover::BrokerConfig& config, const std::string& log_level,
               const drover::SecurityOptions& security) {
    try {
        auto log = drover::make_logger("broker", log_level);
        drover::StopSource stop;
        drover::stop_on_signals(stop);
        drover::ignore_hangup();
        config.security = drover::make_security(security, drover::Role::broker, log);
        if (config.security) config.security->reload_on_sighup();
        drover::Broker broker(ctx, config, log);
        broker.bind();
        broker.run(stop);
        return 0;
    } catch (const drover::SecurityError& e) {
        std::cerr << "drover-broker: " << e.what() << "\n";
        return 2;
    } catch (const drover::BindError& e) {
        std::cerr << "drover-broker: " << e.what() << "\n";
        return 2;
    } catch (const zmq::error_t& e) {
        std::cerr << "drover-broker: " << e.what() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "drover-broker: " << e.what() << "\n";
        return 1;
    }
}

// --journal and the flags that tune it.
void add_journal_options(CLI::App& app, drover::BrokerConfig& config) {
    app.add_option("--journal", config.journal_dir,
                   "keep accepted tasks in a journal in this directory: they survive a crash and a restart "
                   "(default: in memory only)");
    app.add_option("--fsync", config.fsync,
                   "journal sync policy: always (every commit), batch (a group at least every few ms), off "
                   "(survives the broker's crash, not the machine's)")
        ->capture_default_str()
        ->check(CLI::IsMember({"always", "batch", "off"}));
    app.add_option("--journal-segment-mib", config.journal_segment_mib,
                   "journal segment size: a segment rolls past it, and one whose tasks are all settled is deleted")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    app.add_flag("--journal-repair", config.journal_repair,
                 "start from a damaged journal: cut the damage (the records after it are lost)");
}

// The `status` subcommand's flags.
struct StatusCommand {
    CLI::App* app = nullptr;
    std::string broker;  // --broker, or the one found by status_broker_from_run_dir()
    std::string from;    // the file `broker` was read from, or ""
    int timeout_ms = 3000;
    drover::SecurityOptions security;
};

// Adds `status` and its flags to `app`; `cmd` must outlive the parse.
void add_status_command(CLI::App& app, StatusCommand& cmd) {
    cmd.app = app.add_subcommand("status", "print a running broker's queues, workers and totals as JSON");
    cmd.app->add_option("--broker", cmd.broker,
                        "the broker's frontend endpoint (default: the one in $DROVER_RUN_DIR/broker.json, else "
                        "/tmp/drover-run/broker.json, else /run/drover/broker.json)");
    cmd.app->add_option("--timeout-ms", cmd.timeout_ms, "how long to wait for the answer")->capture_default_str();
    drover::add_security_options(*cmd.app, cmd.security, drover::Role::producer);
}

}  // namespace

int main(int argc, char** argv) {
    drover::exec_without_thread_cache(argv);
    drover::tune_allocator(/*one_arena=*/true);
    drover::BrokerConfig config;
    std::string log_level;
    std::int64_t heartbeat_ms = 1000;
    drover::SecurityOptions security;
    StatusCommand status;

    CLI::App app{
        "drover-broker: routes tasks from producers to workers.\n"
        "Workers connect to --backend, producers and sinks to --frontend."};
    app.add_option("--frontend", config.frontend, "endpoint for producers and sinks")->capture_default_str();
    app.add_option("--backend", config.backend, "endpoint for workers")->capture_default_str();
    app.add_option("--max-queued", config.max_queued, "tasks held before SUBMIT is rejected with queue_full")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--heartbeat-ms", heartbeat_ms, "heartbeat period")
        ->capture_default_str()
        ->check(CLI::Range(10, 600000));
    app.add_option("--liveness", config.liveness, "missed heartbeats before a worker is declared dead")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    drover::add_max_message_bytes_option(app, config.max_message_bytes);
    app.add_option("--endpoints-file", config.endpoints_file, "write the bound endpoints here as JSON");
    add_journal_options(app, config);
    drover::add_log_level_option(app, log_level, " (default: $SPDLOG_LEVEL or info)");
    drover::add_version_flag(app, "drover-broker");
    drover::add_security_options(app, security, drover::Role::broker);
    add_status_command(app, status);
    try {
        app.parse(argc, argv);
        drover::check_endpoint(config.frontend, "--frontend", /*inproc_ok=*/false);
        drover::check_endpoint(config.backend, "--backend", /*inproc_ok=*/false);
        if (*status.app && status.broker.empty()) std::tie(status.broker, status.from) = status_broker_from_run_dir();
        if (*status.app) drover::check_endpoint(status.broker, "--broker", /*inproc_ok=*/false);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    } catch (const std::exception& e) {
        std::cerr << "drover-broker: " << e.what() << "\n";
        return 2;
    }
    config.heartbeat = drover::Millis(heartbeat_ms);
    zmq::context_t ctx;
    // "--security DIR status" works too.
    if (*status.app)
        return print_status(ctx, status.broker, status.from, status.timeout_ms,
                            status.security.enabled() ? status.security : security);
    return run_broker(ctx, config, log_level, security);
}
