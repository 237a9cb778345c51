#!/usr/bin/env bash
# Configures and builds drover: scripts/build.sh [BUILD_DIR] [BUILD_TYPE]
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  echo "usage: scripts/build.sh [BUILD_DIR (default build)] [BUILD_TYPE (default Release)]"; exit 0
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/build}"
type="${2:-Release}"
"$root/scripts/setup.sh"
cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DDROVER_BUILD_TESTS=ON >&2
cmake --build "$dir" -j"$(nproc)" >&2
