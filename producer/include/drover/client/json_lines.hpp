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
// "max_attempts", "timeout_ms", "retry_on_error".
struct TaskLine {
    std::string task;
    std::string args;  // msgpack
    TaskOptions options;
    std::string id_json;  // the line's "id" as result lines print it; "" if none or null
    std::string id_wire;  // a string id's text, a number id's JSON text; "" otherwise
};

// Returns the parsed line, or sets `error` to a one-line reason (a line
// nested past k_max_data_depth is refused before it is parsed). Parses with
// parse_task_line_fast, and with parse_task_line_reference what that leaves.
std::optional<TaskLine> parse_task_line(const std::string& line, std::string& error);
// simdjson's On Demand straight into msgpack. Returns the line only where
// parse_task_line_reference would return the same; nullopt for every line it
// would refuse and for what this leaves to it (numbers past 64 bits,
// repeated keys, control characters anywhere).
std::optional<TaskLine> parse_task_line_fast(const std::string& line);
// The same with nlohmann::json: the reference the fast path agrees with.
std::optional<TaskLine> parse_task_line_reference(const std::string& line, std::string& error);

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

// The printers of result lines, without a JSON value in between: each
// appends to `out` the bytes the function named gives, and allocates only
// where nlohmann prints what they leave to it (binary data, maps with keys
// out of order, invalid UTF-8).
// to_line(msgpack_to_json(bytes))
void append_msgpack_json(std::string& out, std::string_view bytes);
// to_line(std::string(s))
void append_json_string(std::string& out, std::string_view s);
// to_line(result_to_json(r, id)), the id given as TaskLine::id_json ("": r.id)
void append_result_line(std::string& out, const Result& r, std::string_view id_json);
// to_line of {"line":N,"status":"rejected","error":E} and the id if not "".
void append_rejected_line(std::string& out, std::size_t line_no, std::string_view error, std::string_view id_json);

}  // namespace drover
