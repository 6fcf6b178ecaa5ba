#!/usr/bin/env bash
# Build the one-folder app with PyInstaller: <out>/dist/lora-studio/lora-studio.
#
#   packaging/build_pyinstaller.sh [OUT]      (default OUT: build/pyinstaller in the checkout)
#
# Uses $PYTHON (default: python) with the app's dependencies and PyInstaller installed in the same
# environment (PyInstaller keeps package folders only for its own site-packages)
# (pip install -c constraints.txt -e . && pip install pyinstaller). The bundle is as big as the
# torch it is built with (CPU torch: 1.1 GB unpacked; CUDA torch: several GB), so OUT
# should be on a disk with room. Then: packaging/smoke_test.sh OUT/dist/lora-studio
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/build/pyinstaller}
PYTHON=${PYTHON:-python}

if ! "$PYTHON" -m PyInstaller --version >/dev/null 2>&1; then
    echo "error: PyInstaller is not installed for $PYTHON" >&2
    echo "Install it beside the app's dependencies: $PYTHON -m pip install pyinstaller" >&2
    exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
start=$(date +%s)
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$OUT/dist" --workpath "$OUT/work" \
    "$ROOT/packaging/pyinstaller/lora-studio.spec"
end=$(date +%s)
echo "Built $OUT/dist/lora-studio in $((end - start)) s ($(du -sh "$OUT/dist/lora-studio" | cut -f1))"
echo "Check it: packaging/smoke_test.sh $OUT/dist/lora-studio"
