// The commands file of drover-worker --commands (drover/worker/commands.hpp).
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "command_template.hpp"
#include "drover/worker/commands.hpp"

namespace drover {

namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& where, const std::string& what) {
    throw std::invalid_argument(where + ": " + what);
}

std::size_t positive(const json& v, const std::string& where, const char* field) {
    if (!v.is_number_unsigned() || v.get<std::uint64_t>() == 0)
        bad(where, std::string("\"") + field + "\" must be a positive integer");
    return v.get<std::size_t>();
}

std::vector<std::string> argv_of(const json& v, const std::string& where) {
    if (v.is_string()) return split_words(v.get<std::string>());
    if (!v.is_array()) bad(where, "\"argv\" must be a string (a template) or an array of strings");
    std::vector<std::string> words;
    for (const auto& w : v) {
        if (!w.is_string()) bad(where, "\"argv\" must hold only strings");
        words.push_back(w.get<std::string>());
    }
    return words;
}

// One entry of the file. Throws std::invalid_argument naming `where`.
CommandSpec command_of(const std::string& name, const json& v, const std::string& where) {
    if (!v.is_object()) bad(where, "expected an object with \"argv\"");
    CommandSpec c;
    c.name = name;
    for (const auto& [key, value] : v.items()) {
        if (key == "argv") c.argv = argv_of(value, where);
        else if (key == "timeout_ms") c.timeout = std::chrono::milliseconds(positive(value, where, "timeout_ms"));
        else if (key == "max_output_bytes") c.max_output_bytes = positive(value, where, "max_output_bytes");
        else if (key == "cwd" && value.is_string()) c.cwd = value.get<std::string>();
        else if (key == "stdin" && value.is_string() && (value == "arg" || value == "none"))
            c.stdin_from_last_arg = value == "arg";
        else if (key == "env" && value.is_object()) {
            for (const auto& [k, e] : value.items()) {
                if (!e.is_string() || k.empty() || k.find('=') != std::string::npos)
                    bad(where, "\"env\" must map variable names to strings");
                c.env[k] = e.get<std::string>();
            }
        } else if (key == "cwd" || key == "stdin" || key == "env") {
            bad(where, "\"" + key + "\" has the wrong type" + (key == "stdin" ? ": \"none\" or \"arg\"" : ""));
        } else {
            bad(where, "unknown field \"" + key + "\" (known: argv, timeout_ms, cwd, env, stdin, max_output_bytes)");
        }
    }
    if (!v.contains("argv")) bad(where, "\"argv\" is missing");
    (void)parse_template(c.argv);
    return c;
}

}  // namespace

std::vector<CommandSpec> load_commands_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::invalid_argument("--commands " + path + ": cannot read it");
    std::stringstream text;
    text << in.rdbuf();
    json doc;
    try {
        doc = json::parse(text.str());
    } catch (const json::exception& e) {
        throw std::invalid_argument("--commands " + path + ": not JSON: " + e.what());
    }
    if (!doc.is_object()) throw std::invalid_argument("--commands " + path + ": expected an object, name → command");
    std::vector<CommandSpec> out;
    for (const auto& [name, v] : doc.items()) {
        const std::string where = "--commands " + path + ": command \"" + name + "\"";
        if (name.empty()) bad(where, "empty name");
        try {
            out.push_back(command_of(name, v, where));
        } catch (const std::invalid_argument& e) {
            const std::string msg = e.what();
            if (msg.rfind(where, 0) == 0) throw;
            bad(where, msg);
        }
    }
    return out;
}

}  // namespace drover
