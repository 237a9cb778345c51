// Shell-like word splitting without expansions (internal/shell_words.hpp).
#include "internal/shell_words.hpp"

#include <stdexcept>

namespace drover {

namespace {

bool blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Reads a double-quoted run starting after its opening quote at `i`; returns the index past the closing quote.
std::size_t read_double_quoted(std::string_view text, std::size_t i, std::string& word) {
    while (i < text.size() && text[i] != '"') {
        if (text[i] == '\\' && i + 1 < text.size() &&
            (text[i + 1] == '"' || text[i + 1] == '\\' || text[i + 1] == '$' || text[i + 1] == '`')) {
            word += text[i + 1];
            i += 2;
            continue;
        }
        word += text[i++];
    }
    if (i >= text.size()) throw std::invalid_argument("unterminated \" quote");
    return i + 1;
}

}  // namespace

std::vector<std::string> split_words(std::string_view text) {
    std::vector<std::string> words;
    std::string word;
    bool in_word = false;
    std::size_t i = 0;
    while (i < text.size()) {
        const char c = text[i];
        if (blank(c)) {
            if (in_word) words.push_back(std::move(word));
            word.clear();
            in_word = false;
            ++i;
            continue;
        }
        in_word = true;
        if (c == '\'') {
            const auto end = text.find('\'', i + 1);
            if (end == std::string_view::npos) throw std::invalid_argument("unterminated ' quote");
            word.append(text.substr(i + 1, end - i - 1));
            i = end + 1;
        } else if (c == '"') {
            i = read_double_quoted(text, i + 1, word);
        } else if (c == '\\') {
            if (i + 1 >= text.size()) throw std::invalid_argument("trailing \\ (it escapes nothing)");
            word += text[i + 1];
            i += 2;
        } else {
            word += c;
            ++i;
        }
    }
    if (in_word) words.push_back(std::move(word));
    return words;
}

}  // namespace drover
