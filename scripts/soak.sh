#!/usr/bin/env bash
# Chaos soak over the real programs with a ledger: scripts/soak.sh [SECONDS] [options]
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  cat <<'USAGE'
usage: scripts/soak.sh [SECONDS (default 300)] [--build-dir DIR] [--seed N] [--drain S]
                       [--restart-every S] [--chaos X] [--dir DIR] [--keep] [--log-level L] [-v]
       scripts/soak.sh --check DIR        (the ledger of an earlier run only)

Runs the real drover programs on 127.0.0.1 for SECONDS under chaos, then
checks that every task got exactly one honest final outcome.

  programs  one broker, one drover-sink (--secret-file, --endpoint-file), a solo
            worker, a threads worker (-c 3), a processes worker (-c 3), a live
            `drover-producer submit` fed a few tasks every ~0.1 s, and a detached
            `drover-producer submit --reply-to SINK` of 20-80 tasks every ~1.5 s
            (each holding back while 400 of its tasks have not ended: the soak
            tests correctness under chaos, not overload);
            all with --heartbeat-ms 500 --liveness 3
  tasks     echo(nonce) (fast), sleep_ms(20..300) (slow), sleep_ms with a
            timeout it meets, fail(msg) (some with retry_on_error), and
            sleep_ms(1000) with timeout_ms 200 (always times out)
  chaos     every 0.2-1.2 s (x --chaos) one of: kill -9 of a pool child; kill -9
            of a worker (solo, threads or the pool's supervisor; started again
            0.2-2 s later); SIGSTOP of any process (broker, sink, producers,
            workers, pool children) for 0.2-4.5 s, then SIGCONT; a restart of
            the broker on the same ports (kill -9 or SIGTERM; at most one every
            --restart-every s, 25). A broker holds detached tasks in memory only
            (docs/reliability.md): after a restart the soak resubmits, as a user
            must, the detached tasks accepted without an outcome yet ('resubmitted')
  drain     then no chaos and no new tasks: everything resumed, killed workers
            started again, and up to --drain s (120) for the last outcomes
  ledger    each submitted id must have exactly one final outcome (the live
            producer's stdout, or the sink's for detached ones), and it must be
            honest: echo returns its nonce, sleep_ms its ms, fail its message
            as an error, the always-timing-out task never ok, no ok past its
            timeout_ms, no timeout without one, no cancelled task (nobody
            cancels: a paused live producer's tasks go again under their ids),
            no outcome for an id never submitted there. 'lost' is an honest
            outcome. A process that exits by itself counts as 'crashed'.

Prints the table (submitted ok error timeout lost cancelled rejected missing
duplicate unexpected crashed kills pauses restarts resubmitted) and exits 1 on
any missing, duplicate, unexpected or crashed, keeping the run directory (its
logs, chaos.log and the JSON-lines files) for a look. Needs python3 and a
build (default build/, made with scripts/build.sh if absent). ctest runs 60 s
of it (label soak). --seed repeats a run's choices (not its timing), --keep
keeps the run directory of a clean run too, --log-level debug has the broker
and workers log a line a task, -v prints each chaos event.
USAGE
  exit 0
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build"
args=()
while (($#)); do
  case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --build-dir=*) build="${1#*=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [[ ! -x "$build/bin/drover-broker" ]]; then
  "$root/scripts/build.sh" "$build" Release
fi
command -v python3 >/dev/null || "$root/scripts/setup.sh"
exec python3 "$root/scripts/soak.py" --build-dir "$build" "${args[@]}"
