#!/usr/bin/env bash
# Builds drover (Release) and runs its benchmark: baselines, then drover's workloads, then the table.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  echo "usage: scripts/bench.sh [drover-bench flags]"
  echo "Installs what is missing, builds build/ (Release), and runs build/bench/drover-bench, which prints"
  echo "a table of every figure (median, min, max, ratio to its baseline, target) on stdout and progress on"
  echo "stderr. Examples: scripts/bench.sh --json bench.json    scripts/bench.sh --only W1,W2 --transports tcp"
  echo "See docs/performance.md."
  if [[ -x "$root/build/bench/drover-bench" ]]; then
    echo; "$root/build/bench/drover-bench" --help
  fi
  exit 0
fi
"$root/scripts/build.sh" "$root/build" Release
exec "$root/build/bench/drover-bench" "$@"
