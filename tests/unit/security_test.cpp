// Unit tests of the security helpers that need no socket: keys, key files,
// allow-lists, keyed endpoints.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include "drover/common/security.hpp"

using namespace drover;

namespace {

namespace fs = std::filesystem;

struct Scratch {
    Scratch() {
        char tmpl[] = "/tmp/drover-unit-XXXXXX";
        REQUIRE(::mkdtemp(tmpl));
        path = tmpl;
    }
    ~Scratch() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    [[nodiscard]] std::string file(const std::string& name) const { return path + "/" + name; }
    std::string path;
};

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

}  // namespace

TEST_CASE("a generated key pair is two Z85 keys, and the secret's public key is derived from it", "[unit]") {
    const auto keys = generate_key_pair();
    CHECK(is_z85_key(keys.public_key));
    CHECK(is_z85_key(keys.secret_key));
    CHECK(keys.public_key != keys.secret_key);
    Scratch dir;
    write_key_pair(dir.path, "a", keys);
    const auto read = read_secret_key(dir.file("a.key_secret"));
    CHECK(read.public_key == keys.public_key);
    CHECK(read.secret_key == keys.secret_key);
    CHECK(read_public_key(dir.file("a.key")) == keys.public_key);
}

TEST_CASE("Z85 keys are exactly 40 characters of the Z85 alphabet", "[unit]") {
    CHECK(is_z85_key("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"));
    CHECK_FALSE(is_z85_key("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf"));    // 39
    CHECK_FALSE(is_z85_key("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7x"));  // 41
    CHECK_FALSE(is_z85_key("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf\""));  // '"' is not Z85
    CHECK_FALSE(is_z85_key(""));
}

TEST_CASE("a secret key file that group or others may read is refused", "[unit]") {
    Scratch dir;
    write_key_pair(dir.path, "a", generate_key_pair());
    for (mode_t mode : {0644, 0640, 0604, 0660}) {
        REQUIRE(::chmod(dir.file("a.key_secret").c_str(), mode) == 0);
        CHECK_THROWS_WITH(read_secret_key(dir.file("a.key_secret")), Catch::Contains("may be read by others"));
    }
    REQUIRE(::chmod(dir.file("a.key_secret").c_str(), 0400) == 0);
    CHECK_NOTHROW(read_secret_key(dir.file("a.key_secret")));
    CHECK_THROWS_AS(read_secret_key(dir.file("missing")), SecurityError);
}

TEST_CASE("write_key_pair does not replace an existing secret unless asked", "[unit]") {
    Scratch dir;
    const auto first = generate_key_pair();
    write_key_pair(dir.path, "a", first);
    CHECK_THROWS_AS(write_key_pair(dir.path, "a", generate_key_pair()), SecurityError);
    CHECK(read_secret_key(dir.file("a.key_secret")).public_key == first.public_key);
    const auto second = generate_key_pair();
    write_key_pair(dir.path, "a", second, /*overwrite=*/true);
    CHECK(read_secret_key(dir.file("a.key_secret")).public_key == second.public_key);
}

TEST_CASE("a key file may carry comment lines, but anything else before the key is an error", "[unit]") {
    Scratch dir;
    const auto key = generate_key_pair().public_key;
    write(dir.file("ok.key"), "# comment\n\n   " + key + "   trailing words\n");
    CHECK(read_public_key(dir.file("ok.key")) == key);
    write(dir.file("bad.key"), "public-key = \"" + key + "\"\n");
    CHECK_THROWS_AS(read_public_key(dir.file("bad.key")), SecurityError);
}

TEST_CASE("an allow-list directory names each key after its file", "[unit]") {
    Scratch dir;
    fs::create_directories(dir.file("allow"));
    const auto a = generate_key_pair().public_key, b = generate_key_pair().public_key;
    write(dir.file("allow/alice.key"), a + "\n");
    write(dir.file("allow/bob.key"), b + "\n");
    write(dir.file("allow/bob.key_secret"), "not read\n");
    write(dir.file("allow/README"), "not read\n");
    write(dir.file("allow/broken.key"), "nonsense\n");
    std::vector<std::string> problems;
    const auto list = read_allow_list(dir.file("allow"), problems);
    REQUIRE(list.size() == 2);
    CHECK(list.at(a) == "alice");
    CHECK(list.at(b) == "bob");
    REQUIRE(problems.size() == 1);
    CHECK(problems[0].find("broken.key") != std::string::npos);
}

TEST_CASE("an allow-list file has one key a line, with an optional name", "[unit]") {
    Scratch dir;
    const auto a = generate_key_pair().public_key, b = generate_key_pair().public_key;
    write(dir.file("allow.txt"), "# producers\n" + a + " alice\n\n" + b + "\nnot-a-key carol\n");
    std::vector<std::string> problems;
    const auto list = read_allow_list(dir.file("allow.txt"), problems);
    REQUIRE(list.size() == 2);
    CHECK(list.at(a) == "alice");
    CHECK(list.at(b) == "key-" + b.substr(0, 8));
    REQUIRE(problems.size() == 1);
    CHECK(problems[0].find("line 5") != std::string::npos);
}

TEST_CASE("a missing allow-list allows nobody and says so", "[unit]") {
    std::vector<std::string> problems;
    CHECK(read_allow_list("/nonexistent/drover/allow", problems).empty());
    REQUIRE(problems.size() == 1);
    CHECK(problems[0].find("does not exist") != std::string::npos);
}

TEST_CASE("a keyed endpoint carries a sink's server key after ?curve=", "[unit]") {
    const auto key = generate_key_pair().public_key;
    const auto keyed = keyed_endpoint("tcp://10.0.0.5:4000", key);
    CHECK(keyed == "tcp://10.0.0.5:4000?curve=" + key);
    const auto split = split_keyed_endpoint(keyed);
    CHECK(split.endpoint == "tcp://10.0.0.5:4000");
    CHECK(split.server_key == key);
    CHECK(split_keyed_endpoint("tcp://10.0.0.5:4000").server_key.empty());
    CHECK(split_keyed_endpoint("ipc:///tmp/x").endpoint == "ipc:///tmp/x");
    // A plain process leaves endpoints alone; ipc never gets a key.
    CHECK(with_sink_key("tcp://10.0.0.5:4000", nullptr) == "tcp://10.0.0.5:4000");
}

TEST_CASE("only tcp endpoints off loopback count as reachable from the network", "[unit]") {
    CHECK(is_network_endpoint("tcp://*:5555"));
    CHECK(is_network_endpoint("tcp://0.0.0.0:5555"));
    CHECK(is_network_endpoint("tcp://10.0.0.1:5555"));
    CHECK(is_network_endpoint("tcp://eth0:5555"));
    CHECK_FALSE(is_network_endpoint("tcp://127.0.0.1:5555"));
    CHECK_FALSE(is_network_endpoint("tcp://127.0.0.1:*"));
    CHECK_FALSE(is_network_endpoint("tcp://localhost:5555"));
    CHECK_FALSE(is_network_endpoint("tcp://[::1]:5555"));
    CHECK_FALSE(is_network_endpoint("ipc:///tmp/drover"));
    CHECK_FALSE(is_network_endpoint("inproc://x"));
}

TEST_CASE("security options pass the client's files on to a child process", "[unit]") {
    SecurityOptions o;
    CHECK_FALSE(o.enabled());
    CHECK(o.to_args().empty());
    o.dir = "/etc/drover";
    o.secret = "/etc/drover/w7.key_secret";
    CHECK(o.enabled());
    CHECK(o.to_args() ==
          std::vector<std::string>{"--security", "/etc/drover", "--curve-secret", "/etc/drover/w7.key_secret"});
}
