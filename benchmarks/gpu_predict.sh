#!/usr/bin/env bash
# The prediction pipeline on a GPU (issue 26), one prepared run of under 4 minutes on an H200:
# the host-bound pipeline (a model that costs nothing) and predict with the base-32 U-Net at 480x320 on 960 photos
# (the Carvana sample's 96, ten times), against the model alone. Run from the repository root on the GPU machine.
set -euo pipefail
PY=${PY:-python}
DATA=${DATA:-../shared/data/carvana_sample/train}
nvidia-smi --query-gpu=name --format=csv,noheader || true
$PY benchmarks/predict_speed.py --host-bound --device cuda --data "$DATA" --size 480x320 --images 96 --repeat 10 \
    --rounds 1
$PY benchmarks/predict_speed.py --device cuda --data "$DATA" --base 32 --size 480x320 --images 96 --repeat 10 \
    --rounds 2
