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
# Logs go to $OUT (the device tool brings that folder back) or runs/gpu_check. Each step has a
# time limit, and the whole script a deadline (BUDGET seconds, default 340: the device allows
# 600 s a command and 15 minutes a session, start included); a step that would pass it is
# skipped, the most telling checks come first, and $LOG/summary.txt grows a line per step, so
# even a run cut short says what it measured.
LOG_NAME=gpu_check
source "$(dirname "$0")/gpu_env.sh"
BUDGET=${BUDGET:-340}
STARTED=$(date +%s)
: >"$LOG/summary.txt"

# step NAME SECONDS COMMAND...: run it under a time limit (cut to what the deadline leaves),
# its output to $LOG/NAME.log; the summary keeps its exit status, time and last line that is
# not JSON
step() {
    local name=$1 limit=$2 start rc left line
    shift 2
    start=$(date +%s)
    left=$((BUDGET - (start - STARTED)))
    if [ "$left" -lt 15 ]; then
        printf '%-14s skipped: the %ss budget is spent\n' "$name" "$BUDGET" >>"$LOG/summary.txt"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" >"$LOG/$name.log" 2>&1
    rc=$?
    line=$(printf '%-14s rc=%-3s %4ss  %s' "$name" "$rc" "$(($(date +%s) - start))" \
        "$(grep -v -e '^\s*$' -e '^{' "$LOG/$name.log" | tail -1 | cut -c1-140)")
    echo "$line" >>"$LOG/summary.txt"
}

if [ "$QUICK" = 1 ]; then N_DETECT=4; BIG=frcnn-mobile-320; N_TRAIN=16; BATCH=4; WORKERS=1
    HELDOUT_N=100; SLOW=4
else N_DETECT=96; BIG=frcnn; N_TRAIN=320; BATCH=16; WORKERS=4; HELDOUT_N=1500; SLOW=1; fi
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null)
[[ "$GPUS" =~ ^[0-9]+$ ]] || GPUS=0

step machine 60 bash -c "nvidia-smi -L 2>/dev/null; nproc; \"$PY\" -c 'import torch, torchvision, \
sys; print(sys.version.split()[0], torch.__version__, torchvision.__version__, \
torch.cuda.is_available() and torch.cuda.get_device_name(0))'"

# 1. --half accuracy: the shipped detector on held-out shapes, fp32 against --half
HELD=$LOG/heldout
timeout 60 "${VT[@]}" data synth --out "$HELD" --n "$HELDOUT_N" --imgsz 256 --seed 202 \
    --exist-ok -q >/dev/null 2>&1
for mode in fp32 half; do
    flag=(); [ "$mode" = half ] && flag=(--half)
    step "eval_$mode" 60 "${VT[@]}" eval --model shapes-tinyssd --data "$HELD" \
        --device "$DEVICE" "${flag[@]}" --out "$LOG/eval_$mode" --exist-ok --no-plots \
        --no-report --json --quiet
    [ -f "$LOG/eval_$mode/metrics.json" ] && "$PY" -c "import json, sys
m = json.load(open(sys.argv[1])); print(f'$mode: mAP {m[\"map\"]:.4f} mAP50 {m[\"map50\"]:.4f}')" \
        "$LOG/eval_$mode/metrics.json" >>"$LOG/summary.txt"
done

# 2. detect against the naive one-image loop, whole processes (1080p JPEGs, seeded weights),
#    both on $DEVICE
step detect_frcnn 120 "$PY" benchmarks/detect_pipeline.py --n "$N_DETECT" --model "$BIG" \
    --batch 8 --repeat 1 --device "$DEVICE"
step detect_mobile 60 "$PY" benchmarks/detect_pipeline.py --n "$N_DETECT" \
    --model frcnn-mobile-320 --batch 8 --repeat 1 --device "$DEVICE"

# 3. training speed with AMP against a plain PyTorch loop, same batch
step train_amp $((90 * SLOW)) "$PY" benchmarks/train_speed.py --device "$DEVICE" --amp \
    --n "$N_TRAIN" --batch "$BATCH" --workers "$WORKERS" --repeat 1

# 4. the test suite on this machine (CUDA paths run where CUDA is, tests/test_gpu.py among
#    them; slow tests left out; conftest gives each xdist worker one thread)
if [ "$QUICK" = 1 ]; then
    step tests 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_train.py \
        -k "gpu or amp or half or cuda"
else
    step tests 150 "$PY" -m pytest -q -p no:cacheprovider -n 8 -m "not slow"
fi

# 5. augmentation in the loader workers against on the GPU (`--augment-on device`)
for where in cpu device; do
    step "train_aug_$where" $((90 * SLOW)) "$PY" benchmarks/train_speed.py --device "$DEVICE" \
        --amp --augment frcnn --augment-on "$where" --n "$N_TRAIN" --batch "$BATCH" \
        --workers "$WORKERS" --repeat 1
done

# 6. the same with --compile (2 epochs: the last one's images/s, after compiling)
step train_compile $((150 * SLOW)) "$PY" benchmarks/train_speed.py --device "$DEVICE" --amp \
    --compile --epochs 2 --n "$N_TRAIN" --batch "$BATCH" --workers "$WORKERS" --repeat 1

# 7. torchrun over every GPU, one process a GPU (NCCL from 2 GPUs up: with one, torchrun runs a
#    single process and no process group): train one short epoch, then detect split over the
#    processes against one process: the same predictions
if [ "$GPUS" -ge 1 ]; then
    timeout 30 "${VT[@]}" data synth --out "$LOG/ddp_data" --n 64 --imgsz 128 --seed 5 \
        --exist-ok -q >/dev/null 2>&1
    step torchrun_train 90 "$PY" -m torch.distributed.run --nproc_per_node="$GPUS" \
        -m visiontool train --data "$LOG/ddp_data" --model tinyssd --epochs 1 --batch 8 \
        --amp --workers 2 --out "$LOG/ddp_run" --exist-ok --quiet
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
echo "gpu_check summary ($(date -u +%FT%TZ), device $DEVICE, $GPUS GPU(s), $(($(date +%s) - \
STARTED)) s of a $BUDGET s budget); logs in $LOG"
cat "$LOG/summary.txt"
exit 0
