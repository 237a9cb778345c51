// One named spdlog logger per process, writing to stderr.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

namespace drover {

using Logger = std::shared_ptr<spdlog::logger>;

// Returns the process logger `name` on stderr at `level` ("trace" ... "off").
// An empty level falls back to SPDLOG_LEVEL, then to "info".
// Throws: std::invalid_argument for an unknown level name.
Logger make_logger(const std::string& name, const std::string& level = {});
// The level names make_logger takes, for the programs' --log-level checks.
// ("warning" and "err" are spdlog's other spellings, which it prints.)
inline const std::vector<std::string> k_log_levels{"trace", "debug", "info",     "warn", "warning",
                                                   "error", "err",   "critical", "off"};

// A logger that discards everything (for tests and embedded use).
Logger null_logger();

}  // namespace drover
