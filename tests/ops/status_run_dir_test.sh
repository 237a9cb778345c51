#!/usr/bin/env bash
# `drover-broker status` without --broker asks the broker whose endpoints
# scripts/start-broker.sh wrote in $DROVER_RUN_DIR; without one there it
# says so and exits 2; --broker still wins.
#   tests/ops/status_run_dir_test.sh SOURCE_DIR BIN_DIR
set -euo pipefail
src=$(cd "$1" && pwd) bin=$(cd "$2" && pwd)
tmp=$(mktemp -d /tmp/drover-status.XXXXXX)
run=$tmp/run
cleanup() {
  set +e
  DROVER_BIN=$bin "$src/scripts/start-broker.sh" stop --run-dir "$run" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# Runs drover-broker status with DROVER_RUN_DIR=$1 and the flags after it;
# sets rc, out and err.
status() {
  local dir=$1
  shift
  rc=0
  DROVER_RUN_DIR=$dir "$bin/drover-broker" status --timeout-ms 1000 "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  out=$(cat "$tmp/out") err=$(cat "$tmp/err")
}

DROVER_BIN=$bin DROVER_RUN_DIR=$run "$src/scripts/start-broker.sh" --no-journal --frontend 'tcp://127.0.0.1:*' \
  --backend 'tcp://127.0.0.1:*' --log-level warn
frontend=$(sed 's/.*"frontend":"\([^"]*\)".*/\1/' "$run/broker.json")

status "$run"
[[ $rc == 0 ]] || fail "status with DROVER_RUN_DIR exited $rc: $err"
[[ $out == *"\"frontend\": \"$frontend\""* ]] || fail "status answered for another broker: $out"
echo "status from \$DROVER_RUN_DIR/broker.json: frontend $frontend"

status "$tmp/elsewhere" --broker "$frontend"
[[ $rc == 0 && $out == *"\"frontend\": \"$frontend\""* ]] || fail "--broker did not win over DROVER_RUN_DIR: $rc $err"

mkdir "$tmp/bad" && echo '{"backend":"tcp://127.0.0.1:1"}' >"$tmp/bad/broker.json"
status "$tmp/bad"
[[ $rc == 2 && $err == *"$tmp/bad/broker.json holds no \"frontend\""* ]] || fail "a file without frontend: $rc $err"

DROVER_BIN=$bin "$src/scripts/start-broker.sh" stop --run-dir "$run" >/dev/null
[[ ! -e $run/broker.json ]] || fail "start-broker.sh stop left broker.json"
status "$run"
[[ $rc == 2 ]] || fail "status with no endpoints file exited $rc, not 2"
[[ $err == *"no --broker given and no endpoints file found (looked for $run/broker.json)"* ]] || fail "unclear: $err"
echo "without a broker: $err"

# A file left by a broker that is gone: the answer names where the endpoint came from.
echo "{\"frontend\":\"$frontend\"}" >"$run/broker.json"
status "$run"
[[ $rc == 1 && $err == *"no answer from $frontend (read from $run/broker.json)"* ]] || fail "stale file: $rc $err"
echo "PASS"
