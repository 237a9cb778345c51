#!/usr/bin/env bash
# `pip install ./python` offline (no index at all) into a fresh venv that sees
# Debian's python3-zmq and python3-msgpack, then the installed package is
# imported from outside the source tree, its codec works, and its command runs.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
python="${DROVER_PYTHON:-/usr/bin/python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m venv --system-site-packages "$work/venv"
PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$work/venv/bin/pip" install -q "$src"
cd "$work"
"$work/venv/bin/python" - <<'PY'
import drover, drover._wire as w
assert "site-packages" in drover.__file__, drover.__file__
t = w.Task(id="a", name="echo", args=w.pack([1]))
assert w.decode_tasks(w.encode_tasks([t])) == [t]
print("imported", drover.__file__)
PY
"$work/venv/bin/drover-py" --help | grep -q "python -m drover"
echo "pip install ./python: ok"
