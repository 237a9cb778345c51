#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test tier (unit, integration, e2e, ...), then the
# unit, integration and e2e tiers under ASan+UBSan and the unit and integration tiers under TSan.
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  cat <<'EOF'
usage: scripts/test.sh [ctest args...]   e.g. scripts/test.sh -L unit

Builds drover in build/ (Release) and runs ctest there with the given arguments (every tier
without any). Then the sanitizer runs, each in a build of its own with only the tests it runs,
compiled in the background at the lowest priority while the Release tests run (its log:
build/sanitizer-builds.log):
  address  build-asan/: ASan, LSan and UBSan (undefined behaviour is fatal); tiers unit, integration, e2e
  thread   build-tsan/: TSan (suppressions: tests/tsan.supp); tiers unit and integration
A sanitizer report from any process, the programs started by e2e tests included, fails the run;
reports are kept in build-asan/sanitizer-logs/ and build-tsan/sanitizer-logs/. The few tests
that cannot hold under a sanitizer (they measure glibc's allocator, or need tasks of under a
microsecond) are named, with the reason, in this script. A test that fails gets a second try there.

Environment:
  DROVER_SANITIZERS   the sanitizer runs after the Release run: "address thread" (default),
                      "address" or "thread" alone, or 0 for none (a quick local run)
EOF
  exit 0
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
sanitizers="${DROVER_SANITIZERS-address thread}"
[[ "$sanitizers" == 0 ]] && sanitizers=""
for s in $sanitizers; do
  [[ "$s" == address || "$s" == thread ]] || { echo "test: DROVER_SANITIZERS: unknown '$s'" >&2; exit 2; }
done

# Builds DIR with DROVER_SANITIZE=SANITIZER and the given targets only. -Og: under ASan+UBSan it
# compiles much faster than -O1, and the tests run about as fast (measured in the commit that chose
# it). -g1: line tables name the file and line in a report, and compile in two thirds of -g's time.
sanitized_build() {
  local dir=$1 sanitizer=$2
  shift 2
  rm -f "$dir/build-done"
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-Og -g1" \
        -DDROVER_SANITIZE="$sanitizer" -DDROVER_BUILD_TESTS=ON -DDROVER_BUILD_BENCH=OFF -DDROVER_FUZZ=OFF >&2
  cmake --build "$dir" -j"$(nproc)" --target "$@" >&2
  rm -rf "$dir/sanitizer-logs"
  mkdir -p "$dir/sanitizer-logs"
  touch "$dir/build-done"
}

# Waits until the background builds have built DIR; fails the run if they fail first.
wait_for_build() {
  local dir=$1
  echo "test: waiting for the build in $dir" >&2
  until [[ -e "$dir/build-done" ]]; do
    if ! kill -0 "$builds_pid" 2>/dev/null; then
      wait "$builds_pid" && [[ -e "$dir/build-done" ]] && break
      builds_pid=""
      echo "test: the sanitizer builds failed; the end of $builds_log:" >&2
      tail -n 60 "$builds_log" >&2
      exit 1
    fi
    sleep 1
  done
}

# Runs ctest in DIR with the given arguments. Sanitizer reports go to DIR/sanitizer-logs (one file
# per process), so that one from a program an e2e test started is not lost with the test's
# temporary directory, and check_logs fails the run on any, even from a test that passed. A test
# that fails gets a second try: timings under a sanitizer are several times those the tests were
# written for, and the machine may be shared.
sanitized_ctest() {
  local dir=$1
  shift
  (cd "$dir" && ctest --output-on-failure --timeout 300 --repeat until-pass:2 "$@")
}

check_logs() {
  local logs=$1/sanitizer-logs
  [[ -z "$(ls -A "$logs")" ]] && return 0
  echo "test: sanitizer reports in $logs:" >&2
  for f in "$logs"/*; do
    echo "==== $f" >&2
    head -n 80 "$f" >&2
  done
  return 1
}

# A worker's I/O thread runs a lone task itself only while tasks take under 1 us (k_inline_below,
# worker/src/credits.hpp); under either sanitizer even echo takes longer on an executor, so the
# two tests of it cannot hold in these runs.
inline_tests='runs lone quick tasks itself|runs a lone quick task itself'
# The sanitizer builds, one after the other, into build-asan/ and build-tsan/.
sanitizer_builds() {
  for s in $sanitizers; do
    if [[ "$s" == address ]]; then
      sanitized_build "$root/build-asan" address drover_unit_tests drover_integration_tests drover_e2e_tests \
        drover-broker drover-worker drover-producer drover-sink drover-keygen
    else
      sanitized_build "$root/build-tsan" thread drover_unit_tests drover_integration_tests
    fi
  done
}

"$root/scripts/build.sh" "$root/build" Release

# The sanitizer builds run while the Release tests do, and the TSan build while the ASan tests do,
# at the lowest CPU and I/O priority: those tests mostly wait on timers and peers (the Release ones
# use a fifth of two cores), and a compile at nice 19 takes only the CPU they leave.
# They run in a process group of their own, which a failure or a signal here ends.
builds_pid=""
builds_log="$root/build/sanitizer-builds.log"
if [[ -n "$sanitizers" ]]; then
  echo "test: building the sanitizer builds ($sanitizers) in the background; log: $builds_log" >&2
  rm -f "$root/build-asan/build-done" "$root/build-tsan/build-done"
  trap 'if [[ -n "$builds_pid" ]]; then kill -- "-$builds_pid" 2>/dev/null || true; fi' EXIT
  trap 'exit 130' INT TERM
  set -m
  (
    renice -n 19 -p "$BASHPID" >/dev/null
    ionice -c 3 -p "$BASHPID" 2>/dev/null || true
    sanitizer_builds
  ) >"$builds_log" 2>&1 &
  builds_pid=$!
  set +m
fi
(cd "$root/build" && ctest --output-on-failure --timeout 300 "$@")

failed=0
for s in $sanitizers; do
  if [[ "$s" == address ]]; then
    dir="$root/build-asan"
    wait_for_build "$dir"
    asan="detect_leaks=1:log_path=$dir/sanitizer-logs/asan"
    export UBSAN_OPTIONS="print_stacktrace=1:log_path=$dir/sanitizer-logs/ubsan"
    # The broker's RSS tests measure glibc's malloc (tune_allocator, trim_heap), which ASan
    # replaces: "gives its memory back" cannot hold under ASan's allocator and does not run here;
    # "memory flat" holds once freed memory is reused at once, without ASan's quarantine.
    rss_tests='gives its memory back|leaves broker memory flat'
    ASAN_OPTIONS="$asan" sanitized_ctest "$dir" -L 'unit|integration|e2e' -E "$rss_tests|$inline_tests" || failed=1
    ASAN_OPTIONS="$asan:quarantine_size_mb=0" sanitized_ctest "$dir" -R 'leaves broker memory flat' || failed=1
    unset UBSAN_OPTIONS
  else
    dir="$root/build-tsan"
    wait_for_build "$dir"
    TSAN_OPTIONS="suppressions=$root/tests/tsan.supp:second_deadlock_stack=1:log_path=$dir/sanitizer-logs/tsan" \
      sanitized_ctest "$dir" -L 'unit|integration' -E "$inline_tests" || failed=1
  fi
  check_logs "$dir" || failed=1
done
exit "$failed"
