"""`visiontool benchmark` times both pipelines as processes and reports a ratio."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_benchmark_command_reports_both_pipelines(cli):
    result = cli("benchmark", "--n", "2", "--repeat", "1", "--batch", "2", "--inflight", "1",
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["naive_images_per_s"] > 0 and data["ours_images_per_s"] > 0
    assert data["ratio"] == pytest.approx(
        data["ours_images_per_s"] / data["naive_images_per_s"], rel=1e-2
    )
    assert data["median_paired_ratio"] == pytest.approx(data["ratio"], rel=1e-2)  # one pair
    assert data["config"]["inflight"] == 1


def test_benchmark_rejects_bad_counts(cli):
    assert cli("benchmark", "--n", "0").exit_code == 2
