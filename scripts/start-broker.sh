#!/usr/bin/env bash
# Starts a drover broker in the background, or stops it.
#   scripts/start-broker.sh [--run-dir DIR] [--no-journal] [drover-broker flags...]
#   scripts/start-broker.sh stop [--run-dir DIR]
# Accepted tasks are journaled in DIR/journal (they survive a crash and a
# restart) unless --no-journal or a --journal of your own is given.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
run_dir="${DROVER_RUN_DIR:-/tmp/drover-run}"
bin="${DROVER_BIN:-$root/build/bin}"
usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; echo "PID and log: \$DROVER_RUN_DIR (default /tmp/drover-run)/broker.{pid,log}"; }
cmd=start
[[ "${1:-}" == "stop" ]] && { cmd=stop; shift; }
args=()
journal=1
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --run-dir) run_dir="$2"; shift 2 ;;
    --no-journal) journal=0; shift ;;
    --journal|--journal=*) journal=0; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
mkdir -p "$run_dir"
pidfile="$run_dir/broker.pid"
# Whether the pidfile names a running drover-broker (not a process that took its pid since).
running() { [[ -f $pidfile ]] && [[ "$(ps -o comm= -p "$(cat "$pidfile")" 2>/dev/null)" == drover-broker ]]; }
if [[ $cmd == stop ]]; then
  if running && kill "$(cat "$pidfile")" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
    echo "broker stopped"
  else
    echo "no broker running from $run_dir"
  fi
  rm -f "$pidfile" "$run_dir/broker.json"; exit 0
fi
# One broker a run directory: a second start would take over its log,
# endpoints file and pidfile, and leave the first running unseen.
if running; then
  echo "start-broker.sh: a broker started from $run_dir is running (pid $(cat "$pidfile")): stop it first (scripts/start-broker.sh stop --run-dir $run_dir), or give another --run-dir" >&2
  exit 1
fi
exe="$bin/drover-broker"
[[ -x $exe ]] || exe="$(command -v drover-broker)" || { echo "start-broker.sh: drover-broker not found; run scripts/build.sh" >&2; exit 1; }
rm -f "$run_dir/broker.json"
((journal)) && args=(--journal "$run_dir/journal" "${args[@]}")
"$exe" --endpoints-file "$run_dir/broker.json" "${args[@]}" >"$run_dir/broker.log" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 100); do [[ -s "$run_dir/broker.json" ]] && break; kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.05; done
if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then cat "$run_dir/broker.log" >&2; rm -f "$pidfile"; exit 1; fi
echo "broker pid $(cat "$pidfile"): $(cat "$run_dir/broker.json")"
