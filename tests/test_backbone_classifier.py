"""The classifier over any registered backbone (`train --task classify|multilabel --backbone`):
shapes, the global max pool, what a checkpoint records and rebuilds, options that do not apply
are refused (they used to be ignored), and a tiny one overfits a few images."""

from __future__ import annotations

import pytest
import torch

from visiontool.models.backbone_classifier import build_backbone_classifier
from visiontool.models.factory import create_model


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_logits_per_class_and_what_it_records():
    model = build_backbone_classifier(num_classes=5, backbone="tinyssd-base").eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 5)
    assert model.build_kwargs["model"] == "backbone-classifier"
    assert model.build_kwargs["backbone"] == "tinyssd-base"
    rebuilt = create_model("backbone-classifier", **{
        k: v for k, v in model.build_kwargs.items() if k != "model"})  # fmt: skip
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_the_strongest_response_anywhere_decides():
    """Global max pool: moving one bright patch across a blank image changes nothing when
    the receptive field sees it whole at both places (a mean would fall with blank area)."""
    model = build_backbone_classifier(num_classes=3, backbone="tinyssd-base").eval()
    pool = model.head.pool
    assert isinstance(pool, torch.nn.AdaptiveMaxPool2d)
    maps = torch.zeros(1, 4, 8, 8)
    maps[0, :, 1, 1] = 3.0
    moved = torch.zeros(1, 4, 8, 8)
    moved[0, :, 6, 5] = 3.0
    assert torch.equal(pool(maps), pool(moved))


def test_train_builds_it_from_backbone_and_the_checkpoint_rebuilds_it(cli, tmp_path):
    data, run = tmp_path / "shapes", tmp_path / "run"
    made = cli("data", "synth", "--out", data, "--n", "10", "--imgsz", "64", "--seed", "4",
               "--max-objects", "3")  # fmt: skip
    assert made.exit_code == 0, made.output
    trained = cli("train", "--data", data, "--task", "multilabel", "--backbone", "tinyssd-base",
                  "--imgsz", "64", "--epochs", "1", "--batch", "4", "--workers", "0",
                  "--out", run)  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert "backbone-classifier" in trained.output
    best = run / "weights" / "best.pt"
    info = torch.load(best, map_location="cpu", weights_only=True)["model_info"]
    assert info["task"] == "multilabel"
    assert info["build"]["model"] == "backbone-classifier"
    assert info["build"]["backbone"] == "tinyssd-base"
    from visiontool import registry

    spec = registry.get("backbone", "tinyssd-base")
    assert info["preprocess"]["mean"] == list(spec.mean)  # the backbone's normalisation
    assert info["preprocess"]["square"] and info["preprocess"]["crop"] == 64

    loaded = create_model(None, weights=best).eval()
    with torch.no_grad():
        assert loaded(torch.randn(1, 3, 64, 64)).shape == (1, 6)
    found = cli("detect", data / "images" / "val", "--weights", best, "--workers", "0",
                "--out", tmp_path / "det", "--json")  # fmt: skip
    assert found.exit_code == 0, found.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet18", "--backbone", "tinyssd-base"], "--backbone does not apply"),
        (["--model", "lenet", "--backbone-weights", "DEFAULT"], "--backbone-weights does not"),
        (["--backbone", "resnet18", "--returned-layers", "2"], "--returned-layers does not"),
        (["--backbone", "resnet18", "--weights", "DEFAULT"], "no pretrained weights"),
    ],
)
def test_options_a_classifier_cannot_honour_are_refused(cli, tmp_path, args, message):
    data = tmp_path / "shapes"
    assert cli("data", "synth", "--out", data, "--n", "4", "--imgsz", "32").exit_code == 0
    result = cli("train", "--data", data, "--task", "multilabel", "--epochs", "1",
                 "--out", tmp_path / "run", *args)  # fmt: skip
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output


def test_a_tiny_one_overfits_a_few_images():
    """Eight 32 px images with a random set of coloured squares each: the multi-label loss
    goes from ~0.7 to near zero."""
    from visiontool.tasks.spec import get_task

    task = get_task("multilabel")
    generator = torch.Generator().manual_seed(0)
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    images, targets = [], []
    for i in range(8):
        image = torch.zeros(3, 32, 32)
        present = torch.rand(3, generator=generator) < 0.5
        present[i % 3] = True
        for k in torch.nonzero(present).flatten().tolist():
            x, y = torch.randint(0, 24, (2,), generator=generator).tolist()
            image[:, y : y + 8, x : x + 8] = colours[k][:, None, None]
        images.append(image)
        targets.append(present.float())
    torch.manual_seed(0)
    model = build_backbone_classifier(num_classes=3, backbone="tinyssd-base", width=32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    batch, prepared = torch.stack(images), task.targets(targets, "cpu")
    for _ in range(60):
        loss = task.loss(model(batch), prepared)["bce_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.05
