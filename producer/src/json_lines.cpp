// JSON lines at the shell edge.
#include "drover/client/json_lines.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <string_view>

#include "internal/unpack.hpp"

namespace drover {

namespace {
nlohmann::json payload_or_error(nlohmann::json out, proto::Status status, const std::string& payload,
                                const std::string& error) {
    if (status == proto::Status::ok) out["result"] = msgpack_to_json(payload);
    else out["error"] = error;
    return out;
}
}  // namespace

bool json_within_depth_limit(std::string_view text, std::size_t max_depth) noexcept {
    std::size_t depth = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\') ++i;  // the escaped character, '"' included
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth) return false;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return true;
}

namespace {

// The fields of a task line.
constexpr std::array<std::string_view, 6> k_fields{"task",         "args",       "id",
                                                   "max_attempts", "timeout_ms", "retry_on_error"};

// Why the task line `j` has a field it should not, or "" if it has none:
// a misspelt field ("max_attempt") would otherwise be dropped without a
// word, and the task run with settings its author did not mean.
std::string unknown_field(const nlohmann::json& j) {
    for (const auto& item : j.items()) {
        if (std::find(k_fields.begin(), k_fields.end(), item.key()) != k_fields.end()) continue;
        std::string error = "unknown field \"" + item.key() + "\" (a task line has";
        for (const auto f : k_fields) error.append(f == k_fields.front() ? " " : ", ").append(f);
        return error + ")";
    }
    return {};
}

// Reads max_attempts, timeout_ms and retry_on_error of the task line `j`
// into `o`. Returns false, with `error` set, for a value of the wrong kind.
bool read_task_options(const nlohmann::json& j, TaskOptions& o, std::string& error) {
    for (const char* key : {"max_attempts", "timeout_ms"}) {
        auto it = j.find(key);
        if (it == j.end()) continue;
        if (!it->is_number_unsigned() || it->get<std::uint64_t>() > 0xffffffffu) {
            error = std::string("\"") + key + "\" must be a non-negative integer";
            return false;
        }
        const auto v = static_cast<std::uint32_t>(it->get<std::uint64_t>());
        if (std::string(key) == "max_attempts") {
            if (v == 0) {
                error = "\"max_attempts\" must be at least 1";
                return false;
            }
            o.max_attempts = v;
        } else {
            o.timeout_ms = v;
        }
    }
    if (auto it = j.find("retry_on_error"); it != j.end()) {
        if (!it->is_boolean()) {
            error = "\"retry_on_error\" must be true or false";
            return false;
        }
        o.retry_on_error = it->get<bool>();
    }
    return true;
}

}  // namespace

std::optional<TaskLine> parse_task_line(const std::string& line, std::string& error) {
    if (auto t = parse_task_line_fast(line)) return t;
    return parse_task_line_reference(line, error);
}

std::optional<TaskLine> parse_task_line_reference(const std::string& line, std::string& error) {
    if (!json_within_depth_limit(line)) {
        error = too_deep_message("task line");
        return std::nullopt;
    }
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
        error = std::string("invalid JSON: ") + e.what();
        return std::nullopt;
    }
    if (!j.is_object()) {
        error = "a task line must be a JSON object like {\"task\":\"hello\",\"args\":[\"world\"]}";
        return std::nullopt;
    }
    if (auto unknown = unknown_field(j); !unknown.empty()) {
        error = std::move(unknown);
        return std::nullopt;
    }
    TaskLine t;
    if (auto id = j.find("id"); id != j.end() && !id->is_null()) {
        t.id_json = to_line(*id);
        if (id->is_string()) t.id_wire = id->get<std::string>();
        else if (id->is_number()) t.id_wire = t.id_json;
    }
    auto task = j.find("task");
    if (task == j.end() || !task->is_string() || task->get<std::string>().empty()) {
        error = "missing \"task\" (a non-empty string)";
        return std::nullopt;
    }
    t.task = task->get<std::string>();
    auto args = j.find("args");
    t.args = json_to_msgpack(args == j.end() ? nlohmann::json::array() : *args);
    if (!read_task_options(j, t.options, error)) return std::nullopt;
    return t;
}

std::string to_line(const nlohmann::json& value) {
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json msgpack_to_json(const std::string& bytes) {
    if (bytes.empty()) return nullptr;
    if (!within_depth_limit(bytes)) return "<" + too_deep_message("result") + ">";
    try {
        return nlohmann::json::from_msgpack(bytes.begin(), bytes.end());
    } catch (const nlohmann::json::exception&) {
        return "<undecodable result>";
    }
}

std::string json_to_msgpack(const nlohmann::json& value) {
    std::string out;
    nlohmann::json::to_msgpack(value, nlohmann::detail::output_adapter<char>(out));
    return out;
}

nlohmann::json result_to_json(const Result& r, const nlohmann::json& id) {
    nlohmann::json out = {{"id", id.is_null() ? nlohmann::json(r.id) : id},
                          {"task", r.task},
                          {"status", r.accepted_only ? "accepted" : proto::status_name(r.status)}};
    if (r.accepted_only) return out;
    out = payload_or_error(std::move(out), r.status, r.payload, r.error);
    out["attempts"] = r.attempts;
    out["worker"] = r.worker;
    out["elapsed_ms"] = std::round(r.elapsed_ms * 1000.0) / 1000.0;
    return out;
}

nlohmann::json outcome_to_json(const proto::Outcome& o) {
    nlohmann::json out = {{"id", o.id}, {"task", o.task}, {"status", proto::status_name(o.status)}};
    out = payload_or_error(std::move(out), o.status, o.result, o.error);
    out["attempts"] = o.attempt;
    out["worker"] = o.worker;
    out["elapsed_ms"] = std::round(static_cast<double>(o.elapsed_us)) / 1000.0;
    return out;
}

}  // namespace drover
