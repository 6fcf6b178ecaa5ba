#!/usr/bin/env bash
# Check a built one-folder app (packaging/build_pyinstaller.sh) from outside the checkout, with
# no display: --help, a 2-step picture on the built-in model, a 2-step quickstart training, the
# window opened and closed (LORA_STUDIO_QUIT_AFTER_MS), and install-desktop's entry.
#
#   packaging/smoke_test.sh [APP_DIR]     (default: build/pyinstaller/dist/lora-studio)
#
# Everything it writes goes to a temp folder (removed at the end; KEEP=1 keeps it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
APP_DIR=$(cd "${1:-$ROOT/build/pyinstaller/dist/lora-studio}" && pwd)
APP=$APP_DIR/lora-studio
[ -x "$APP" ] || { echo "error: no app at $APP; build it with packaging/build_pyinstaller.sh" >&2; exit 2; }

WORK=$(mktemp -d)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
# Nothing from the checkout or a Python environment, nothing from the network, no display.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
export HOME=$WORK/home LORA_STUDIO_HOME=$WORK/data XDG_CONFIG_HOME=$WORK/config \
    XDG_DATA_HOME=$WORK/share QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PATH=/usr/bin:/bin

step() { printf '\n== %s\n' "$*"; }
timed() {
    local t0=$(date +%s%N)
    "$@"
    echo "   ($(( ($(date +%s%N) - t0) / 1000000 )) ms)" >&2
}

step "lora-studio --help"
timed "$APP" --help > help.txt
grep -q "install-desktop" help.txt && grep -q "generate" help.txt

step "generate: 2 steps on the built-in model"
timed "$APP" generate --prompt "a red circle" --steps 2 --seed 1 --out images
ls images/*.png

step "train: the quickstart, 2 steps"
PRESET=$APP_DIR/_internal/lora_studio/resources/presets/quickstart.toml
timed "$APP" train "$PRESET" --set train.steps=2 --set dataset.reg_path= --set sample.every=0
ls -l output/quickstart/zqstar.safetensors
"$APP" inspect output/quickstart/zqstar.safetensors | head -3

step "window: opened offscreen, closed after 3 s"
LORA_STUDIO_QUIT_AFTER_MS=3000 timed "$APP" 2> window.log || { cat window.log; exit 1; }
grep -q "window shown with tabs" window.log || { cat window.log; exit 1; }
grep -E "window shown with tabs|ms\)$" window.log

step "install-desktop, then --remove"
"$APP" install-desktop
ENTRY=$XDG_DATA_HOME/applications/lora-studio.desktop
grep -qx "Exec=$APP" "$ENTRY" || { echo "error: Exec is not $APP:"; grep Exec "$ENTRY"; exit 1; }
if command -v desktop-file-validate >/dev/null; then desktop-file-validate "$ENTRY"; fi
"$APP" install-desktop --remove
[ ! -e "$ENTRY" ]

step "all passed ($(du -sh "$APP_DIR" | cut -f1) in $APP_DIR)"
