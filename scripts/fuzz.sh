#!/usr/bin/env bash
# Builds the DRV4 decoders' libFuzzer target with clang++ and runs a long session.
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  cat <<'EOF'
usage: scripts/fuzz.sh [SECONDS (default 600)] [libFuzzer args...]
  Builds build-fuzz/fuzz/decode_fuzz (clang++, -fsanitize=fuzzer,address,undefined) and
  feeds every DRV4 decoder for SECONDS. The corpus grows in build-fuzz/fuzz-corpus across
  runs (seeded from fuzz/corpus); crashes, leaks and timeouts are written to
  build-fuzz/fuzz-crashes/. Replay one with: build-fuzz/fuzz/decode_fuzz FILE
  e.g. scripts/fuzz.sh 3600 -jobs=2 -workers=2
EOF
  exit 0
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/build-fuzz"
seconds=600
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then seconds="$1"; shift; fi
"$root/scripts/setup.sh"
cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DDROVER_BUILD_TESTS=OFF -DDROVER_FUZZ=ON >&2
cmake --build "$dir" --target drover_decode_fuzz >&2
fuzzer="$dir/fuzz/decode_fuzz"
[[ -x "$fuzzer" ]] || { echo "fuzz: $fuzzer was not built (no clang++?)" >&2; exit 1; }
corpus="$dir/fuzz-corpus"
crashes="$dir/fuzz-crashes"
mkdir -p "$corpus" "$crashes"
echo "fuzz: ${seconds}s, corpus $corpus, crashes go to $crashes/" >&2
status=0
cd "$dir"  # -jobs writes its fuzz-N.log files here
"$fuzzer" -max_total_time="$seconds" -timeout=5 -artifact_prefix="$crashes/" "$@" "$corpus" "$root/fuzz/corpus" ||
  status=$?
if ((status)); then
  echo "fuzz: FAILED (exit $status); inputs in $crashes/, replay with: $fuzzer $crashes/FILE" >&2
else
  echo "fuzz: no crash in ${seconds}s; corpus $corpus has $(ls "$corpus" | wc -l) inputs" >&2
fi
exit "$status"
