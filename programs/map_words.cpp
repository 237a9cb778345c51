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

}  // namespace drover
