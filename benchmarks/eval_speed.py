"""Benchmark: `visiontool eval --pred` against pycocotools, end to end, on synthetic data.

Both sides run as whole processes (interpreter start-up, imports, file reading, scoring), the way
a CI job runs them, on the same files: a COCO annotations json and a COCO results json (and our
`predictions.jsonl` with the same boxes). The 12 COCO numbers must be identical.

    .venv/bin/python benchmarks/eval_speed.py                 # 5,000 images x 100 x 80 classes
    .venv/bin/python benchmarks/eval_speed.py --images 500    # quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PYCOCOTOOLS_SCRIPT = """
import json, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt = COCO(sys.argv[1])
dt = gt.loadRes(sys.argv[2])
ev = COCOeval(gt, dt, "bbox")
ev.evaluate(); ev.accumulate(); ev.summarize()
print("STATS " + json.dumps([float(s) for s in ev.stats]))
"""

COCO_KEYS = [
    "map", "map50", "map75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
]  # fmt: skip


def make_data(
    folder: Path, *, images: int, preds: int, classes: int, seed: int = 0
) -> dict[str, Path]:
    """Write gt.json, results.json and predictions.jsonl with COCO-like statistics."""
    rng = np.random.default_rng(seed)
    width, height = 640, 480
    gt: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": f"class{i}"} for i in range(classes)],
    }
    results: list[dict] = []
    jsonl_lines: list[str] = []
    ann_id = 1
    for image_id in range(1, images + 1):
        file_name = f"img{image_id:06d}.jpg"
        gt["images"].append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height}
        )
        n_gt = int(rng.integers(0, 15))
        xy = rng.uniform(0, [width - 20, height - 20], size=(n_gt, 2))
        wh = rng.uniform(4, 300, size=(n_gt, 2))
        wh = np.minimum(wh, [width, height] - xy)
        labels = rng.integers(1, classes + 1, size=n_gt)
        crowd = rng.random(n_gt) < 0.02
        for k in range(n_gt):
            box = [round(float(v), 2) for v in (*xy[k], *wh[k])]
            gt["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": int(labels[k]),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(crowd[k]),
                }
            )
            ann_id += 1
        # predictions: jittered copies of the ground truth plus background boxes
        n_hit = min(n_gt * 3, preds)
        src = rng.integers(0, max(n_gt, 1), size=n_hit)
        p_xy = np.concatenate(
            [
                xy[src] + rng.normal(0, 6, (n_hit, 2)) if n_gt else np.zeros((0, 2)),
                rng.uniform(0, [width - 20, height - 20], (preds - n_hit, 2)),
            ]
        )
        near = wh[src] * rng.uniform(0.8, 1.2, (n_hit, 2)) if n_gt else np.zeros((0, 2))
        p_wh = np.concatenate([near, rng.uniform(4, 200, (preds - n_hit, 2))])
        p_wh = np.maximum(p_wh, 1.0)
        wrong = rng.integers(1, classes + 1, n_hit)
        right = labels[src] if n_gt else wrong
        p_cls = np.concatenate(
            [
                np.where(rng.random(n_hit) < 0.8, right, wrong),
                rng.integers(1, classes + 1, preds - n_hit),
            ]
        )
        p_score = np.round(rng.random(preds), 3)  # rounded: plenty of tied scores
        dets = []
        for k in range(preds):
            x, y = round(float(p_xy[k, 0]), 2), round(float(p_xy[k, 1]), 2)
            w, h = round(float(p_wh[k, 0]), 2), round(float(p_wh[k, 1]), 2)
            score, cat = float(p_score[k]), int(p_cls[k])
            results.append(
                {"image_id": image_id, "category_id": cat, "bbox": [x, y, w, h], "score": score}
            )
            dets.append({"box": [x, y, round(x + w, 2), round(y + h, 2)], "score": score,
                         "class_id": cat - 1, "label": f"class{cat - 1}"})  # fmt: skip
        jsonl_lines.append(
            json.dumps(
                {
                    "image": f"images/{file_name}",
                    "width": width,
                    "height": height,
                    "detections": dets,
                    "time_ms": 0.0,
                    "error": None,
                }
            )  # fmt: skip
        )
    paths = {
        "gt": folder / "gt.json",
        "results": folder / "results.json",
        "jsonl": folder / "predictions.jsonl",
    }
    paths["gt"].write_text(json.dumps(gt))
    paths["results"].write_text(json.dumps(results))
    paths["jsonl"].write_text("\n".join(jsonl_lines) + "\n")
    return paths


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return elapsed, proc.stdout


def run_pycocotools(paths: dict[str, Path]) -> tuple[float, list[float]]:
    elapsed, out = timed(
        [sys.executable, "-c", PYCOCOTOOLS_SCRIPT, str(paths["gt"]), str(paths["results"])]
    )
    line = next(x for x in out.splitlines() if x.startswith("STATS "))
    return elapsed, json.loads(line[6:])


def run_visiontool(paths: dict[str, Path], pred: Path, out: Path) -> tuple[float, list[float]]:
    cmd = [sys.executable, "-m", "visiontool", "eval", "--pred", str(pred),
           "--data", str(paths["gt"]), "--out", str(out), "--json", "--quiet"]  # fmt: skip
    elapsed, stdout = timed(cmd)
    metrics = json.loads(stdout)
    return elapsed, [metrics[k] for k in COCO_KEYS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--preds", type=int, default=100)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="write the data here and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = make_data(folder, images=args.images, preds=args.preds, classes=args.classes)
        print(f"data: {args.images} images x {args.preds} predictions x {args.classes} classes "
              f"(written in {time.perf_counter() - t0:.1f}s)")  # fmt: skip
        rows = []
        for _ in range(args.repeat):
            t_ref, ref = run_pycocotools(paths)
            t_res, ours_res = run_visiontool(paths, paths["results"], folder / "out_results")
            t_jsonl, ours_jsonl = run_visiontool(paths, paths["jsonl"], folder / "out_jsonl")
            rows.append((t_ref, t_res, t_jsonl))
            for name, ours in (("results.json", ours_res), ("predictions.jsonl", ours_jsonl)):
                diff = max(abs(a - b) for a, b in zip(ref, ours, strict=True))
                status = "identical" if diff <= 1e-12 else f"DIFFERENT (max diff {diff:.3g})"
                print(f"  {name}: numbers {status}")
        t_ref, t_res, t_jsonl = (min(col) for col in zip(*rows, strict=True))
        print(f"pycocotools                      {t_ref:7.2f} s")
        print(f"visiontool eval (results.json)   {t_res:7.2f} s  ({t_ref / t_res:.1f}x faster)")
        print(f"visiontool eval (jsonl)          {t_jsonl:7.2f} s  ({t_ref / t_jsonl:.1f}x faster)")
        print("map=" + f"{ref[0]:.4f} map50={ref[1]:.4f}")


if __name__ == "__main__":
    main()
