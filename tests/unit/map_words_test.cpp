// Unit tests of map's words: the argument rule and the splitting of input lines.
#include <stdexcept>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "map_words.hpp"

using Catch::Matchers::Contains;
using drover::map_arg;
using drover::split_words;
using Words = std::vector<std::string>;

TEST_CASE("a map argument is a string unless it begins like JSON: a bracket, a brace or a quote", "[unit]") {
    CHECK(map_arg("007", "argument 1") == "007");
    CHECK(map_arg("true", "argument 1") == "true");
    CHECK(map_arg("null", "argument 1") == "null");
    CHECK(map_arg("1e6", "argument 1") == "1e6");
    CHECK(map_arg("", "argument 1") == "");
    CHECK(map_arg(" [1]", "argument 1") == " [1]");  // JSON only from the first character
    CHECK(map_arg("[1,2]", "argument 1") == nlohmann::json::array({1, 2}));
    CHECK(map_arg("{\"a\":1}", "argument 1") == nlohmann::json{{"a", 1}});
    CHECK(map_arg("\"007\"", "argument 1") == "007");
    CHECK(map_arg("\"[x\"", "argument 1") == "[x");
}

TEST_CASE("a map argument that begins like JSON but is not is an error naming it", "[unit]") {
    CHECK_THROWS_WITH(map_arg("[1,", "argument 3"), Contains("argument 3") && Contains("not JSON"));
    CHECK_THROWS_WITH(map_arg("{x}", "argument 1"), Contains("argument 1"));
    CHECK_THROWS_WITH(map_arg("\"open", "argument 2"), Contains("argument 2"));
    CHECK_THROWS_WITH(map_arg(std::string(300, '[') + std::string(300, ']'), "argument 1"), Contains("deeper"));
}

TEST_CASE("input lines split into words as a shell splits them, without expansions", "[unit]") {
    CHECK(split_words("") == Words{});
    CHECK(split_words("  \t ") == Words{});
    CHECK(split_words("a b\tc") == Words{"a", "b", "c"});
    CHECK(split_words("  a   b  ") == Words{"a", "b"});
    CHECK(split_words("'a b' c") == Words{"a b", "c"});
    CHECK(split_words("\"a b\" c") == Words{"a b", "c"});
    CHECK(split_words("x'y z'w") == Words{"xy zw"});
    CHECK(split_words("'' a \"\"") == Words{"", "a", ""});
    CHECK(split_words(R"("say \"hi\" \\ \n")") == Words{R"(say "hi" \ \n)"});
    CHECK(split_words(R"('it''s' \$HOME a\ b)") == Words{"its", "$HOME", "a b"});
    CHECK(split_words("; touch /tmp/x") == Words{";", "touch", "/tmp/x"});
    CHECK(split_words("a\r") == Words{"a"});  // a CRLF line
    CHECK(split_words("'[1, 2]' {}") == Words{"[1, 2]", "{}"});
}

TEST_CASE("an unclosed quote in an input line is an error", "[unit]") {
    CHECK_THROWS_AS(split_words("'a b"), std::invalid_argument);
    CHECK_THROWS_WITH(split_words("a \"b"), Contains("unterminated"));
}
