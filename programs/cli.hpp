// Flags that several drover programs take the same way (header-only:
// include it where CLI11 is already linked, i.e. in the programs' command
// lines, as security_cli.hpp).
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "drover/common/logging.hpp"
#include "drover/common/protocol.hpp"
#include "drover/common/version.hpp"
#include "internal/net.hpp"

namespace drover {

// --log-level, checked with the other flags (a bad name exits 2);
// `default_note` ends the help, e.g. " (default warn)".
inline CLI::Option* add_log_level_option(CLI::App& app, std::string& level, const std::string& default_note = {}) {
    return app.add_option("--log-level", level, "trace, debug, info, warn, error, critical, off" + default_note)
        ->check(CLI::IsMember(k_log_levels));
}

// --max-message-bytes, from k_min_max_message_bytes to 4 GiB.
inline CLI::Option* add_max_message_bytes_option(CLI::App& app, std::int64_t& bytes,
                                                 const std::string& help = "largest message accepted") {
    return app.add_option("--max-message-bytes", bytes, help)
        ->capture_default_str()
        ->check(CLI::Range(k_min_max_message_bytes, std::int64_t{1} << 32));
}

// --version: prints "NAME VERSION (protocol N)", N the wire protocol's version
// (the digit of proto::k_protocol), and exits 0 from app.parse's CallForVersion.
inline void add_version_flag(CLI::App& app, const std::string& name) {
    const std::string protocol(proto::k_protocol.substr(3));
    app.set_version_flag("--version", name + " " + k_version + " (protocol " + protocol + ")",
                         "print the version and the wire protocol's version, then exit");
}

}  // namespace drover
