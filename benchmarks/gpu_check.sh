#!/usr/bin/env bash
# Every GPU check of issue #16 in one call, one summary at the end (< 6 minutes on one H200).
#
# On the GPU machine (the `device` tool: one `run`, carry [".whl"]):
#     bash benchmarks/gpu_check.sh
# The machine has torch, torchvision, typer, rich, opencv, matplotlib, pytest and pytest-xdist
# but no package index: faster-coco-eval and pycocotools travel as wheels, fetched here once:
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#         --platform manylinux2014_x86_64 -d .whl faster-coco-eval pycocotools
# On a CPU, to try the script itself (small sizes, no torchrun over GPUs):
#     DEVICE=cpu QUICK=1 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
#
# Logs go to $OUT (the device tool brings that folder back) or runs/gpu_check; each step has a
# time limit, so one failing step cannot eat the machine's time; the summary says which failed.
LOG_NAME=gpu_check
source "$(dirname "$0")/gpu_env.sh"
SUMMARY=()

# step NAME SECONDS COMMAND...: run it under a time limit, its output to $LOG/NAME.log; the
# summary keeps its exit status, time and last line that is not JSON
step() {
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" >"$LOG/$name.log" 2>&1
    rc=$?
    SUMMARY+=("$(printf '%-14s rc=%-3s %4ss  %s' "$name" "$rc" "$(($(date +%s) - start))" \
        "$(grep -v -e '^\s*$' -e '^{' "$LOG/$name.log" | tail -1 | cut -c1-140)")")
}

if [ "$QUICK" = 1 ]; then N_DETECT=4; BIG=frcnn-mobile-320; N_TRAIN=16; BATCH=4; WORKERS=1
    HELDOUT_N=100; SLOW=4
else N_DETECT=96; BIG=frcnn; N_TRAIN=320; BATCH=16; WORKERS=4; HELDOUT_N=1500; SLOW=1; fi
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)

step machine 60 bash -c "nvidia-smi -L 2>/dev/null; nproc; \"$PY\" -c 'import torch, torchvision, \
sys; print(sys.version.split()[0], torch.__version__, torchvision.__version__, \
torch.cuda.is_available() and torch.cuda.get_device_name(0))'"

# 1. the test suite on this machine (CUDA paths run where CUDA is; slow tests left out)
if [ "$QUICK" = 1 ]; then
    step tests 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_train.py \
        -k "gpu or amp or half or cuda"
else
    step tests 150 "$PY" -m pytest -q -p no:cacheprovider -n 8 -m "not slow"
fi

# 2. detect against the naive one-image loop, whole processes (1080p JPEGs, seeded weights)
step detect_frcnn 120 "$PY" benchmarks/detect_pipeline.py --n "$N_DETECT" --model "$BIG" \
    --batch 8 --repeat 1
step detect_mobile 60 "$PY" benchmarks/detect_pipeline.py --n "$N_DETECT" \
    --model frcnn-mobile-320 --batch 8 --repeat 1

# 3. --half accuracy: the shipped detector on held-out shapes, fp32 against --half
HELD=$LOG/heldout
"${VT[@]}" data synth --out "$HELD" --n "$HELDOUT_N" --imgsz 256 --seed 202 --exist-ok -q \
    >/dev/null 2>&1
for mode in fp32 half; do
    flag=(); [ "$mode" = half ] && flag=(--half)
    step "eval_$mode" 60 "${VT[@]}" eval --model shapes-tinyssd --data "$HELD" \
        --device "$DEVICE" "${flag[@]}" --out "$LOG/eval_$mode" --exist-ok --no-plots \
        --no-report --json --quiet
done

# 4. training speed with AMP against a plain PyTorch loop, same batch
step train_amp $((90 * SLOW)) "$PY" benchmarks/train_speed.py --device "$DEVICE" --amp --n "$N_TRAIN" \
    --batch "$BATCH" --workers "$WORKERS" --repeat 1

# 4b. the same with --compile (2 epochs: the last one's images/s, after compiling)
step train_compile $((150 * SLOW)) "$PY" benchmarks/train_speed.py --device "$DEVICE" --amp \
    --compile --epochs 2 --n "$N_TRAIN" --batch "$BATCH" --workers "$WORKERS" --repeat 1

# 4c. augmentation in the loader workers against on the GPU (`--augment-on device`)
for where in cpu device; do
    step "train_aug_$where" $((90 * SLOW)) "$PY" benchmarks/train_speed.py --device "$DEVICE" \
        --amp --augment frcnn --augment-on "$where" --n "$N_TRAIN" --batch "$BATCH" \
        --workers "$WORKERS" --repeat 1
done

# 5. DDP: torchrun over every GPU (NCCL), one short epoch
if [ "$GPUS" -ge 1 ]; then
    "${VT[@]}" data synth --out "$LOG/ddp_data" --n 64 --imgsz 128 --seed 5 --exist-ok -q \
        >/dev/null 2>&1
    step torchrun_train 90 "$PY" -m torch.distributed.run --nproc_per_node="$GPUS" \
        -m visiontool train --data "$LOG/ddp_data" --model tinyssd --epochs 1 --batch 8 \
        --amp --workers 2 --out "$LOG/ddp_run" --exist-ok --quiet
fi

# 6. detect split over every GPU by torchrun, against one process: the same predictions
if [ "$GPUS" -ge 1 ]; then
    step detect_one 60 "${VT[@]}" detect "$HELD/images/val" --model shapes-tinyssd \
        --device "$DEVICE" --save-coco --out "$LOG/detect_one" --exist-ok --quiet
    step torchrun_detect 90 "$PY" -m torch.distributed.run --nproc_per_node="$GPUS" \
        -m visiontool detect "$HELD/images/val" --model shapes-tinyssd --save-coco \
        --out "$LOG/detect_split" --quiet
    step detect_split_same 30 "$PY" -c "import json, sys
strip = lambda p: [{k: v for k, v in json.loads(l).items() if k != 'time_ms'} for l in open(p)]
a, b = strip(sys.argv[1] + '/predictions.jsonl'), strip(sys.argv[2] + '/predictions.jsonl')
same = sum(x == y for x, y in zip(a, b))
print(f'{same}/{len(a)} lines equal, {len(b)} merged'); sys.exit(0 if a == b else 1)" \
        "$LOG/detect_one" "$LOG/detect_split"
fi

echo
echo "gpu_check summary ($(date -u +%FT%TZ), device $DEVICE, $GPUS GPU(s)); logs in $LOG"
printf '%s\n' "${SUMMARY[@]}" | tee "$LOG/summary.txt"
for mode in fp32 half; do
    [ -f "$LOG/eval_$mode/metrics.json" ] && "$PY" -c "import json, sys; m = json.load(open(sys.argv[1])); \
print(f'$mode: mAP {m[\"map\"]:.4f} mAP50 {m[\"map50\"]:.4f}')" "$LOG/eval_$mode/metrics.json" \
        | tee -a "$LOG/summary.txt"
done
exit 0
