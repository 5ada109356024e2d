"""Benchmark: `visiontool eval --pred` against pycocotools, end to end, on synthetic data.

Both sides run as whole processes (interpreter start-up, imports, file reading, scoring), the way
a CI job runs them, on the same files: a COCO annotations json and a COCO results json (and our
`predictions.jsonl` with the same boxes). The 12 COCO numbers must be identical.

    .venv/bin/python benchmarks/eval_speed.py                 # 5,000 images x 100 x 80 classes
    .venv/bin/python benchmarks/eval_speed.py --images 500    # quick look
    .venv/bin/python benchmarks/eval_speed.py --images 2500 --detections 28500 --classes 20
        # a VOC-sized run: 2,500 images, 28.5k detections in all (11 or 12 an image), 20 classes

With --repeat N each side runs N times; the table shows the fastest run and the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from visiontool.engine.benchmark.eval import synthetic_coco

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
    folder: Path,
    *,
    images: int,
    preds: int,
    classes: int,
    seed: int = 0,
    detections: int | None = None,
) -> dict[str, Path]:
    """Write gt.json, results.json and predictions.jsonl with COCO-like statistics: `preds`
    predictions an image, or `detections` in all spread evenly over the images (the data of
    `visiontool benchmark --task eval`: `engine.benchmark.eval.synthetic_coco`)."""
    data = synthetic_coco(images=images, preds=preds, classes=classes, seed=seed,
                          detections=detections)  # fmt: skip
    per_image: dict[int, list[dict]] = {image["id"]: [] for image in data.gt["images"]}
    for row in data.results:
        x, y, w, h = row["bbox"]
        cat = row["category_id"]
        per_image[row["image_id"]].append(
            {"box": [x, y, round(x + w, 2), round(y + h, 2)], "score": row["score"],
             "class_id": cat - 1, "label": f"class{cat - 1}"}
        )  # fmt: skip
    jsonl_lines = [
        json.dumps(
            {
                "image": f"images/{image['file_name']}",
                "width": image["width"],
                "height": image["height"],
                "detections": per_image[image["id"]],
                "time_ms": 0.0,
                "error": None,
            }
        )  # fmt: skip
        for image in data.gt["images"]
    ]
    paths = {
        "gt": folder / "gt.json",
        "results": folder / "results.json",
        "jsonl": folder / "predictions.jsonl",
    }
    paths["gt"].write_text(json.dumps(data.gt))
    paths["results"].write_text(json.dumps(data.results))
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
    cmd = [sys.executable, "-m", "visiontool", "eval", "--pred", str(pred), "--data",
           str(paths["gt"]), "--out", str(out), "--exist-ok", "--json", "--quiet"]  # fmt: skip
    elapsed, stdout = timed(cmd)
    metrics = json.loads(stdout)
    return elapsed, [metrics[k] for k in COCO_KEYS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--preds", type=int, default=100, help="predictions an image")
    parser.add_argument(
        "--detections", type=int, default=None, help="predictions in all (replaces --preds)"
    )
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="write the data here and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = make_data(folder, images=args.images, preds=args.preds, classes=args.classes,
                          detections=args.detections)  # fmt: skip
        per_image = f"{args.preds} predictions" if args.detections is None else \
            f"{args.detections / args.images:g} predictions ({args.detections} in all)"  # fmt: skip
        print(f"data: {args.images} images x {per_image} x {args.classes} classes "
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
        for stat, pick in (("fastest", min), ("median", statistics.median)):
            if stat == "median" and len(rows) < 3:
                continue
            t_ref, t_res, t_jsonl = (pick(col) for col in zip(*rows, strict=True))
            print(f"{stat} of {len(rows)} run(s):")
            print(f"pycocotools                      {t_ref:7.2f} s")
            print(f"visiontool eval (results.json)   {t_res:7.2f} s  "
                  f"({t_ref / t_res:.1f}x faster)")  # fmt: skip
            print(f"visiontool eval (jsonl)          {t_jsonl:7.2f} s  "
                  f"({t_ref / t_jsonl:.1f}x faster)")  # fmt: skip
        print("map=" + f"{ref[0]:.4f} map50={ref[1]:.4f}")


if __name__ == "__main__":
    main()
