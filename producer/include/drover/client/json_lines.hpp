// JSON lines at the shell edge: task lines in, result lines out.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "drover/client/client.hpp"
#include "drover/common/limits.hpp"
#include "drover/common/protocol.hpp"

namespace drover {

// One task line: {"task":"sum_random","args":[1000000]} with optional "id",
// "max_attempts", "timeout_ms".
struct TaskLine {
    std::string task;
    std::string args;  // msgpack
    TaskOptions options;
    nlohmann::json id;  // as the user gave it; null if none
};

// Returns the parsed line, or sets `error` to a one-line reason (a line
// nested past k_max_data_depth is refused before it is parsed).
std::optional<TaskLine> parse_task_line(const std::string& line, std::string& error);

// Whether no array or object in the JSON text is nested more than
// `max_depth` deep (the outermost is level 1). A loop over the bytes,
// brackets inside strings skipped; says nothing of whether the text is JSON.
// nlohmann::json parses without recursion, but converts, dumps and packs
// with it: text past the limit is refused before it is parsed.
[[nodiscard]] bool json_within_depth_limit(std::string_view text, std::size_t max_depth = k_max_data_depth) noexcept;

// msgpack bytes as JSON (binary data becomes an array of bytes); null if
// empty; a string saying so if undecodable or nested past k_max_data_depth.
nlohmann::json msgpack_to_json(const std::string& bytes);
// A JSON value as msgpack bytes.
std::string json_to_msgpack(const nlohmann::json& value);

// One JSON line; invalid UTF-8 from a task becomes U+FFFD instead of throwing.
std::string to_line(const nlohmann::json& value);

// {"id","task","status","result"|"error","attempts","worker","elapsed_ms"}
nlohmann::json result_to_json(const Result& r, const nlohmann::json& id);
nlohmann::json outcome_to_json(const proto::Outcome& o);

}  // namespace drover
