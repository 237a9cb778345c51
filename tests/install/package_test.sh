#!/usr/bin/env bash
# package_test.sh SOURCE_DIR BUILD_DIR: builds the Debian packages with cpack
# from the built BUILD_DIR, checks their metadata and file lists, runs
# lintian (fails on any E: line), unpacks them into a temporary root and runs
# the programs from there: --version, then a broker, a worker and a producer.
# Exits 77 (skipped) without dpkg-deb or lintian.
set -euo pipefail
src="$(cd "$1" && pwd)"; build="$(cd "$2" && pwd)"
source "$src/tests/install/common.sh"
for tool in dpkg-deb dpkg-shlibdeps lintian; do
  command -v "$tool" >/dev/null || { echo "skipped: $tool is not installed (scripts/setup.sh installs it)"; exit 77; }
done
work="$build/package-test"
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT
rm -rf "$work"; mkdir -p "$work"

version=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$build/CPackConfig.cmake")
arch=$(dpkg --print-architecture)
echo "== cpack -G DEB (drover $version, $arch)"
(cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work" >"$work/cpack.log" 2>&1) ||
  { cat "$work/cpack.log" >&2; fail "cpack"; }
deb="$work/drover_${version}_${arch}.deb"
dev="$work/drover-dev_${version}_${arch}.deb"
py="$work/python3-drover_${version}_all.deb"
[[ -f "$deb" && -f "$dev" && -f "$py" ]] ||
  fail "expected $(basename "$deb"), $(basename "$dev") and $(basename "$py"), got: $(ls "$work"/*.deb)"

echo "== dpkg-deb -I $(basename "$deb")"
dpkg-deb -I "$deb"
field() { dpkg-deb -f "$1" "$2"; }
[[ "$(field "$deb" Package)" == drover ]] || fail "Package: $(field "$deb" Package)"
[[ "$(field "$deb" Version)" == "$version" ]] || fail "Version: $(field "$deb" Version)"
[[ "$(field "$deb" Architecture)" == "$arch" ]] || fail "Architecture: $(field "$deb" Architecture)"
for lib in libzmq5 libspdlog1 libfmt libsodium libc6; do
  field "$deb" Depends | grep -q "$lib" || fail "Depends lacks $lib: $(field "$deb" Depends)"
done
[[ "$(field "$dev" Package)" == drover-dev ]] || fail "dev Package: $(field "$dev" Package)"
[[ "$(field "$py" Architecture)" == all ]] || fail "python3-drover Architecture: $(field "$py" Architecture)"
for dep in python3-zmq python3-msgpack libsodium23; do
  field "$py" Depends | grep -q "$dep" || fail "python3-drover Depends lacks $dep: $(field "$py" Depends)"
done

echo "== dpkg-deb -c"
dpkg-deb -c "$deb" | awk '{print $6}' >"$work/runtime.files"
dpkg-deb -c "$dev" | awk '{print $6}' >"$work/dev.files"
dpkg-deb -c "$py" | awk '{print $6}' >"$work/python.files"
for f in __init__.py _wire.py client.py worker.py; do
  grep -qx "./usr/lib/python3/dist-packages/drover/$f" "$work/python.files" || fail "python3-drover lacks drover/$f"
done
! grep -q '__pycache__\|\.pyc$' "$work/python.files" || fail "python3-drover holds byte code"
for p in drover-broker drover-worker drover-producer drover-sink drover-keygen; do
  grep -qx "./usr/bin/$p" "$work/runtime.files" || fail "drover lacks /usr/bin/$p"
done
for f in usr/include/drover/client/client.hpp usr/include/drover/common/version.hpp usr/lib/libdrover_common.a \
         usr/lib/cmake/drover/droverConfig.cmake usr/lib/pkgconfig/drover.pc usr/share/doc/drover-dev/copyright; do
  grep -qx "./$f" "$work/dev.files" || fail "drover-dev lacks /$f"
done
! grep -q 'internal\|/include/' "$work/runtime.files" || fail "drover holds development files"
! grep -q 'internal' "$work/dev.files" || fail "drover-dev holds private headers"
cat "$work/runtime.files"

echo "== lintian"
lintian --tag-display-limit 0 "$deb" "$dev" "$py" >"$work/lintian.log" 2>&1 || true
cat "$work/lintian.log"
! grep -q '^E:' "$work/lintian.log" || fail "lintian reports errors"

echo "== dpkg-deb -x into $work/root, run from there"
dpkg-deb -x "$deb" "$work/root"
bin="$work/root/usr/bin"
check_version "$bin/drover-broker"
check_version "$bin/drover-worker"
start_broker "$bin" "$work"
"$bin/drover-worker" --broker "$back" --pool solo >"$work/worker.log" 2>&1 &
started+=($!)
out=$(timeout 60 "$bin/drover-producer" --broker "$front" --wait-workers 1 map hello deb root 2>"$work/producer.log") ||
  { cat "$work/producer.log" "$work/worker.log" >&2; fail "drover-producer exited $?"; }
echo "$out"
[[ "$(echo "$out" | grep -c 'Hello, ')" == 2 ]] || fail "unexpected results"
dpkg-deb -x "$py" "$work/root"
(cd "$work" && PYTHONPATH="$work/root/usr/lib/python3/dist-packages" /usr/bin/python3 -c \
  'import drover, sys; assert drover.__file__.startswith(sys.argv[1]), drover.__file__; print("python3-drover:", drover.__file__)' \
  "$work/root") || fail "the unpacked python3-drover does not import"
echo "PASS"
