#!/usr/bin/env bash
# install_test.sh SOURCE_DIR BUILD_DIR: installs the built BUILD_DIR into a
# prefix, builds examples/ against it with find_package(drover) only and
# with pkg-config only, and runs each build's worker and producer against
# the installed drover-broker. Work files in BUILD_DIR/install-test (a fixed
# path, so that ccache serves the example's compiles on a second run).
set -euo pipefail
src="$(cd "$1" && pwd)"; build="$(cd "$2" && pwd)"
source "$src/tests/install/common.sh"
work="$build/install-test"
prefix="$work/prefix"
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT
rm -rf "$work"; mkdir -p "$work"
launcher=(); command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

echo "== cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log"
for d in bin lib include lib/cmake/drover lib/pkgconfig; do [[ -d "$prefix/$d" ]] || fail "no $d/ in the prefix"; done
for p in drover-broker drover-worker drover-producer drover-sink drover-keygen; do
  [[ -x "$prefix/bin/$p" ]] || fail "no bin/$p"
  check_version "$prefix/bin/$p"
done
for f in droverConfig.cmake droverConfigVersion.cmake droverTargets.cmake; do
  [[ -f "$prefix/lib/cmake/drover/$f" ]] || fail "no lib/cmake/drover/$f"
done
# Only the public headers: include/drover/<component>/*.hpp, nothing from src/ or internal/.
leaked=$(cd "$prefix" && find . -path '*internal*' -o -path '*/src/*' -o -path './include/*' -type f ! -name '*.hpp')
[[ -z "$leaked" ]] || fail "installed but private: $leaked"
dirs=$(cd "$prefix/include/drover" && ls | paste -sd' ')
[[ "$dirs" == "broker client cluster common programs worker" ]] || fail "include/drover/ holds: $dirs"
[[ -f "$prefix/include/drover/common/version.hpp" ]] || fail "no include/drover/common/version.hpp"
echo "installed: $(cd "$prefix" && find . -type f | wc -l) files; include/drover/{$dirs}"

echo "== examples/ with find_package(drover) (CMAKE_PREFIX_PATH=$prefix)"
cmake -S "$src/examples" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" "${launcher[@]}" >"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log" >&2; fail "configuring examples/"; }
found=$(sed -n 's/^drover_DIR:PATH=//p' "$work/cmake-build/CMakeCache.txt")
[[ "$found" == "$prefix/lib/cmake/drover" ]] || fail "find_package(drover) found '$found'"
cmake --build "$work/cmake-build" -j2 >"$work/cmake-build.log" 2>&1 || { cat "$work/cmake-build.log" >&2; fail "building examples/"; }

echo "== examples/ with pkg-config (PKG_CONFIG_PATH=$prefix/lib/pkgconfig)"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
pc_prefix=$(pkg-config --variable=prefix drover)
[[ "$(cd "$pc_prefix" && pwd)" == "$prefix" ]] || fail "drover.pc's prefix is $pc_prefix"
echo "pkg-config --cflags --libs drover: $(pkg-config --cflags --libs drover)"
cxx=(); command -v ccache >/dev/null && cxx=(CXX="ccache c++")
mkdir -p "$work/pc-build"
(cd "$work/pc-build" && make -f "$src/examples/Makefile" "${cxx[@]}" CXXFLAGS=-O1 >"$work/pc-build.log" 2>&1) ||
  { cat "$work/pc-build.log" >&2; fail "building examples/ with pkg-config"; }

echo "== drover as a subdirectory of another project: tests, bench and fuzz default OFF"
mkdir -p "$work/outer"
printf 'cmake_minimum_required(VERSION 3.20)\nproject(outer LANGUAGES CXX)\nadd_subdirectory("%s" drover)\n' "$src" \
  >"$work/outer/CMakeLists.txt"
cmake -S "$work/outer" -B "$work/outer/build" >"$work/outer.log" 2>&1 || { cat "$work/outer.log" >&2; fail "configuring outer"; }
for option in DROVER_BUILD_TESTS DROVER_BUILD_BENCH DROVER_FUZZ; do
  grep -qx "$option:BOOL=OFF" "$work/outer/build/CMakeCache.txt" || fail "$option is not OFF in a subdirectory"
done
[[ ! -d "$work/outer/build/drover/tests" ]] || fail "tests configured in a subdirectory"

expected="rectangle area=12 perimeter=14 square=no
rectangle area=6.25 perimeter=10 square=yes
collatz 1 0
collatz 6 8
collatz 27 111
collatz 97 118"
start_broker "$prefix/bin" "$work"
for kind in cmake-build pc-build; do
  echo "== $kind: shapes-worker and shapes-producer against $prefix/bin/drover-broker ($front)"
  "$work/$kind/shapes-worker" --broker "$back" --pool threads -c 2 >"$work/$kind-worker.log" 2>&1 &
  started+=($!)
  out=$(timeout 60 "$work/$kind/shapes-producer" "$front" 2>"$work/$kind-producer.log") ||
    { cat "$work/$kind-producer.log" "$work/$kind-worker.log" >&2; fail "$kind: shapes-producer exited $?"; }
  echo "$out"
  [[ "$(echo "$out" | head -6)" == "$expected" ]] || fail "$kind: unexpected results"
  echo "$out" | tail -1 | grep -q '^rectangle -1x2 error: .*negative' || fail "$kind: the task's exception did not come back"
  kill "${started[-1]}"; wait "${started[-1]}" 2>/dev/null || true; unset 'started[-1]'
done
echo "PASS"
