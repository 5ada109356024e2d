"""`visiontool benchmark --task model|train-step|data|eval`: any registered model timed per
batch x imgsz x dtype, with numbers that agree with each other and with hand counts."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from visiontool.engine.benchmark.peaks import Peak, gpu_table_peak
from visiontool.engine.benchmark.report import BenchRow
from visiontool.engine.benchmark.timing import summarize
from visiontool.models.complexity import count_flops
from visiontool.models.lenet import LeNet5

QUICK = ("--iters", "3", "--warmup", "1")
ROW_KEYS = {"model", "device", "batch", "imgsz", "dtype", "latency_ms", "images_per_s", "params",
            "flops", "peak_mem_mb", "tflops_achieved", "peak_share", "cold_ms", "outliers",
            "threads", "task", "compile", "channels_last", "ratio"}  # fmt: skip
SYSTEM_KEYS = {"cpu", "gpu", "gpu_driver", "torch", "torchvision", "threads", "python", "platform"}


def run_json(cli, *args: str) -> dict:
    result = cli("benchmark", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def error_line(result) -> str:
    """Exit 2 and exactly one `error:` line, no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


# -- FLOPs against hand counts ----------------------------------------------------------------


def conv_flops(conv: nn.Conv2d, h_out: int, w_out: int) -> int:
    """2 x Cin x Cout x k x k x Hout x Wout (multiply-adds x 2; the bias is not counted)."""
    k_h, k_w = conv.kernel_size
    return 2 * conv.in_channels * conv.out_channels * k_h * k_w * h_out * w_out


@pytest.mark.parametrize("bias", [False, True])
def test_flops_of_one_convolution_are_the_hand_count(bias):
    conv = nn.Conv2d(3, 8, kernel_size=3, bias=bias)
    x = torch.randn(1, 3, 16, 16)
    assert count_flops(lambda: conv(x)) == conv_flops(conv, 14, 14)  # torch leaves the bias out


def lenet_hand_count(model: LeNet5) -> int:
    """Convolutions and linear layers from their shapes; pooling and tanh are not counted."""
    f, c = model.features, model.classifier
    convs = conv_flops(f.c1, 28, 28) + conv_flops(f.c3, 10, 10) + conv_flops(f.c5, 1, 1)
    linears = sum(2 * layer.in_features * layer.out_features for layer in (c.f6, c.output))
    return convs + linears


def test_lenet_flops_are_the_hand_count_in_count_flops_and_in_the_benchmark(cli):
    model = LeNet5()
    hand = lenet_hand_count(model)
    assert count_flops(lambda: model(torch.randn(1, 1, 32, 32))) == hand
    data = run_json(cli, "--model", "lenet", "--batch", "4", "--peak-tflops", "1", *QUICK)
    assert data["rows"][0]["flops"] == hand  # per image: the batch's count / 4


def test_a_train_step_counts_forward_and_backward(cli):
    rows = run_json(cli, "--model", "lenet", "--task", "train-step", "--batch", "2",
                    "--peak-tflops", "1", *QUICK)["rows"]  # fmt: skip
    (row,) = rows
    assert row["task"] == "train-step" and row["images_per_s"] > 0
    hand = lenet_hand_count(LeNet5())
    assert 2 * hand < row["flops"] < 3.5 * hand  # backward ~2x forward (no input gradient)


# -- the numbers agree with each other --------------------------------------------------------


def test_stats_of_known_times():
    stats = summarize([1, 2, 3, 4, 5, 6, 7, 8, 9, 100])
    assert stats.mean == pytest.approx(14.5)
    assert stats.p50 == pytest.approx(5.5)
    assert stats.p90 == pytest.approx(18.1)  # linear between the 9th (9) and 10th (100)
    assert stats.p99 == pytest.approx(91.81)
    assert stats.outliers == 1  # 100 > 2 x p50 (the IQR fence, 19, is higher here)
    tight = summarize([10, 10, 10, 10, 10.1, 10.1, 10.2, 10.2, 10.3, 14])
    assert tight.outliers == 1  # 14 > p50 + 3 x IQR = 10.7, though under 2 x p50
    assert summarize([5.0] * 7).outliers == 0  # equal times: nothing is an outlier


def test_derived_numbers_follow_from_the_measured_ones():
    row = BenchRow(task="model", model="m", device="cpu", batch=8, flops=10**9,
                   stats=summarize([4.0, 4.0, 4.0]), peak=Peak(10.0, "given", "fp32"))  # fmt: skip
    assert row.images_per_s == pytest.approx(2000.0)  # 8 images / 4 ms
    assert row.tflops_achieved == pytest.approx(2.0)  # 1 GFLOP x 2000 / s
    assert row.peak_share == pytest.approx(0.2)
    data = row.to_dict(ratio=1.0)
    assert data["latency_per_image_ms"]["mean"] == pytest.approx(0.5)


def test_a_real_run_is_consistent(cli):
    (row,) = run_json(cli, "--model", "lenet", "--batch", "2", "--peak-tflops", "2", *QUICK)["rows"]
    latency = row["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    assert row["images_per_s"] == pytest.approx(2 / (latency["mean"] / 1e3), rel=1e-3)
    assert row["tflops_achieved"] == pytest.approx(
        row["flops"] * row["images_per_s"] / 1e12, rel=1e-4
    )
    assert row["peak_tflops"] == 2 and row["peak_source"] == "given"
    assert row["peak_share"] == pytest.approx(row["tflops_achieved"] / 2, rel=1e-4)
    assert row["latency_per_image_ms"]["mean"] == pytest.approx(latency["mean"] / 2, rel=1e-3)
    assert row["cold_ms"] > 0 and row["outliers"] >= 0 and row["iters"] == 3


def test_gpu_peaks_come_from_the_table_by_name():
    assert gpu_table_peak("NVIDIA H100 80GB HBM3", "bf16") == ("H100 SXM", 989.4)
    assert gpu_table_peak("NVIDIA H100 PCIe", "fp16")[0] == "H100 PCIe"
    assert gpu_table_peak("NVIDIA A100-SXM4-80GB", "tf32") == ("A100", 156.0)
    assert gpu_table_peak("NVIDIA A10", "bf16") == ("A10", 125.0)
    assert gpu_table_peak("NVIDIA L40S", "fp32")[0] == "L40S"
    assert gpu_table_peak("NVIDIA L4", "fp32")[0] == "L4"
    assert gpu_table_peak("Tesla T4", "bf16") == ("T4", None)  # no bf16 units
    assert gpu_table_peak("NVIDIA GeForce RTX 4090", "fp16")[0] == "RTX 4090"
    assert gpu_table_peak("NVIDIA GH200 480GB", "bf16") is None  # not H200: measured instead


# -- the command's output ---------------------------------------------------------------------


def test_json_schema_of_a_tiny_offline_run(cli):
    data = run_json(cli, "--model", "lenet", "--weights", "none", *QUICK)
    assert set(data) == {"system", "rows"}
    assert set(data["system"]) >= SYSTEM_KEYS
    assert data["system"]["threads"] == torch.get_num_threads()
    (row,) = data["rows"]
    assert set(row) >= ROW_KEYS
    assert set(row["latency_ms"]) == {"mean", "p50", "p90", "p99"}
    assert (row["model"], row["device"], row["batch"], row["imgsz"], row["dtype"]) == (
        "lenet", "cpu", 1, 32, "fp32")  # fmt: skip
    assert row["params"] == sum(p.numel() for p in LeNet5().parameters())
    assert row["peak_source"].startswith("measured") and row["peak_tflops"] > 0  # a CPU
    assert row["peak_mem_mb"] >= 0 and row["peak_mem_source"]
    assert row["ratio"] == 1.0 and row["error"] is None


def test_several_models_and_batches_make_one_table_with_a_ratio(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    result = cli("benchmark", "--model", "lenet", "--model", "digits-lenet", "--batch", "1,2",
                 "--peak-tflops", "1", *QUICK)  # fmt: skip
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "img/s" in line)
    assert "ratio" in header and "model" in header
    rows = [line.split() for line in result.output.splitlines() if line.split()[:1] in
            (["lenet"], ["digits-lenet"]) and "x" in line]  # fmt: skip
    assert [(r[0], r[1]) for r in rows] == [
        ("lenet", "1"),
        ("lenet", "2"),
        ("digits-lenet", "1"),
        ("digits-lenet", "2"),
    ]
    assert rows[0][header.split().index("ratio")] == "1.00x"


@pytest.mark.parametrize("columns", [80, 120])
def test_the_table_fits_the_terminal(cli, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    result = cli("benchmark", "--model", "lenet", "--batch", "1,2", "--peak-tflops", "1", *QUICK)
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("benchmark --task model") :].splitlines()[1:4]
    assert all(len(line.rstrip()) <= columns for line in table)
    assert all(word in table[0] for word in ("model", "batch", "img/s", "ratio"))


def test_csv_appended_twice_has_one_header(cli, tmp_path):
    out = tmp_path / "bench"
    for _ in range(2):
        result = cli("benchmark", "--model", "lenet", "--batch", "1,2", "--peak-tflops", "1",
                     "--out", out, *QUICK)  # fmt: skip
        assert result.exit_code == 0, result.output
    lines = (out / "benchmark.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 and lines[0].startswith("time,cpu,")
    rows = list(csv.DictReader(lines))
    assert [r["batch"] for r in rows] == ["1", "2", "1", "2"]
    assert all(r["model"] == "lenet" and r["torch"] == torch.__version__ for r in rows)
    assert all(float(r["latency_ms_mean"]) > 0 and r["latency_ms_p99"] for r in rows)
    assert sorted(p.name for p in out.iterdir()) == ["benchmark.csv"]  # no lock file left


def test_a_csv_of_someone_else_is_never_written(cli, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "benchmark.csv").write_text("a,b\n1,2\n")
    line = error_line(cli("benchmark", "--model", "lenet", "--out", out, *QUICK))
    assert "benchmark.csv" in line
    assert (out / "benchmark.csv").read_text() == "a,b\n1,2\n"


def test_out_follows_the_output_folder_rules(cli, tmp_path):
    afile = tmp_path / "file.txt"
    afile.write_text("mine")
    assert "file" in error_line(cli("benchmark", "--model", "lenet", "--out", afile, *QUICK))
    assert afile.read_text() == "mine"
    data = tmp_path / "digits"
    assert cli("data", "synth", "--task", "classify", "--n", "4", "--imgsz", "32",
               "--out", data).exit_code == 0  # fmt: skip
    inside = data / "bench"
    line = error_line(cli("benchmark", "--task", "data", "--data", data, "--model", "lenet",
                          "--out", inside, *QUICK))  # fmt: skip
    assert "inside" in line and not inside.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "lenett"], ["lenett", "lenet"]),
        (["--model", "lenet", "--model", "nosuchnet"], ["nosuchnet"]),
        (["--model", "lenet", "--batch", "0"], ["--batch"]),
        (["--model", "lenet", "--batch", "x"], ["--batch"]),
        (["--model", "lenet", "--imgsz", "-5"], ["--imgsz"]),
        (["--model", "lenet", "--dtype", "fp64"], ["--dtype", "fp64"]),
        (["--model", "lenet", "--dtype", "fp16", "--device", "cpu"], ["fp16", "cpu"]),
        (["--model", "lenet", "--task", "nosuchtask"], ["--task"]),
        (["--task", "pipeline", "--dtype", "bf16"], ["--dtype", "pipeline"]),
        (["--model", "lenet", "--n", "5"], ["--n", "model"]),
        (["--task", "data", "--model", "lenet"], ["--data"]),
        (["--model", "resnet18", "--backbone", "resnet50"], ["--backbone"]),
        (["--model", "lenet", "--peak-tflops", "0"], ["--peak-tflops"]),
        (["--model", "lenet", "--iters", "0"], ["--iters"]),
        (["--task", "pipeline", "--out", "somewhere"], ["--out", "pipeline"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, args, words):
    line = error_line(cli("benchmark", *args))
    for word in words:
        assert word in line, line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line_and_exit_2(cli):
    assert "CUDA" in error_line(cli("benchmark", "--model", "lenet", "--device", "cuda"))
    pipeline = cli("benchmark", "--task", "pipeline", "--device", "cuda", "--n", "1")
    assert "CUDA" in error_line(pipeline)


def test_a_row_that_cannot_run_fails_alone_with_exit_1(cli, monkeypatch):
    """LeNet takes 32x32 only: the 64 row fails (said under the table), the 32 row is timed."""
    monkeypatch.setenv("COLUMNS", "120")
    result = cli("benchmark", "--model", "lenet", "--imgsz", "32,64", "--peak-tflops", "1", *QUICK)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "failed" in result.output and "warning: lenet batch 1:" in result.output


def test_eval_task_times_ours_and_pycocotools_on_the_same_data(cli):
    pytest.importorskip("pycocotools")
    rows = run_json(cli, "--task", "eval", "--n", "20", "--iters", "1", "--warmup", "0")["rows"]
    assert [r["model"] for r in rows] == ["faster-coco-eval", "pycocotools"]
    assert all(r["batch"] == 20 and r["images_per_s"] > 0 for r in rows)
    assert rows[1]["note"] == "12 COCO numbers identical"


def test_data_task_times_the_training_pipeline(cli, tmp_path):
    data = tmp_path / "digits"
    made = cli("data", "synth", "--task", "classify", "--kind", "digits", "--n", "10",
               "--imgsz", "32", "--out", data)  # fmt: skip
    assert made.exit_code == 0, made.output
    rows = run_json(cli, "--task", "data", "--data", data, "--model", "lenet", "--batch", "2",
                    "--workers", "0", "--iters", "2", "--warmup", "0")["rows"]  # fmt: skip
    (row,) = rows
    assert row["task"] == "data" and row["imgsz"] == 32 and row["images_per_s"] > 0
    assert "augment classify" in row["note"] and row["flops"] is None


@pytest.mark.slow
def test_compile_and_channels_last_rows(cli):
    rows = run_json(cli, "--model", "lenet", "--compile", "--channels-last", "--peak-tflops", "1",
                    *QUICK)["rows"]  # fmt: skip
    assert rows[0]["compile"] and rows[0]["channels_last"] and rows[0]["images_per_s"] > 0
