#!/usr/bin/env bash
# A run in TensorBoard, seen in a real browser: trains the demo with --log tensorboard, serves its events and takes
# a headless Chromium screenshot of the scalars (runs/tensorboard.png; the image is not committed).
#   bash benchmarks/tensorboard_screenshot.sh          (needs: make install, pip install 'unetseg[tensorboard]', chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=runs/tensorboard-demo
rm -rf "$OUT"
$BIN/unetseg demo-data --out "$OUT/data" --count 120 --size 128x96
$BIN/unetseg train --data "$OUT/data" --out "$OUT/run" --config configs/demo.json --log tensorboard --no-progress
PORT=${PORT:-6006}
$BIN/tensorboard --logdir "$OUT/run/tensorboard" --host 127.0.0.1 --port "$PORT" > "$OUT/tensorboard.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER' EXIT
until grep -q "http://127.0.0.1:$PORT" "$OUT/tensorboard.log"; do sleep 1; done
BROWSER=$(command -v chromium || command -v chromium-browser)
"$BROWSER" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1500,1000 --virtual-time-budget=15000 \
    --screenshot=runs/tensorboard.png "http://127.0.0.1:$PORT/?darkMode=false#scalars&tagFilter=loss%7Cdice&_smoothingWeight=0"
echo "wrote runs/tensorboard.png"
