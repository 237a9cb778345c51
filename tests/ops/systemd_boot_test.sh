#!/usr/bin/env bash
# The systemd units under a real systemd: this machine's root, overlaid
# with a tmpfs (nothing it writes reaches the host), boots in
# systemd-nspawn with a private network; the units, the sysusers file, the
# example /etc/default/drover and the programs are installed where the
# package puts them, and drover-broker.service and drover-worker@main.service
# start at boot. Inside, a check finds the broker through status (from
# /run/drover/broker.json), serves tasks, stops the pool while two tasks
# run (they must finish), stops the broker, and powers off.
#   tests/ops/systemd_boot_test.sh SOURCE_DIR BIN_DIR
# Exit 77 (ctest SKIP_RETURN_CODE) when not root or systemd-nspawn is missing.
set -euo pipefail
src=$(cd "$1" && pwd) bin=$(cd "$2" && pwd)
skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root: it mounts an overlay and boots a container"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn not installed (Debian package systemd-container)"
[[ -x /lib/systemd/systemd ]] || skip "no /lib/systemd/systemd to boot"
tmp=$(mktemp -d /tmp/drover-boot.XXXXXX)
root=$tmp/root
cleanup() {
  set +e
  umount "$root" 2>/dev/null
  umount "$tmp/t" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/t" "$root"
mount -t tmpfs -o size=1g tmpfs "$tmp/t"
mkdir "$tmp/t/up" "$tmp/t/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$tmp/t/up,workdir=$tmp/t/work" "$root" ||
  skip "cannot mount an overlay of / (no overlayfs?)"

# As the package installs them.
cp "$bin"/drover-broker "$bin"/drover-worker "$bin"/drover-producer "$root/usr/bin/"
cp "$src"/packaging/systemd/*.service "$root/lib/systemd/system/"
cp "$src/packaging/systemd/drover.sysusers" "$root/usr/lib/sysusers.d/drover.conf"
cp "$src/packaging/config/drover.default" "$root/etc/default/drover"
rm -rf "$root/var/lib/drover" "$root/run/drover"
sys=$root/etc/systemd/system
# Only what the test boots: with a private network nothing comes online.
ln -sf /dev/null "$sys/systemd-networkd-wait-online.service"
cat >"$sys/drover-test.target" <<'EOF'
[Unit]
Description=drover units test
Wants=drover-broker.service drover-worker@main.service drover-check.service
AllowIsolate=yes
EOF
cat >"$sys/drover-check.service" <<'EOF'
[Unit]
After=drover-broker.service drover-worker@main.service
[Service]
ExecStart=/bin/sh /root/check.sh
EOF
cat >"$root/root/check.sh" <<'EOF'
exec >/root/check.out 2>&1
trap 'systemctl poweroff' EXIT
for i in $(seq 100); do
  [ "$(drover-broker status 2>/dev/null | grep -c '"pool": "processes"')" -ge 2 ] && break
  sleep 0.1
done
echo "workers: $(drover-broker status | grep -c '"pool": "processes"')"
echo "user: $(ps -o user= -p "$(systemctl show -p MainPID --value drover-broker)") $(ps -o user= -p "$(systemctl show -p MainPID --value drover-worker@main)")"
echo "journal: $(ls /var/lib/drover/journal | grep -c drj)"
echo "map: $(timeout 20 drover-producer --broker tcp://127.0.0.1:5555 map hello boot)"
printf '{"task":"sleep_ms","args":[1500]}\n{"task":"sleep_ms","args":[1500]}\n' |
  timeout 20 drover-producer --broker tcp://127.0.0.1:5555 submit >/root/slow.out &
for i in $(seq 50); do drover-broker status | grep -q '"in_flight": 2' && break; sleep 0.1; done
systemctl stop drover-worker@main
echo "worker stop: $(systemctl show -p Result --value drover-worker@main) $(systemctl show -p ExecMainStatus --value drover-worker@main)"
wait
echo "slow ok: $(grep -c '"status":"ok"' /root/slow.out)"
systemctl stop drover-broker
echo "broker stop: $(systemctl show -p Result --value drover-broker) $(systemctl show -p ExecMainStatus --value drover-broker)"
journalctl --no-pager -o cat -u drover-broker -u drover-worker@main | grep -E "ABRT|signal|stop_at_once|exited" | cut -c1-160
echo "check done"
EOF

echo "booting $root"
timeout 60 systemd-nspawn --quiet --keep-unit --register=no --link-journal=no --private-network -D "$root" \
  -b --console=pipe -- systemd.unit=drover-test.target >"$tmp/boot.log" 2>&1 || true
out=$tmp/t/up/root/check.out
[[ -f $out ]] || { cat "$tmp/boot.log"; echo "FAIL: the check did not run in the container"; exit 1; }
cat "$out"
fail() { echo "FAIL: $*"; exit 1; }
grep -qx "check done" "$out" || fail "the check did not finish"
grep -qx "workers: 2" "$out" || fail "the pool's 2 workers did not register with the broker"
grep -qx "user: drover drover" "$out" || fail "the services do not run as drover"
grep -qx "journal: 1" "$out" || fail "no journal in /var/lib/drover/journal"
grep -qx 'map: "Hello, boot!"' "$out" || fail "no task served"
grep -qx "worker stop: success 0" "$out" || fail "the worker pool did not stop cleanly"
grep -qx "slow ok: 2" "$out" || fail "the tasks running at the pool's stop did not finish"
grep -qx "broker stop: success 0" "$out" || fail "the broker did not stop cleanly"
grep -q "ABRT\|stop_at_once" "$out" && fail "a service aborted or a worker stopped at once"
echo "PASS: booted with systemd: the units ran as drover, served tasks and stopped cleanly"
