// Process logger set-up.
#include "drover/common/logging.hpp"

#include <cstdlib>
#include <stdexcept>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace drover {

Logger make_logger(const std::string& name, const std::string& level) {
    std::string chosen = level;
    if (chosen.empty()) {
        const char* env = std::getenv("SPDLOG_LEVEL");
        chosen = env && *env ? env : "info";
    }
    const auto lvl = spdlog::level::from_str(chosen);
    if (lvl == spdlog::level::off && chosen != "off")
        throw std::invalid_argument("unknown log level '" + chosen +
                                    "' (use trace, debug, info, warn, error, critical, off)");
    auto logger = spdlog::get(name);
    if (!logger) logger = spdlog::stderr_color_mt(name);
    logger->set_level(lvl);
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %n[%P] %^%l%$ %v");
    return logger;
}

Logger null_logger() {
    static Logger logger = std::make_shared<spdlog::logger>("null", std::make_shared<spdlog::sinks::null_sink_mt>());
    return logger;
}

}  // namespace drover
