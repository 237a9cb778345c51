#!/usr/bin/env bash
# The seed task, "sum of 1,000,000 random integers in 1..100", run 8 times in
# each of drover's forms, with the results and a table of wall time and speed-up;
# then the same in Python (examples/python/seed.py).
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  echo "usage: scripts/demo.sh [TASKS (default 8)] [N (default 1000000)]"
  echo "Installs what is missing, builds (Release), runs the seed task in every form, stops what it started."
  exit 0
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
tasks="${1:-8}"; n="${2:-1000000}"
"$root/scripts/build.sh" "$root/build" Release
bin="$root/build/bin"
run_dir="$(mktemp -d /tmp/drover-demo-XXXXXX)"
export DROVER_RUN_DIR="$run_dir" DROVER_BIN="$bin"
cleanup() {
  "$root/scripts/start-workers.sh" stop >/dev/null 2>&1 || true
  "$root/scripts/start-broker.sh" stop >/dev/null 2>&1 || true
  rm -rf "$run_dir"
}
trap cleanup EXIT
args=(); for _ in $(seq "$tasks"); do args+=("$n"); done
producer="$bin/drover-producer"

declare -a names times
run_form() {  # run_form NAME producer-args...
  local name="$1"; shift
  local out err
  out="$("$producer" --timing "$@" map sum_random "${args[@]}" 2>"$run_dir/err")" || { cat "$run_dir/err" >&2; exit 1; }
  err="$(grep '^timing:' "$run_dir/err" | sed 's/.*wall_ms=//')"
  echo "$name"
  echo "  Results: [$(echo "$out" | paste -sd, | sed 's/,/, /g')]"
  names+=("$name"); times+=("$err")
}

echo "== sum of $n random integers in 1..100, $tasks times, on $(nproc) cores =="
run_form "single thread (inline, no broker)"            --inline
run_form "threads: --local 2 --pool threads"           --local 2 --pool threads
run_form "processes: --local 2 --pool processes"       --local 2 --pool processes
"$root/scripts/start-broker.sh" --frontend tcp://127.0.0.1:* --backend tcp://127.0.0.1:* >/dev/null
front=$(sed 's/.*"frontend":"\([^"]*\)".*/\1/' "$run_dir/broker.json")
back=$(sed 's/.*"backend":"\([^"]*\)".*/\1/' "$run_dir/broker.json")
"$root/scripts/start-workers.sh" 2 --broker "$back" --pool solo >/dev/null
run_form "remote form: broker + 2 worker processes over tcp" --broker "$front" --wait-workers 2

echo
printf "%-52s %12s %9s\n" "form" "wall ms" "speed-up"
for i in "${!names[@]}"; do
  awk -v n="${names[$i]}" -v t="${times[$i]}" -v b="${times[0]}" 'BEGIN { printf "%-52s %12.1f %8.2fx\n", n, t, b / t }'
done

# The seed in Python (the package in python/): a loop, threads (the
# GIL), multiprocessing.Pool and drover's Python workers, on Debian's python3.
echo
echo "== the same in Python: examples/python/seed.py =="
/usr/bin/python3 "$root/examples/python/seed.py" --tasks "$tasks" --n "$n"
