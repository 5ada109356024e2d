#!/usr/bin/env bash
# Issue #14's GPU part: `frcnn-vgg16` on VGG-16 itself (the CPU recipe trains the same RPN and
# RoI settings on ResNet-18, README "The original Faster R-CNN"). One call of the device tool,
# after benchmarks/gpu_check.sh, with what is left of the session's GPU time (carry [".whl"]):
#     bash benchmarks/gpu_vgg16.sh
# On a CPU, to try the script itself (a few tiny steps):
#     DEVICE=cpu QUICK=1 PYTHON=.venv/bin/python bash benchmarks/gpu_vgg16.sh
#
# VGG-16 has no BatchNorm and no ImageNet weights reach that machine (no network), so it trains
# from scratch: AdamW at a small learning rate with a warm-up, bf16 AMP, fc6/fc7 at the paper's
# 4096. Anchors and input follow the CPU recipe (16-128 px at 320 px: shapes are 10-128 px).
# The training stops at LIMIT seconds (SIGTERM: last.pt is kept) and best.pt is then scored on
# held-out shapes from a seed the recipe never used.
LOG_NAME=gpu_vgg16
source "$(dirname "$0")/gpu_env.sh"
LIMIT=${LIMIT:-300}  # seconds of training; then SIGTERM (last.pt and best.pt kept)
WORK=${WORK:-/tmp/gpu_vgg16}  # the data sets; only their own files there are replaced
mkdir -p "$WORK"

if [ "$QUICK" = 1 ]; then N=40; HELD_N=20; EPOCHS=1; BATCH=2; WORKERS=0; IMGSZ=128; FC=256
else N=3000; HELD_N=1500; EPOCHS=30; BATCH=16; WORKERS=8; IMGSZ=320; FC=4096; fi

"${VT[@]}" data synth --out "$WORK/shapes3k" --n "$N" --imgsz 256 --seed 31 --exist-ok -q
"${VT[@]}" data synth --out "$WORK/heldout" --n "$HELD_N" --imgsz 256 --seed 232 --exist-ok -q
start=$(date +%s)
timeout -s TERM "$LIMIT" "${VT[@]}" train --data "$WORK/shapes3k" --model frcnn-vgg16 \
    --anchor-sizes 16,32,64,128 --arch fc=$FC --imgsz $IMGSZ --epochs $EPOCHS --batch $BATCH \
    --optimizer adamw --lr 0.0001 --warmup 1 --amp --workers $WORKERS --device "$DEVICE" \
    --seed 0 --out "$LOG/train" --exist-ok --log-every 50 >"$LOG/train.log" 2>&1
echo "train: rc=$? in $(($(date +%s) - start)) s"
"$PY" -c "import csv, sys
for row in csv.DictReader(open(sys.argv[1])):
    print('epoch', row['epoch'], 'loss', row['loss'], 'val mAP50', row.get('val/map50'), row['time_s'], 's')
" "$LOG/train/results.csv"
weights="$LOG/train/weights/best.pt"
[ -f "$weights" ] || weights="$LOG/train/weights/last.pt"
"${VT[@]}" eval --weights "$weights" --data "$WORK/heldout" --split val --device "$DEVICE" \
    --out "$LOG/heldout" --exist-ok --no-plots 2>&1 | grep -E "^ (map|map50|map_small|map_large) "
