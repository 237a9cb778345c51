// drover-broker: run a broker, or ask one for its status.
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli.hpp"
#include "drover/broker/broker.hpp"
#include "drover/client/status.hpp"
#include "process.hpp"
#include "security_cli.hpp"

namespace {

// `drover-broker status`: prints the STATUS_REPLY of the broker at `broker`
// as JSON. Returns the exit status.
int print_status(zmq::context_t& ctx, const std::string& broker, int timeout_ms,
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
        std::cerr << "drover-broker: no answer from " << broker << " within " << timeout_ms << " ms\n";
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

}  // namespace

int main(int argc, char** argv) {
    drover::exec_without_thread_cache(argv);
    drover::tune_allocator(/*one_arena=*/true);
    drover::BrokerConfig config;
    std::string log_level;
    std::int64_t heartbeat_ms = 1000;
    std::string status_broker = "tcp://127.0.0.1:5555";
    int status_timeout_ms = 3000;
    drover::SecurityOptions security, status_security;

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
    auto* status = app.add_subcommand("status", "print a running broker's queues, workers and totals as JSON");
    status->add_option("--broker", status_broker, "the broker's frontend endpoint")->capture_default_str();
    status->add_option("--timeout-ms", status_timeout_ms, "how long to wait for the answer")->capture_default_str();
    drover::add_security_options(*status, status_security, drover::Role::producer);
    try {
        app.parse(argc, argv);
        drover::check_endpoint(config.frontend, "--frontend", /*inproc_ok=*/false);
        drover::check_endpoint(config.backend, "--backend", /*inproc_ok=*/false);
        if (*status) drover::check_endpoint(status_broker, "--broker", /*inproc_ok=*/false);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    } catch (const std::invalid_argument& e) {
        std::cerr << "drover-broker: " << e.what() << "\n";
        return 2;
    }
    config.heartbeat = drover::Millis(heartbeat_ms);
    zmq::context_t ctx;
    // "--security DIR status" works too.
    if (*status)
        return print_status(ctx, status_broker, status_timeout_ms,
                            status_security.enabled() ? status_security : security);
    return run_broker(ctx, config, log_level, security);
}
