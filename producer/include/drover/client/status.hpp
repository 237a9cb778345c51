// Asking a broker for its state (drover-broker status; docs/status.md).
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "drover/common/clock.hpp"
#include "drover/common/security.hpp"

namespace drover {

// Asks the broker at `frontend` for its STATUS. Returns the JSON document, or
// nullopt if no answer came within `timeout`.
std::optional<nlohmann::json> fetch_status(zmq::context_t& ctx, const std::string& frontend, Millis timeout,
                                           const Security* security = nullptr);

}  // namespace drover
