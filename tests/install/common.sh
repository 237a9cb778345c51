# Helpers for the install and package tests (sourced): a broker on
# ephemeral ports, processes killed on exit, the example's expected output.

started=()   # pids this test started, killed by stop_all
stop_all() {
  local pid
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
  started=()
}

fail() { echo "FAIL: $*" >&2; exit 1; }

# start_broker BIN_DIR DIR: runs BIN_DIR/drover-broker on tcp://127.0.0.1:*,
# sets $front and $back from its endpoints file. Logs to DIR/broker.log.
start_broker() {
  local bin="$1" dir="$2"
  rm -f "$dir/broker.json"
  "$bin/drover-broker" --frontend 'tcp://127.0.0.1:*' --backend 'tcp://127.0.0.1:*' \
    --endpoints-file "$dir/broker.json" >"$dir/broker.log" 2>&1 &
  started+=($!)
  local i
  for i in $(seq 100); do
    [[ -s "$dir/broker.json" ]] && break
    kill -0 "${started[-1]}" 2>/dev/null || { cat "$dir/broker.log" >&2; fail "drover-broker exited"; }
    sleep 0.1
  done
  [[ -s "$dir/broker.json" ]] || fail "drover-broker wrote no endpoints file in 10 s"
  front=$(sed 's/.*"frontend":"\([^"]*\)".*/\1/' "$dir/broker.json")
  back=$(sed 's/.*"backend":"\([^"]*\)".*/\1/' "$dir/broker.json")
  [[ "$front" == tcp://* && "$back" == tcp://* ]] || fail "endpoints file: $(cat "$dir/broker.json")"
}

# check_version EXE: EXE --version prints "NAME VERSION (protocol N)".
check_version() {
  local exe="$1" out
  out=$("$exe" --version) || fail "$exe --version exited $?"
  [[ "$out" =~ ^$(basename "$exe")\ [0-9]+\.[0-9]+\.[0-9]+\ \(protocol\ [0-9]+\)$ ]] || fail "$exe --version: '$out'"
  echo "$out"
}
