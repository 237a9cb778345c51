#!/usr/bin/env bash
# Starts drover workers on other machines over ssh, or stops them.
#   scripts/start-remote-workers.sh HOSTS_FILE --broker tcp://ADDR:5556 [--pool P] [-c N]
#                                   [--via CMD] [--remote-bin PATH] [--run-dir DIR] [--security DIR]
#                                   [--log-dir DIR] [--command 'NAME=PROGRAM ARG…']... [--commands FILE]
#   scripts/start-remote-workers.sh stop [--via CMD] [--run-dir DIR]
# HOSTS_FILE: one host a line, "user@host [pool] [count]"; '#' starts a comment.
# --via CMD replaces ssh: the script runs `CMD HOST sh -c '...'` (e.g. --via "ip netns exec");
#   the workers then get --host-name HOST, as such hosts may share one machine name.
# --security DIR: the workers' fleet directory, a path on the remote hosts (docs/security.md).
# --log-dir DIR: where each remote worker writes drover-worker-HOST.log, on its host (default /tmp).
# --command (repeatable) is passed to every worker as given (quoted for the remote shell).
# --commands FILE: a local commands file, copied through the same channel (ssh or --via) to
#   LOG_DIR/drover-commands-HOST.json on each host, which its worker is given.
# Where each worker runs is written to RUN_DIR/remote-workers.txt (host pid via), which `stop`
#   reads: it reaches each host the way its start did, unless given a --via of its own.
# A worker that is not running a second after its start (a bad flag, no broker address it can
# parse) fails the script, with the end of its log.
set -euo pipefail
run_dir="${DROVER_RUN_DIR:-/tmp/drover-run}"
via="ssh"
remote_bin="drover-worker"
broker=""; pool="processes"; count=""; security=""; log_dir="/tmp"; via_given=0
commands=(); commands_file=""
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }  # one word for a POSIX shell
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
remote() {  # remote HOST COMMAND [VIA]
  local how="${3:-$via}"
  if [[ $how == ssh* ]]; then $how "$1" "$2"; else $how "$1" sh -c "$2"; fi
}
cmd=start
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && { usage; exit 0; }
if [[ "${1:-}" == stop ]]; then cmd=stop; shift; else
  [[ $# -ge 1 ]] || { usage >&2; exit 2; }
  hosts_file="$1"; shift
fi
while (($#)); do
  case "$1" in
    --broker) broker="$2"; shift 2 ;;
    --pool) pool="$2"; shift 2 ;;
    -c) count="$2"; shift 2 ;;
    --via) via="$2"; via_given=1; shift 2 ;;
    --remote-bin) remote_bin="$2"; shift 2 ;;
    --run-dir) run_dir="$2"; shift 2 ;;
    --security) security="$2"; shift 2 ;;
    --log-dir) log_dir="$2"; shift 2 ;;
    --command) commands+=("$2"); shift 2 ;;
    --commands) commands_file="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "start-remote-workers.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
mkdir -p "$run_dir"
ledger="$run_dir/remote-workers.txt"
if [[ $cmd == stop ]]; then
  [[ -f $ledger ]] || { echo "nothing to stop ($ledger missing)"; exit 0; }
  # Hosts that could not be reached stay in the ledger, for another try.
  left=()
  while read -r host pid how; do
    if ((via_given)) || [[ -z $how ]]; then how="$via"; fi  # the start's --via, unless this stop has one
    if remote "$host" "kill $pid 2>/dev/null || true" "$how" </dev/null; then
      echo "stopped $host pid $pid"
    else
      echo "start-remote-workers.sh: $host: could not reach it to stop pid $pid (via: $how)" >&2
      left+=("$host $pid $how")
    fi
  done <"$ledger"
  if ((${#left[@]})); then printf '%s\n' "${left[@]}" >"$ledger"; exit 1; fi
  rm -f "$ledger"; exit 0
fi
[[ -f $hosts_file ]] || { echo "start-remote-workers.sh: no hosts file '$hosts_file'" >&2; exit 2; }
[[ -n $broker ]] || { echo "start-remote-workers.sh: --broker tcp://ADDR:PORT is required" >&2; exit 2; }
[[ -z $commands_file || -r $commands_file ]] || { echo "start-remote-workers.sh: cannot read --commands '$commands_file'" >&2; exit 2; }
started=()
while read -r host hpool hcount _; do
  [[ -z $host || $host == \#* ]] && continue
  p="${hpool:-$pool}"; c="${hcount:-$count}"
  flags="--broker $broker --pool $p"; [[ -n $c ]] && flags="$flags -c $c"
  [[ -n $security ]] && flags="$flags --security $security"
  [[ $via == ssh* ]] || flags="$flags --host-name ${host#*@}"
  for c in "${commands[@]}"; do flags="$flags --command $(quote "$c")"; done
  if [[ -n $commands_file ]]; then
    copy="$log_dir/drover-commands-${host#*@}.json"
    remote "$host" "cat >$(quote "$copy")" <"$commands_file" ||
      { echo "start-remote-workers.sh: $host: could not copy $commands_file to $copy" >&2; exit 1; }
    flags="$flags --commands $(quote "$copy")"
  fi
  # One log per host: with --via the "hosts" may share one /tmp.
  pid=$(remote "$host" "nohup $remote_bin $flags >$log_dir/drover-worker-${host#*@}.log 2>&1 </dev/null & echo \$!" </dev/null)
  [[ $pid =~ ^[0-9]+$ ]] || { echo "start-remote-workers.sh: $host: could not start ($pid)" >&2; exit 1; }
  echo "$host $pid $via" >>"$ledger"
  started+=("$host $pid")
  echo "started on $host: pid $pid ($flags)"
done <"$hosts_file"
# A worker that dies at once (a bad flag) has still printed its pid above.
((${#started[@]})) || exit 0
sleep 1
dead=()
for hp in "${started[@]}"; do
  read -r host pid <<<"$hp"
  # (a zombie counts as exited: its new parent may not have reaped it yet)
  state=$(remote "$host" "if ps -o stat= -p $pid 2>/dev/null | grep -qv '^Z'; then echo running; else echo exited; fi" \
            </dev/null 2>/dev/null || true)
  case "$state" in
    running) ;;
    exited)
      echo "start-remote-workers.sh: $host: the worker (pid $pid) exited at once; the end of its log:" >&2
      remote "$host" "tail -n 5 $log_dir/drover-worker-${host#*@}.log" </dev/null >&2 || true
      dead+=("$host $pid") ;;
    *) echo "start-remote-workers.sh: $host: could not check that pid $pid runs (via: $via)" >&2 ;;
  esac
done
((${#dead[@]})) || exit 0
# The dead leave the ledger (their pids may be reused by the time of a stop).
for hp in "${dead[@]}"; do grep -vxF "$hp $via" "$ledger" >"$ledger.new" || true; mv "$ledger.new" "$ledger"; done
exit 1
