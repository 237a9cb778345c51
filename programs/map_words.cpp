// The words of `drover-producer map`.
#include "map_words.hpp"

#include <stdexcept>

#include "drover/client/json_lines.hpp"

namespace drover {

nlohmann::json map_arg(const std::string& word, const std::string& which) {
    if (word.empty() || (word[0] != '[' && word[0] != '{' && word[0] != '"')) return word;
    // Packing one would recurse that deep; its argument list is a level more.
    if (!json_within_depth_limit(word, k_max_data_depth - 1))
        throw std::invalid_argument(which + " nests deeper than " + std::to_string(k_max_data_depth - 1) + " levels");
    try {
        return nlohmann::json::parse(word);
    } catch (const nlohmann::json::exception&) {
        throw std::invalid_argument(which + " begins with " + word.substr(0, 1) +
                                    " but is not JSON: " + word.substr(0, 80) +
                                    " (quote it as a JSON string, e.g. '\"[x\"', to send it as text)");
    }
}

std::vector<std::string> split_words(std::string_view line) {
    std::vector<std::string> words;
    std::string word;
    bool in_word = false;  // a word has begun (so '' makes an empty one)
    for (std::size_t i = 0; i < line.size(); ++i) {
        const char c = line[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            if (in_word) words.push_back(std::move(word));
            word.clear();
            in_word = false;
            continue;
        }
        in_word = true;
        if (c == '\'') {
            const auto close = line.find('\'', i + 1);
            if (close == std::string_view::npos) throw std::invalid_argument("unclosed ' quote");
            word.append(line.substr(i + 1, close - i - 1));
            i = close;
        } else if (c == '"') {
            for (++i;; ++i) {
                if (i >= line.size()) throw std::invalid_argument("unclosed \" quote");
                if (line[i] == '"') break;
                if (line[i] == '\\' && i + 1 < line.size() && (line[i + 1] == '"' || line[i + 1] == '\\')) ++i;
                word += line[i];
            }
        } else if (c == '\\' && i + 1 < line.size()) {
            word += line[++i];
        } else {
            word += c;
        }
    }
    if (in_word) words.push_back(std::move(word));
    return words;
}

}  // namespace drover
