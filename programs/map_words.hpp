// The words of `drover-producer map`: the argument rule and line splitting.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include "internal/shell_words.hpp"  // split_words: an input line's words

namespace drover {

// One map argument: the word as a string, verbatim, unless it begins with
// '[', '{' or '"', when it is JSON (a shell's words are strings; typed
// tasks convert "42" themselves). `which` names it in errors ("argument 2").
// Throws: std::invalid_argument if such a word is not JSON, or nests deeper
// than a task's arguments may.
nlohmann::json map_arg(const std::string& word, const std::string& which);

}  // namespace drover
