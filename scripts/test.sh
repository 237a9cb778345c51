#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test tier (unit, integration, e2e).
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  echo "usage: scripts/test.sh [ctest args...]   e.g. scripts/test.sh -L unit"; exit 0
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/build.sh" "$root/build" Release
cd "$root/build"
ctest --output-on-failure --timeout 300 "$@"
