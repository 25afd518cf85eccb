#!/usr/bin/env bash
# The release check: build the sdist and the wheel, install the wheel into a fresh virtual
# environment in a temporary folder outside the source tree, and run what a new user runs
# first there: `selfsup --version`, `selfsup list configs`, `selfsup demo` and a multi-task
# run from the packaged preset. Usage: tools/check_wheel.sh [PYTHON] (default python3).
# Needs about 5 GB of disk for the environment (torch); the folder is removed at the end.
set -euo pipefail
python=${1:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
torch_pin=$(sed -n 's/^TORCH_PIN := //p' "$root/Makefile")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m build --outdir "$work/dist" "$root" >/dev/null
ls -l "$work/dist"
"$python" -m venv "$work/env"
"$work/env/bin/python" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
"$work/env/bin/python" -m pip install --quiet $torch_pin
"$work/env/bin/python" -m pip install --quiet "$work"/dist/selfsup-*.whl

cd "$work"
bin="$work/env/bin"
"$bin/selfsup" --version
"$bin/selfsup" list configs
"$bin/python" - <<'PY'
import numpy as np
from selfsup.demo import sample_path
from selfsup.data import open_source

source = open_source(sample_path("train"))
np.savez("train.npz", images=np.stack([source.load(i) for i in range(256)]))
PY
"$bin/selfsup" train multitask --config multitask_small --tasks relative-position,colorization,exemplar \
    --data train.npz --out runs/mt --steps 20
time "$bin/selfsup" demo
echo "wheel check passed: $(ls "$work"/dist)"
