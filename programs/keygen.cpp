// drover-keygen: writes CurveZMQ key pairs, one or a whole fleet's.
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli.hpp"
#include "drover/common/security.hpp"

int main(int argc, char** argv) {
    std::string name, dir = ".", fleet;
    bool force = false;
    CLI::App app{
        "drover-keygen: writes CurveZMQ key pairs in Z85 (see docs/security.md).\n"
        "  drover-keygen NAME [--dir DIR]   DIR/NAME.key (public) and DIR/NAME.key_secret (mode 0600)\n"
        "  drover-keygen --fleet DIR        key pairs broker, producer, worker and the allow-lists\n"
        "                                   DIR/allow/producers and DIR/allow/workers: run every\n"
        "                                   program with --security DIR"};
    auto* name_opt = app.add_option("name", name, "name of the key pair (a file name, no '/')");
    app.add_option("--dir", dir, "where NAME's files go")->capture_default_str();
    auto* fleet_opt = app.add_option("--fleet", fleet, "write a whole fleet directory");
    app.add_flag("--force", force, "replace existing files");
    drover::add_version_flag(app, "drover-keygen");
    name_opt->excludes(fleet_opt);
    try {
        app.parse(argc, argv);
        if (name.empty() && fleet.empty()) throw CLI::ValidationError("give NAME or --fleet DIR");
        if (name.find('/') != std::string::npos || name == "." || name == "..")
            throw CLI::ValidationError("NAME must be a file name, not '" + name + "'");
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }
    try {
        if (!fleet.empty()) {
            drover::write_fleet(fleet, force);
            std::cout << "fleet keys in " << fleet << ": broker, producer, worker (.key public, .key_secret 0600)\n"
                      << "allow-lists: " << fleet << "/allow/producers, " << fleet << "/allow/workers\n"
                      << "start every program with --security " << fleet << "\n";
        } else {
            const auto keys = drover::generate_key_pair();
            drover::write_key_pair(dir, name, keys, force);
            std::cout << dir << "/" << name << ".key " << keys.public_key << "\n"
                      << dir << "/" << name << ".key_secret (mode 0600)\n";
        }
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "drover-keygen: " << e.what() << "\n";
        return 1;
    }
}
