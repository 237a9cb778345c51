// Argv templates of command tasks: split into words once, expanded per task.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>
#include "internal/shell_words.hpp"

namespace drover {

// One word of a template: literal text, or a placeholder.
struct TemplateWord {
    enum class Kind { literal, all_args, one_arg };
    Kind kind = Kind::literal;
    std::string text;       // literal: the word
    std::size_t index = 0;  // one_arg: which argument
};

struct CommandTemplate {
    std::vector<TemplateWord> words;
    bool has_placeholder = false;  // without one, the arguments are appended
};

// Parses words into a template: a whole unquoted-or-quoted word "{}" is all
// arguments, "{N}" is argument N. Other words (with braces or not) are literal.
// Throws std::invalid_argument for an empty template.
CommandTemplate parse_template(const std::vector<std::string>& words);
CommandTemplate parse_template(std::string_view text);

// The argv for `args`: each argument exactly one element where a
// placeholder puts it (appended without one). Throws ArgumentError naming
// a placeholder whose argument was not given.
std::vector<std::string> expand_template(const CommandTemplate& t, const std::vector<std::string>& args);

// The template written back as text, for --list-tasks.
std::string template_text(const CommandTemplate& t);

}  // namespace drover
