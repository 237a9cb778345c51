// Shell-like word splitting, shared by the worker's command templates and
// drover-producer's `map -` input lines.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace drover {

// Splits `text` into words as a POSIX shell would, without any expansion:
// blanks separate words; '...' keeps everything literal; "..." keeps all
// but \" \\ \$ \` literal; a backslash outside quotes takes the next
// character literally. '' and "" make an empty word. Throws:
// std::invalid_argument for an unterminated quote or a trailing backslash.
std::vector<std::string> split_words(std::string_view text);

}  // namespace drover
