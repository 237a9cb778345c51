// Argv templates of command tasks (command_template.hpp).
#include "command_template.hpp"

#include <stdexcept>

#include "drover/worker/registry.hpp"

namespace drover {

CommandTemplate parse_template(const std::vector<std::string>& words) {
    if (words.empty()) throw std::invalid_argument("empty command template: no program");
    CommandTemplate t;
    for (const auto& w : words) {
        TemplateWord tw;
        tw.text = w;
        if (w == "{}") {
            tw.kind = TemplateWord::Kind::all_args;
        } else if (w.size() >= 3 && w.front() == '{' && w.back() == '}' &&
                   w.find_first_not_of("0123456789", 1) == w.size() - 1 && w.size() <= 8) {
            tw.kind = TemplateWord::Kind::one_arg;
            tw.index = std::stoul(w.substr(1, w.size() - 2));
        }
        if (tw.kind != TemplateWord::Kind::literal) t.has_placeholder = true;
        t.words.push_back(std::move(tw));
    }
    if (t.words.front().kind != TemplateWord::Kind::literal)
        throw std::invalid_argument("command template starts with a placeholder: the program must be fixed");
    return t;
}

CommandTemplate parse_template(std::string_view text) { return parse_template(split_words(text)); }

std::vector<std::string> expand_template(const CommandTemplate& t, const std::vector<std::string>& args) {
    std::vector<std::string> argv;
    argv.reserve(t.words.size() + args.size());
    for (const auto& w : t.words) {
        switch (w.kind) {
            case TemplateWord::Kind::literal: argv.push_back(w.text); break;
            case TemplateWord::Kind::all_args: argv.insert(argv.end(), args.begin(), args.end()); break;
            case TemplateWord::Kind::one_arg:
                if (w.index >= args.size())
                    throw ArgumentError("placeholder {" + std::to_string(w.index) + "} needs argument " +
                                        std::to_string(w.index) + " (counting from 0), but the task has " +
                                        std::to_string(args.size()) + " argument" + (args.size() == 1 ? "" : "s"));
                argv.push_back(args[w.index]);
                break;
        }
    }
    if (!t.has_placeholder) argv.insert(argv.end(), args.begin(), args.end());
    return argv;
}

std::string template_text(const CommandTemplate& t) {
    std::string out;
    for (const auto& w : t.words) {
        if (!out.empty()) out += ' ';
        const bool plain = !w.text.empty() && w.text.find_first_of(" \t\n\r'\"\\$`;&|<>()*?[]#~") == std::string::npos;
        if (plain || w.kind != TemplateWord::Kind::literal) {
            out += w.text;
            continue;
        }
        out += '\'';
        for (char c : w.text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
        out += '\'';
    }
    return out;
}

}  // namespace drover
