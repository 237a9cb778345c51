#!/usr/bin/env bash
# scripts/slurm-workers.sh under a real Slurm: one controller and one node on
# this machine (munge, slurmctld, slurmd in a temporary directory), a broker
# on ephemeral ports; `sbatch -N1 -n2 scripts/slurm-workers.sh` starts a
# worker whose two children register and run tasks; `scancel` while two tasks
# run lets them finish, and then leaves no worker registered or running.
#   tests/ops/slurm_test.sh SOURCE_DIR BIN_DIR
# Exit 77 (ctest SKIP_RETURN_CODE) when not root or Slurm is not installed.
set -euo pipefail
src=$(cd "$1" && pwd) bin=$(cd "$2" && pwd)
skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root: slurmd runs jobs as their users, and this Slurm is started by the test"
for t in munged slurmctld slurmd sbatch scancel squeue sinfo python3; do
  command -v "$t" >/dev/null || skip "$t not installed (scripts/setup.sh installs slurm-wlm and munge)"
done
tmp=$(mktemp -d /tmp/drover-slurm.XXXXXX)
chmod 755 "$tmp"
marker="slurmtest-$$"  # the workers' --host-name: finds their processes and status entries
pids=()
fail() { echo "FAIL: $*" >&2; for f in "$tmp"/*.log "$tmp"/job.out; do [[ -f $f ]] && { echo "== $f" >&2; tail -n 30 "$f" >&2; }; done; exit 1; }
cleanup() {
  set +e
  [[ -n "${job:-}" ]] && scancel "$job" 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  pkill -9 -f -- "--host-name $marker" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
# Waits up to $1 seconds for the command after it to succeed.
wait_for() { local n=$(($1 * 10)); shift; for ((i = 0; i < n; i++)); do "$@" && return 0; sleep 0.1; done; return 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# munge: its own key and socket in $tmp.
mkdir -m 700 "$tmp/munge-key" && mkdir -m 755 "$tmp/munge"
dd if=/dev/urandom of="$tmp/munge-key/munge.key" bs=1024 count=1 status=none && chmod 400 "$tmp/munge-key/munge.key"
munged -f -F --socket="$tmp/munge/socket" --key-file="$tmp/munge-key/munge.key" --pid-file="$tmp/munge/pid" \
  --seed-file="$tmp/munge/seed" --log-file="$tmp/munged.log" >>"$tmp/munged.log" 2>&1 &
pids+=($!)
wait_for 5 test -S "$tmp/munge/socket" || fail "munged did not start"

# One controller and one node (this host), no cgroups.
host=$(hostname -s)
mkdir -p "$tmp/state" "$tmp/spool"
cat >"$tmp/slurm.conf" <<EOF
ClusterName=drovertest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/socket
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=10
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$tmp/slurm.conf
slurmctld -D -i -f "$SLURM_CONF" >>"$tmp/slurmctld.log" 2>&1 &
pids+=($!)
slurmd -D -N "$host" -f "$SLURM_CONF" >>"$tmp/slurmd.log" 2>&1 &
pids+=($!)
node_idle() { [[ "$(sinfo -h -n "$host" -o %T 2>/dev/null)" == idle ]]; }
wait_for 20 node_idle || fail "the Slurm node did not come up idle: $(sinfo 2>&1)"
echo "Slurm up (${SECONDS} s)"

# The broker, on ephemeral ports.
"$bin/drover-broker" --frontend 'tcp://127.0.0.1:*' --backend 'tcp://127.0.0.1:*' --endpoints-file "$tmp/broker.json" \
  >"$tmp/broker.log" 2>&1 &
pids+=($!)
wait_for 10 test -s "$tmp/broker.json" || fail "the broker did not start"
endpoint() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/broker.json" "$1"; }
frontend=$(endpoint frontend) backend=$(endpoint backend)
# Prints the number of registered workers of this test's job, or with $1, the broker's field $1.
status() {
  "$bin/drover-broker" status --broker "$frontend" --timeout-ms 2000 |
    python3 -c 'import json,sys; d=json.load(sys.stdin); f=sys.argv[1]
print(d[f] if f else sum(w["host"]==sys.argv[2] for w in d["workers"]))' "${1:-}" "$marker"
}

# The job: 2 tasks on 1 node; the worker's pool is sized from them.
job=$(DROVER_WORKER="$bin/drover-worker" sbatch --parsable -N1 -n2 -o "$tmp/job.out" \
  "$src/scripts/slurm-workers.sh" "$backend" --host-name "$marker")
echo "submitted job $job (${SECONDS} s)"
two_workers() { [[ "$(status)" == 2 ]]; }
wait_for 20 two_workers || fail "2 workers did not register (got $(status))"
echo "registered (${SECONDS} s)"
echo "2 workers registered: $(status workers | tr -d '\n' | cut -c1-300)"

out=$("$bin/drover-producer" --broker "$frontend" map hello ada bob cy)
echo "map: $out"
[[ $out == $'"Hello, ada!"\n"Hello, bob!"\n"Hello, cy!"' ]] || fail "map hello: $out"

# Two tasks of 2 s running when the job is cancelled: the workers finish them, then leave.
printf '{"task":"sleep_ms","args":[4000]}\n{"task":"sleep_ms","args":[4000]}\n' |
  "$bin/drover-producer" --broker "$frontend" submit >"$tmp/slow.out" 2>"$tmp/producer.log" &
producer=$!
pids+=("$producer")
two_in_flight() { [[ "$(status in_flight)" == 2 ]]; }
wait_for 10 two_in_flight || fail "the 2 slow tasks did not start"
scancel "$job"
echo "scancel $job (${SECONDS} s)"
producer_done() { ! kill -0 "$producer" 2>/dev/null; }
wait_for 20 producer_done || fail "the tasks running at scancel got no result: $(status queued) queued"
wait "$producer" || fail "the producer failed: $(cat "$tmp/producer.log")"
echo "results: $(tr '\n' ' ' <"$tmp/slow.out")"
[[ $(grep -c '"ok"' "$tmp/slow.out") == 2 ]] || fail "the tasks running at scancel did not finish ok: $(cat "$tmp/slow.out")"
no_workers() { [[ "$(status)" == 0 ]]; }
wait_for 10 no_workers || fail "workers still registered after scancel: $(status)"
job_gone() { [[ -z "$(squeue -h -j "$job" 2>/dev/null)" ]]; }
wait_for 15 job_gone || fail "job $job still in the queue: $(squeue)"
no_procs() { ! pgrep -f -- "--host-name $marker" >/dev/null; }
wait_for 5 no_procs || fail "drover-worker processes left: $(pgrep -af -- "--host-name $marker")"
[[ $(grep -c "worker.stopping outstanding=[1-9]" "$tmp/job.out") == 2 ]] || fail "the 2 tasks were not held when the workers stopped"
grep -q "stop_at_once" "$tmp/job.out" && fail "a worker stopped at once instead of finishing its tasks"
grep -q "supervisor.stopped" "$tmp/job.out" || fail "the worker did not stop cleanly"
echo "== job output"; cat "$tmp/job.out"
echo "PASS after ${SECONDS} s: workers registered, ran tasks, finished those running at scancel and left"
