// The security flags every drover program takes (header-only: include it
// where CLI11 is already linked, i.e. in the programs' command lines).
#pragma once

#include <CLI/CLI.hpp>

#include "drover/common/security.hpp"

namespace drover {

// Adds --security DIR (the one flag that turns CurveZMQ on), and the flags
// that override a file of DIR, to `app` as a "security" group.
inline void add_security_options(CLI::App& app, SecurityOptions& o, Role role) {
    auto* g = app.add_option_group("security", "CurveZMQ on tcp sockets, see docs/security.md");
    g->add_option("--security", o.dir, "fleet directory (drover-keygen --fleet DIR): turns CurveZMQ and allow-lists on")
        ->check(CLI::ExistingDirectory);
    g->add_option("--curve-secret", o.secret, "this program's secret key file (default DIR/<role>.key_secret)")
        ->check(CLI::ExistingFile);
    if (role != Role::broker)
        g->add_option("--curve-server-public", o.server_public, "the broker's public key file (default DIR/broker.key)")
            ->check(CLI::ExistingFile);
    if (role == Role::broker)
        g->add_option("--allow-producers", o.allow_producers,
                      "allowed producer and sink keys: a directory of NAME.key files or a file of 'KEY NAME' lines "
                      "(default DIR/allow/producers; reloaded on SIGHUP)");
    if (role != Role::worker) {
        g->add_option("--allow-workers", o.allow_workers,
                      "allowed worker keys, same forms (default DIR/allow/workers; reloaded on SIGHUP)");
        g->add_option("--handshake-ms", o.handshake_ms, "close connections that have not finished their handshake")
            ->capture_default_str()
            ->check(CLI::Range(100, 600000));
    }
}

}  // namespace drover
