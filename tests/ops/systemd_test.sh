#!/usr/bin/env bash
# The systemd units of packaging/systemd:
# 1. `systemd-analyze verify` finds nothing to say about them (it exits 0 on
#    an unknown directive and only warns, so any output fails), and does
#    warn on a copy with a misspelled directive (the check can fail);
# 2. systemd-sysusers makes the drover user from drover.sysusers;
# 3. each ExecStart line, expanded as systemd would with the values of the
#    example /etc/default/drover (ports made ephemeral), starts a broker and
#    a worker pool that serve tasks and stop with 0 on SIGTERM.
# Without systemd as PID 1 the units cannot be started here; 3 runs their
# command lines instead.
#   tests/ops/systemd_test.sh SOURCE_DIR BIN_DIR
# Exit 77 (ctest SKIP_RETURN_CODE) when systemd-analyze is not installed.
set -euo pipefail
src=$(cd "$1" && pwd) bin=$(cd "$2" && pwd)
units=$src/packaging/systemd
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze not installed (Debian package systemd)"; exit 77; }
tmp=$(mktemp -d /tmp/drover-systemd.XXXXXX)
pids=()
fail() { echo "FAIL: $*" >&2; for f in "$tmp"/*.log; do [[ -f $f ]] && { echo "== $f" >&2; tail -n 20 "$f" >&2; }; done; exit 1; }
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
wait_for() { local n=$(($1 * 10)); shift; for ((i = 0; i < n; i++)); do "$@" && return 0; sleep 0.1; done; return 1; }

# 1. The units as installed, their programs taken from BIN_DIR.
mkdir "$tmp/units" "$tmp/bad"
for u in "$units"/*.service; do sed "s#/usr/bin/#$bin/#" "$u" >"$tmp/units/$(basename "$u")"; done
verify() { (cd "$1" && shift && systemd-analyze verify --man=no "$@" 2>&1); }
out=$(verify "$tmp/units" "$tmp/units/drover-broker.service" "$tmp/units/drover-worker@pool.service") ||
  fail "systemd-analyze verify failed: $out"
[[ -z $out ]] || fail "systemd-analyze verify warns: $out"
echo "verify: no warnings on drover-broker.service and drover-worker@pool.service"
for u in drover-broker.service drover-worker@.service; do
  sed 's/^NoNewPrivileges=/NoNewPrivilege=/' "$tmp/units/$u" >"$tmp/bad/$u"
  out=$(verify "$tmp/bad" "$tmp/bad/${u/@/@pool}") || true
  [[ $out == *"Unknown key"*NoNewPrivilege* ]] || fail "verify said nothing of a misspelled directive in $u: $out"
done
echo "verify: warns on a misspelled directive"

# 2. The drover user.
if command -v systemd-sysusers >/dev/null; then
  mkdir -p "$tmp/root/etc"
  systemd-sysusers --root="$tmp/root" "$units/drover.sysusers" >"$tmp/sysusers.log" 2>&1 || fail "systemd-sysusers failed"
  grep -q '^drover:x:[0-9]*:[0-9]*:drover task broker and workers:/var/lib/drover:/usr/sbin/nologin$' "$tmp/root/etc/passwd" ||
    fail "no drover user: $(cat "$tmp/root/etc/passwd")"
  grep -q '^drover:x:' "$tmp/root/etc/group" || fail "no drover group"
  echo "sysusers: $(grep '^drover:' "$tmp/root/etc/passwd")"
fi

# 3. The ExecStart lines. Specifiers: %S /var/lib, %t /run, %i the instance.
exec_start() {
  local line
  line=$(sed -n 's/^ExecStart=//p' "$units/$1")
  line=${line//%S/$tmp/var/lib}
  line=${line//%t/$tmp/run}
  line=${line//%i/$2}
  echo "${line/\/usr\/bin\//$bin/}"
}
# Runs a unit's command line with the environment of the example config
# ($VAR splits on white space, as systemd's does; no globbing).
start() {
  local unit=$1 instance=$2 log=$3 dir=$4 line
  line=$(exec_start "$unit" "$instance")
  echo "$unit: $line"
  (
    cd "$dir"
    set -f
    eval "set -- $line"
    exec "$@"
  ) >"$tmp/$log" 2>&1 &
  pids+=($!)
}
set -a
# shellcheck disable=SC1091
. "$src/packaging/config/drover.default"
set +a
[[ $DROVER_BROKER_OPTS == *":5555"* && $DROVER_BROKER_OPTS == *":5556"* ]] || fail "the example config's ports moved"
DROVER_BROKER_OPTS=${DROVER_BROKER_OPTS//:5555/:*}
DROVER_BROKER_OPTS=${DROVER_BROKER_OPTS//:5556/:*}
mkdir -p "$tmp/var/lib/drover" "$tmp/run/drover" "$tmp/var/lib/drover/worker-pool"  # StateDirectory=, RuntimeDirectory=
start drover-broker.service "" broker.log /
wait_for 10 test -s "$tmp/run/drover/broker.json" || fail "the broker wrote no %t/drover/broker.json"
endpoint() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/run/drover/broker.json" "$1"; }
frontend=$(endpoint frontend)
DROVER_WORKER_OPTS=${DROVER_WORKER_OPTS//tcp:\/\/127.0.0.1:5556/$(endpoint backend)}
start drover-worker@.service pool worker.log "$tmp/var/lib/drover/worker-pool"  # WorkingDirectory=
out=$("$bin/drover-producer" --broker "$frontend" --wait-workers 1 map hello unit)
[[ $out == '"Hello, unit!"' ]] || fail "map hello: $out"
echo "served: $out"
DROVER_RUN_DIR=$tmp/run/drover "$bin/drover-broker" status | grep -q '"pool": "processes"' ||
  fail "status from the broker's endpoints file shows no processes pool"
[[ -d $tmp/var/lib/drover/journal ]] || fail "no journal in %S/drover/journal"
for p in "${pids[@]}"; do kill -TERM "$p"; done  # KillMode=mixed: the main processes only
for p in "${pids[@]}"; do
  (sleep 15 && kill -9 "$p") >/dev/null 2>&1 &  # TimeoutStopSec
  watchdog=$!
  rc=0
  wait "$p" || rc=$?
  pkill -P "$watchdog" sleep
  [[ $rc == 0 ]] || fail "pid $p exited $rc on SIGTERM (137: did not stop within 15 s)"
done
pids=()
echo "PASS: units verified; their command lines serve a task and stop with 0 on SIGTERM"
