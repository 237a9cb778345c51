// Command tasks: options, the commands file, and the task that runs one (drover/worker/commands.hpp).
#include <charconv>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "command_spawn.hpp"
#include "command_template.hpp"
#include "drover/worker/commands.hpp"
#include "task_context.hpp"

extern char** environ;

namespace drover {

namespace {

constexpr std::size_t k_stderr_tail = 2000;  // bytes of stderr an error message carries

// The task's arguments as strings: strings as they are, numbers and booleans as text.
std::vector<std::string> string_args(const msgpack::object& args) {
    const msgpack::object* items = args.type == msgpack::type::ARRAY ? args.via.array.ptr : &args;
    const std::size_t count = args.type == msgpack::type::ARRAY ? args.via.array.size
                              : args.type == msgpack::type::NIL ? 0
                                                                : 1;
    std::vector<std::string> out;
    out.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
        const auto& o = items[i];
        char buf[64];
        switch (o.type) {
            case msgpack::type::STR: out.emplace_back(o.via.str.ptr, o.via.str.size); break;
            case msgpack::type::BIN: out.emplace_back(o.via.bin.ptr, o.via.bin.size); break;
            case msgpack::type::BOOLEAN: out.emplace_back(o.via.boolean ? "true" : "false"); break;
            case msgpack::type::POSITIVE_INTEGER: out.push_back(std::to_string(o.via.u64)); break;
            case msgpack::type::NEGATIVE_INTEGER: out.push_back(std::to_string(o.via.i64)); break;
            case msgpack::type::FLOAT32:
            case msgpack::type::FLOAT64: {
                const auto r = std::to_chars(buf, buf + sizeof buf, o.via.f64);  // shortest round trip
                out.emplace_back(buf, r.ptr);
                break;
            }
            default:
                throw ArgumentError("argument " + std::to_string(i + 1) + " is " + detail::msgpack_type_name(o) +
                                    ": a command takes strings, numbers or booleans");
        }
        if (out.back().find('\0') != std::string::npos)  // argv would end it there, silently
            throw ArgumentError("argument " + std::to_string(i + 1) + " holds a NUL byte, which no argv element can");
    }
    return out;
}

// `s` with every byte sequence that is not UTF-8 replaced by U+FFFD. Returns whether any was.
bool make_utf8(std::string& s) {
    std::size_t i = 0;
    const auto n = s.size();
    while (i < n && static_cast<unsigned char>(s[i]) < 0x80) ++i;
    if (i == n) return false;
    std::string out(s, 0, i);
    bool lossy = false;
    while (i < n) {
        const auto c = static_cast<unsigned char>(s[i]);
        std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
        bool ok = len > 0 && i + len <= n && !(len == 2 && c < 0xC2);
        for (std::size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
        if (ok && len == 3) {
            const auto c1 = static_cast<unsigned char>(s[i + 1]);
            ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);  // overlong, surrogates
        }
        if (ok && len == 4) {
            const auto c1 = static_cast<unsigned char>(s[i + 1]);
            ok = !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90) && c <= 0xF4;
        }
        if (ok) {
            out.append(s, i, len);
            i += len;
        } else {
            out += "\xEF\xBF\xBD";
            lossy = true;
            ++i;
        }
    }
    s = std::move(out);
    return lossy;
}

// Cuts `s` back to at most `max` bytes at a character boundary.
void cut_at_boundary(std::string& s, std::size_t max) {
    if (s.size() <= max) return;
    std::size_t end = max;
    while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;  // s[end] begins a character
    s.resize(end);
}

// Makes captured output `s` UTF-8 within `max` bytes. Output cut at `max`
// while read loses the partial character at its end, which is not counted
// as lossy; bytes replaced by U+FFFD (3 bytes each) may grow it past `max`,
// and it is cut again. Returns whether any byte was replaced.
bool fit_utf8(std::string& s, bool& truncated, std::size_t max) {
    if (truncated && !s.empty()) {
        std::size_t start = s.size() - 1;  // where the last character begins
        while (start > 0 && s.size() - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        const auto c = static_cast<unsigned char>(s[start]);
        const std::size_t len = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
        if (s.size() - start < len) s.resize(start);  // a character the cut left unfinished
    }
    const bool lossy = make_utf8(s);
    if (s.size() > max) {
        cut_at_boundary(s, max);
        truncated = true;
    }
    return lossy;
}

std::string pack_result(SpawnResult& r, std::size_t max_output) {
    const bool out_lossy = fit_utf8(r.out, r.out_truncated, max_output);
    const bool err_lossy = fit_utf8(r.err, r.err_truncated, max_output);
    detail::StringBuffer b;
    msgpack::packer<detail::StringBuffer> p(b);
    p.pack_map(3 + r.out_truncated + r.err_truncated + out_lossy + err_lossy);
    p.pack("exit");
    p.pack(r.exit_code);
    p.pack("stdout");
    p.pack(r.out);
    p.pack("stderr");
    p.pack(r.err);
    for (const auto& [key, on] : {std::pair{"stdout_truncated", r.out_truncated},
                                  {"stderr_truncated", r.err_truncated},
                                  {"stdout_lossy", out_lossy},
                                  {"stderr_lossy", err_lossy}}) {
        if (!on) continue;
        p.pack(key);
        p.pack(true);
    }
    return std::move(b.data);
}

// The last bytes of stderr, for an error message: ": …" or "" when it said nothing.
std::string stderr_tail(std::string err) {
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ' || err.back() == '\r')) err.pop_back();
    if (err.empty()) return "";
    if (err.size() > k_stderr_tail) err = "…" + err.substr(err.size() - k_stderr_tail);
    make_utf8(err);
    return "; stderr: " + err;
}

struct Compiled {
    CommandSpec spec;
    CommandTemplate tmpl;
    std::optional<std::vector<std::string>> env;  // the worker's environment with the command's on top
};

std::vector<std::string> merged_env(const std::map<std::string, std::string>& extra) {
    std::vector<std::string> env;
    for (char** e = environ; e && *e; ++e) {
        const std::string entry(*e);
        const auto eq = entry.find('=');
        if (eq != std::string::npos && extra.count(entry.substr(0, eq))) continue;
        env.push_back(entry);
    }
    for (const auto& [k, v] : extra) env.push_back(k + "=" + v);
    return env;
}

// Runs command `c` for one task's `args`. Throws ArgumentError, TaskTimedOut, std::runtime_error (failures).
std::string run_one(const Compiled& c, const msgpack::object& raw) {
    auto args = string_args(raw);
    SpawnRequest q;
    if (c.spec.stdin_from_last_arg) {
        if (args.empty())
            throw ArgumentError("command '" + c.spec.name + "' reads its last argument on stdin: none given");
        q.input = std::move(args.back());
        args.pop_back();
    }
    q.argv = expand_template(c.tmpl, args);
    q.cwd = c.spec.cwd;
    q.env = c.env ? &*c.env : nullptr;
    q.max_output = c.spec.max_output_bytes;
    const auto start = Clock::now();
    q.deadline = current_task_deadline();
    if (c.spec.timeout.count() > 0 && (!q.deadline || start + c.spec.timeout < *q.deadline))
        q.deadline = start + c.spec.timeout;
    auto r = run_command(q);
    if (r.spawn_errno != 0) {
        if (!q.cwd.empty() && ::access(q.cwd.c_str(), X_OK) != 0)
            throw std::runtime_error("cannot run '" + q.argv[0] + "': its working directory '" + q.cwd +
                                     "': " + std::strerror(errno));
        throw std::runtime_error("cannot run '" + q.argv[0] + "': " + std::strerror(r.spawn_errno));
    }
    if (r.status_taken)
        throw std::runtime_error("'" + q.argv[0] +
                                 "' ended, but another part of this program took its exit status (it reaps "
                                 "every child): its outcome is unknown");
    if (r.timed_out) {
        const auto ms = std::chrono::duration_cast<Millis>(*q.deadline - start).count();
        throw TaskTimedOut("timed out after " + std::to_string(ms) + " ms (its process group was killed)");
    }
    if (r.signal != 0)
        throw std::runtime_error("killed by signal " + std::to_string(r.signal) + " (" + signal_name(r.signal) + ")" +
                                 stderr_tail(r.err));
    if (r.exit_code != 0) throw std::runtime_error("exit code " + std::to_string(r.exit_code) + stderr_tail(r.err));
    return pack_result(r, q.max_output);
}

}  // namespace

CommandSpec parse_command_option(std::string_view text) {
    const auto eq = text.find('=');
    if (eq == std::string_view::npos || eq == 0)
        throw std::invalid_argument("--command '" + std::string(text) + "': expected NAME=PROGRAM ARG…");
    CommandSpec c;
    c.name = std::string(text.substr(0, eq));
    try {
        c.argv = split_words(text.substr(eq + 1));
        (void)parse_template(c.argv);
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument("--command " + c.name + ": " + e.what());
    }
    return c;
}

// Whether an argument may land where the program reads options: a
// placeholder (or the appended arguments) with no "--" word before it. An
// argument "-rf" would then be an option, not a name.
bool args_may_be_options(const CommandTemplate& t) {
    for (std::size_t i = 1; i < t.words.size(); ++i) {  // words[0] is the program
        const auto& w = t.words[i];
        if (w.kind == TemplateWord::Kind::literal && w.text == "--") return false;
        if (w.kind != TemplateWord::Kind::literal) return true;
    }
    return true;  // appended after the words, or placed nowhere but after them
}

std::string describe_command(const CommandSpec& c) {
    const auto tmpl = parse_template(c.argv);
    std::string out = c.name + "  command: " + template_text(tmpl);
    if (c.timeout.count() > 0) out += "  [timeout " + std::to_string(c.timeout.count()) + " ms]";
    if (!c.cwd.empty()) out += "  [cwd " + c.cwd + "]";
    if (c.stdin_from_last_arg) out += "  [stdin: last argument]";
    else if (args_may_be_options(tmpl))
        out += "  [note: an argument beginning with '-' reaches it as an option; put -- before {} if it takes --]";
    return out;
}

void add_command_tasks(Registry& registry, const std::vector<CommandSpec>& commands) {
    std::set<std::string> seen;
    for (const auto& spec : commands) {
        if (!seen.insert(spec.name).second)
            throw std::invalid_argument("command '" + spec.name + "' is declared twice");
        if (registry.contains(spec.name))
            throw std::invalid_argument("command '" + spec.name + "' has the name of a task this worker runs already");
        auto c = std::make_shared<Compiled>();
        c->spec = spec;
        c->tmpl = parse_template(spec.argv);
        if (!spec.env.empty()) c->env = merged_env(spec.env);
        registry.add_blocking(spec.name, [c](const msgpack::object& args) { return run_one(*c, args); });
    }
}

void signal_running_commands(int sig) { signal_command_groups(sig); }
bool wait_running_commands(std::chrono::milliseconds limit) { return wait_command_groups(limit); }

}  // namespace drover
