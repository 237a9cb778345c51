#!/usr/bin/env bash
# Installs the Debian packages drover needs to build and test, if missing.
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  echo "usage: scripts/setup.sh    install missing build dependencies (Debian 12; root or sudo)"; exit 0
fi
packages=(build-essential cmake pkg-config libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libboost-dev libspdlog-dev
          catch2 libcli11-dev nlohmann-json3-dev libsodium-dev
          zlib1g-dev                # the broker journal: crc32 per record
          libsimdjson-dev           # drover-producer submit: parsing task lines (JSON lines) fast
          clang libclang-rt-14-dev  # fuzz/: clang and its libFuzzer runtime (only recommended by clang)
          clang-format-14           # scripts/format.sh and the format test
          iproute2                  # multihost tests: ip netns, veth, bridge
          python3                   # scripts/soak.sh: the chaos driver and its ledger
          python3-zmq python3-msgpack python3-venv  # python/: the drover package, and its pip install test
          parallel                  # drover-bench W10: GNU parallel -j2, a baseline of command tasks
          dpkg-dev lintian          # the package test: cpack's dpkg-shlibdeps, then Debian's policy checks
          slurm-wlm munge           # tests only (label slurm, as root): a Slurm the test starts itself
                                    # (under systemd, apt also enables munge's and Slurm's own services)
          systemd systemd-container # tests only (label systemd): systemd-analyze verify of packaging/systemd,
                                    # and systemd-nspawn to boot them
         )
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
