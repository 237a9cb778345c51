#!/usr/bin/env bash
# Formats drover's C++ sources with .clang-format (clang-format 14), or checks them.
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  echo "usage: scripts/format.sh [--check]   format every tracked .cpp/.hpp in place, or only report what differs"; exit 0
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
fmt="$(command -v clang-format-14 || command -v clang-format)" || { echo "format.sh: clang-format not found (scripts/setup.sh installs it)" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.cpp' '*.hpp' 2>/dev/null || find . -path ./build -prune -o \( -name '*.cpp' -o -name '*.hpp' \) -print)
if [[ "${1:-}" == "--check" ]]; then
  exec "$fmt" --dry-run --Werror "${files[@]}"
fi
exec "$fmt" -i "${files[@]}"
