"""A wheel install (`pip install .`, not -e) carries the shipped models as package data.

The wheel is built offline from a copy of the working tree, installed with --no-deps into a
throw-away venv that borrows the dependencies of the running interpreter through a .pth file,
and driven from a folder outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "runs", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache"}


def _copy_source(target: Path) -> None:
    """The files a clone would have (tracked plus untracked-not-ignored), so stale build/ or
    egg-info folders in the checkout cannot leak into the wheel."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=False)  # fmt: skip
    if listed.returncode != 0:  # not a git checkout: copy all but the usual build outputs
        shutil.copytree(REPO, target, ignore=lambda _, names: [n for n in names if n in SKIP])
        return
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = REPO / name
        if source.is_file() and not SKIP.intersection(Path(name).parts):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_installed_wheel_lists_loads_and_runs_the_shipped_detector(tmp_path):
    source, dist, venv, work = (tmp_path / p for p in ("src", "dist", "venv", "work"))
    _copy_source(source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist,
          source])  # fmt: skip
    (wheel,) = dist.glob("visiontool-*.whl")

    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())  # fmt: skip
    # The dependencies come from the running environment; its editable visiontool does not
    # (paths added by a .pth come after the venv's own site-packages, and their .pth files,
    # the editable finder's among them, are not run).
    borrowed = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_borrowed_deps.pth").write_text("\n".join(borrowed) + "\n")
    _run([*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheel])

    work.mkdir()
    image = shutil.copy(REPO / "examples" / "shapes_256_0.jpg", work / "shapes.jpg")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VISIONTOOL_", "PYTHON"))}
    env.update(VISIONTOOL_OFFLINE="1", TORCH_HOME=str(tmp_path / "torch-home"))
    run = dict(cwd=work, env=env)

    where = _run([python, "-c", "import visiontool.models.shipped as s; print(s.weights_dir())"],
                 **run).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(site / "visiontool"), where
    assert (Path(where) / "manifest.json").is_file() and (Path(where) / "shapes-frcnn.pt").is_file()

    rows = json.loads(_run([python, "-m", "visiontool", "models", "--json"], **run).stdout)
    shipped = {row["name"]: row for row in rows}
    assert {"shapes-frcnn", "digits-lenet"} <= shipped.keys()
    assert shipped["shapes-frcnn"]["task"] == "detect"

    out = work / "out"
    _run([python, "-m", "visiontool", "detect", image, "--model", "shapes-frcnn", "--workers", "0",
          "--no-save-img", "--out", out, "--quiet"], **run)  # fmt: skip
    (row,) = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert row["error"] is None and len(row["detections"]) >= 1
    labels = {d["label"] for d in row["detections"]}
    assert labels <= set(shipped["shapes-frcnn"]["classes"]), labels
