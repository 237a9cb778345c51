#!/usr/bin/env bash
# Starts N local drover workers in the background, or stops them.
#   scripts/start-workers.sh N [--run-dir DIR] [drover-worker flags: --broker EP --pool P -c C ...]
#   scripts/start-workers.sh stop [--run-dir DIR]
# Every other flag goes to each worker as given, e.g. --command 'sha=sha256sum -- {}' or --commands FILE.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
run_dir="${DROVER_RUN_DIR:-/tmp/drover-run}"
bin="${DROVER_BIN:-$root/build/bin}"
usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; echo "PIDs and logs: \$DROVER_RUN_DIR (default /tmp/drover-run)/worker-I.{pid,log}"; }
[[ $# -eq 0 ]] && { usage >&2; exit 2; }
case "$1" in -h|--help) usage; exit 0 ;; esac
if [[ "$1" == stop ]]; then
  shift; [[ "${1:-}" == --run-dir ]] && run_dir="$2"
  for f in "$run_dir"/worker-*.pid; do
    [[ -f $f ]] || continue
    kill "$(cat "$f")" 2>/dev/null || true
  done
  for f in "$run_dir"/worker-*.pid; do
    [[ -f $f ]] || continue
    for _ in $(seq 100); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
    rm -f "$f"
  done
  echo "workers stopped"; exit 0
fi
n="$1"; shift
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "start-workers.sh: N must be a positive integer, got '$n'" >&2; exit 2; }
args=()
while (($#)); do
  case "$1" in
    --run-dir) run_dir="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
mkdir -p "$run_dir"
exe="$bin/drover-worker"
[[ -x $exe ]] || exe="$(command -v drover-worker)" || { echo "start-workers.sh: drover-worker not found; run scripts/build.sh" >&2; exit 1; }
for i in $(seq "$n"); do
  "$exe" "${args[@]}" >"$run_dir/worker-$i.log" 2>&1 &
  echo $! >"$run_dir/worker-$i.pid"
done
sleep 0.2
for i in $(seq "$n"); do
  kill -0 "$(cat "$run_dir/worker-$i.pid")" 2>/dev/null || { echo "worker $i failed:" >&2; cat "$run_dir/worker-$i.log" >&2; exit 1; }
done
echo "started $n workers (pids: $(cat "$run_dir"/worker-*.pid | tr '\n' ' '))"
