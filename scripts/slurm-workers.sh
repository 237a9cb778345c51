#!/usr/bin/env bash
# Runs drover workers on the nodes of a Slurm job: one drover-worker a node,
# a processes pool of one child a CPU the job has there, connected to a
# broker. Submit it with sbatch:
#   sbatch -N 4 --ntasks-per-node=32 scripts/slurm-workers.sh tcp://BROKER_HOST:5556 [drover-worker flags]
#   DROVER_BROKER=tcp://BROKER_HOST:5556 sbatch -N 4 --ntasks-per-node=32 scripts/slurm-workers.sh
# Environment: DROVER_BROKER (the broker's backend, when not given first),
# DROVER_WORKER (the worker program: drover-worker on PATH by default, or
# one of yours with your own tasks, on a path every node sees).
# `scancel` and the time limit send SIGTERM to every worker: it stops taking
# tasks, finishes those it holds and leaves; what it cannot finish within
# the cluster's KillWait (then SIGKILL) the broker runs again elsewhere.
# --signal below sends that SIGTERM 120 s before a time limit.
#SBATCH --job-name=drover-workers
#SBATCH --signal=TERM@120
set -uo pipefail
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac
broker="${DROVER_BROKER:-}"
if [[ "${1:-}" == tcp://* || "${1:-}" == ipc://* ]]; then broker="$1"; shift; fi
[[ -n $broker ]] || { echo "slurm-workers.sh: no broker: give tcp://HOST:PORT (its backend) or set DROVER_BROKER" >&2; exit 2; }
[[ -n "${SLURM_JOB_ID:-}" ]] || { echo "slurm-workers.sh: not in a Slurm job: submit it with sbatch" >&2; exit 2; }
worker="${DROVER_WORKER:-drover-worker}"
# A processes pool of one child a CPU of the node (SLURM_CPUS_ON_NODE,
# expanded on each node), unless the flags choose a pool or its size.
# shellcheck disable=SC2016
run='exec "$@" --pool processes -c "$SLURM_CPUS_ON_NODE"'
for a in "$@"; do [[ $a == --pool* || $a == -c* || $a == --concurrency* ]] && run='exec "$@"'; done
# One task a node, given every CPU the job has there (--whole).
srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 --whole \
  bash -c "$run" _ "$worker" --broker "$broker" "$@" &
srun_pid=$!
# Slurm signals the workers itself (scancel and the time limit signal every
# process of the job): this shell only waits for them to drain, since a
# second SIGTERM passed on through srun would stop them at once.
trap 'echo "slurm-workers.sh: SIGTERM: waiting for the workers to finish their tasks" >&2' TERM
while true; do
  wait "$srun_pid"
  rc=$?
  kill -0 "$srun_pid" 2>/dev/null || break
done
echo "slurm-workers.sh: workers ended (srun exit $rc)" >&2
exit "$rc"
