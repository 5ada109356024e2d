"""The classic one-stage detectors (tinyssd, ssd-focal, yolo): shapes, hand-made loss values,
decoding round trips, and one batch overfit to near-zero loss."""

from __future__ import annotations

import math

import pytest
import torch

from visiontool import registry
from visiontool.errors import ConfigError
from visiontool.models import create_model
from visiontool.models.heads import onestage_parts
from visiontool.models.onestage.ssd_focal import cell_anchors, focal_loss_reference, match
from visiontool.models.onestage.tinyssd import hard_negatives, pad_labels
from visiontool.models.onestage.yolo import VOC_PRIORS
from visiontool.models.parts import probe

NAMES = ("tinyssd", "ssd-focal", "yolo")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny CPU models run faster on one thread than on a shared, oversubscribed machine
    (measured: 0.13 s per overfit step on one thread, seconds when threads fight)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 50.0], [70.0, 64.0, 120.0, 124.0]]),
         "labels": torch.tensor([1, 3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_recipes_are_listed_and_build_on_any_backbone(name: str) -> None:
    spec = registry.get("model", name)
    assert spec.task == "detect" and spec.composes == name and spec.pretrained is None
    model = create_model(name, num_classes=4, backbone="mobilenet_v3_small", imgsz=128)
    assert model.model_info.build["backbone"] == "mobilenet_v3_small"
    model.score_thresh = 0.0  # random weights: keep every candidate
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 100, 150)])
    assert set(out[0]) == {"boxes", "scores", "labels"}
    boxes = out[0]["boxes"]
    assert boxes.shape[1] == 4 and (boxes[:, 2] <= 150).all() and (boxes[:, 3] <= 100).all()
    assert out[0]["labels"].min() >= 1 and out[0]["labels"].max() <= 3


def test_tinyssd_has_the_books_five_scales_and_four_anchors_per_pixel() -> None:
    model = create_model("tinyssd", num_classes=3)
    maps = model.meta_maps()
    assert [tuple(m.shape[-2:]) for m in maps] == [(32, 32), (16, 16), (8, 8), (4, 4), (1, 1)]
    assert [m.shape[1] for m in maps] == [64, 128, 128, 128, 128]
    anchors, size = onestage_parts.image_anchors(model, (480, 640))
    assert size == (256, 256) and anchors.shape == ((32**2 + 16**2 + 8**2 + 4**2 + 1) * 4, 4)
    cls, box = model.head([torch.zeros(m.shape, device="cpu") for m in maps])
    assert cls.shape == (1, anchors.shape[0], 3) and box.shape == (1, anchors.shape[0], 4)
    # first pixel: sizes 0.2 (r=1, 2, 0.5) then 0.272 (r=1), centred at (0.5/32, 0.5/32)
    first = anchors[:4] / 256
    widths = first[:, 2] - first[:, 0]
    assert torch.allclose(widths, torch.tensor([0.2, 0.2 * 2**0.5, 0.2 / 2**0.5, 0.272]))


def test_tinyssd_loss_keeps_positives_and_three_times_as_many_hard_negatives() -> None:
    loss = torch.tensor([[5.0, 0.1, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2]])
    positives = torch.tensor([[True, False, False, False, False, False, False, False]])
    chosen = hard_negatives(loss, positives, 3.0)
    assert chosen.tolist() == [[False, False, True, True, True, False, False, False]]
    labels = pad_labels(_targets(), "cpu")
    assert labels.shape == (2, 2, 5) and labels[0, 1, 0] == 2 and (labels[1, :, 0] == -1).all()


def test_focal_loss_matches_the_formula_and_alpha_gamma_act() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0], [-3.0, 0.5, 1.5]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    from torchvision.ops import sigmoid_focal_loss

    ours = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="sum")
    assert torch.isclose(ours, focal_loss_reference(logits, targets, 0.25, 2.0))
    # a confident right answer costs far less than with plain cross-entropy (gamma = 2)
    p = torch.sigmoid(torch.tensor(2.0))
    assert math.isclose(
        float(focal_loss_reference(torch.tensor([2.0]), torch.tensor([1.0]), 0.25, 2.0)),
        float(-0.25 * (1 - p) ** 2 * torch.log(p)), rel_tol=1e-6,
    )  # fmt: skip


def test_ssd_focal_matching_forces_each_boxs_best_anchor() -> None:
    anchors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.4, 0.4]])
    boxes = torch.tensor([[0.6, 0.6, 0.7, 0.7], [0.0, 0.0, 0.45, 0.5]])  # first: IoU 0.04 only
    index, positive = match(anchors, boxes)
    assert positive.tolist() == [True, True, True]
    assert index.tolist() == [1, 0, 1]
    assert match(anchors, torch.zeros(0, 4))[1].sum() == 0


def test_ssd_focal_grids_anchors_and_bounded_decoding() -> None:
    model = create_model("ssd-focal", num_classes=3)  # ResNet-18 at 224: 7x7 -> 4, 2, 1
    shapes = [tuple(m.shape[-2:]) for m in model.meta_maps()]
    assert shapes == [(4, 4), (2, 2), (1, 1)]
    anchors = cell_anchors(shapes, model.shapes)
    assert anchors.shape == ((16 + 4 + 1) * 9, 4)
    cell = 0.25
    first = anchors[:9]
    assert torch.allclose((first[:, :2] + first[:, 2:])[0] / 2, torch.tensor([0.125, 0.125]))
    assert torch.isclose(first[0, 2] - first[0, 0], torch.tensor(0.75 * cell))
    huge = torch.full((1, anchors.shape[0], 4), 50.0)
    decoded = model.decode(huge, anchors)[0]
    centre = (decoded[:, :2] + decoded[:, 2:]) / 2 - (anchors[:, :2] + anchors[:, 2:]) / 2
    wh = (decoded[:, 2:] - decoded[:, :2]) / (anchors[:, 2:] - anchors[:, :2])
    assert torch.allclose(centre[:144], torch.full((144, 2), cell / 2), atol=1e-5)
    assert torch.allclose(wh, torch.full_like(wh, 1.5), atol=1e-5)
    assert torch.allclose(model.decode(torch.zeros(1, len(anchors), 4), anchors)[0], anchors)


def test_yolo_decoding_round_trip_and_responsible_prior() -> None:
    model = create_model("yolo", num_classes=3, imgsz=128)  # 4x4 grid
    box = torch.tensor([[0.30, 0.55, 0.50, 0.95]])  # centre (0.4, 0.75): cell (1, 3)
    cells, prior, index = model.responsible(box, (4, 4))
    assert cells.tolist() == [[1, 3]] and index.tolist() == [0]
    wh = torch.tensor([0.2, 0.4])
    shape_iou = [
        float(torch.min(wh, torch.tensor(p)).prod() / (wh.prod() + p[0] * p[1]
              - torch.min(wh, torch.tensor(p)).prod()))
        for p in VOC_PRIORS
    ]  # fmt: skip
    assert int(prior) == max(range(5), key=lambda i: shape_iou[i])
    preds = torch.zeros(1, 4, 4, 5, 5 + 2)
    p = int(prior)
    pw, ph = VOC_PRIORS[p]
    preds[0, 3, 1, p, 0] = torch.logit(torch.tensor(0.4 * 4 - 1))
    preds[0, 3, 1, p, 1] = torch.logit(torch.tensor(0.75 * 4 - 3 + 1e-6))
    preds[0, 3, 1, p, 2] = math.log(0.2 / pw)
    preds[0, 3, 1, p, 3] = math.log(0.4 / ph)
    assert torch.allclose(model.decode(preds)[0, 3, 1, p], box[0], atol=1e-4)


def test_yolo_priors_from_an_anchors_fit_file_and_options() -> None:
    fit = {"wh": [[16.0, 32.0], [64.0, 48.0]], "scale": 2.0}
    model = create_model("detector", head="yolo", backbone="resnet18", num_classes=3,
                         imgsz=128, anchor_fit=fit)  # fmt: skip
    assert model.priors == [(0.25, 0.5), (1.0, 0.75)]
    with pytest.raises(ConfigError, match="multiple of 32"):
        create_model("detector", head="yolo", backbone="resnet18", num_classes=3, imgsz=100)
    with pytest.raises(ConfigError, match="no option"):
        create_model("detector", head="yolo", backbone="resnet18", num_classes=3,
                     arch={"gamma": 1})  # fmt: skip
    built = create_model("detector", head="yolo", backbone="resnet18", num_classes=3,
                         imgsz=128, arch={"noobj": 1.0, "multiscale": True})  # fmt: skip
    assert built.noobj == 1.0 and built.multiscale and built.build_kwargs["arch"]["noobj"] == 1.0


def test_yolo_multiscale_trains_at_several_sizes_and_restores_its_size() -> None:
    """The paper's schedule: a new multiple of 32 every 10 batches, the input size restored
    after each batch (eval and checkpoints see the trained size)."""
    model = create_model("yolo", num_classes=4, imgsz=128, arch={"multiscale": True})
    seen: list[tuple[int, int]] = []
    original = model.transform.forward

    def spy(images, targets=None):  # noqa: ANN001, ANN202
        seen.append(model.transform.fixed_size)
        return original(images, targets)

    model.transform.forward = spy
    model.train()
    torch.manual_seed(0)
    for _ in range(30):
        model([torch.rand(3, 32, 32)], _targets()[:1])
    blocks = [set(seen[i : i + 10]) for i in range(0, 30, 10)]
    assert all(len(block) == 1 for block in blocks)  # one size for 10 batches
    assert len(set(seen)) > 1 and all(s[0] % 32 == 0 and 64 <= s[0] <= 192 for s in seen)
    assert model.transform.fixed_size == (128, 128)


def test_yolo_passthrough_brings_the_stride_16_map_in_by_space_to_depth() -> None:
    model = create_model("yolo", num_classes=3, imgsz=128)  # resnet18: layer3 and layer4
    assert [m.stride for m in probe(model.backbone)] == [16, 32]
    unshuffle = model.passthrough[-1]
    assert isinstance(unshuffle, torch.nn.PixelUnshuffle) and unshuffle.downscale_factor == 2
    assert model.fuse[0].in_channels == 256 + 4 * 64  # neck width + 64 x 2 x 2
    model.eval()
    maps = list(model.backbone(torch.rand(1, 3, 128, 128)).values())
    with torch.no_grad():
        base = model.head(maps)
        shifted = model.head([maps[0] + torch.randn_like(maps[0]), maps[1]])
    assert base.shape == (1, 4, 4, 5, 5 + 2)  # the 4x4 stride-32 grid
    assert not torch.allclose(base, shifted)  # the stride-16 map reaches the output
    single = create_model("yolo", num_classes=3, imgsz=128, returned_layers=[4])
    assert single.passthrough is None and isinstance(single.fuse, torch.nn.Identity)


@pytest.mark.parametrize("name", NAMES)
def test_one_batch_overfits_to_near_zero_loss(name: str) -> None:
    torch.manual_seed(0)
    # the small TinySSD base under every head keeps this fast; the heads are what is tested
    model = create_model(name, num_classes=4, imgsz=128, backbone="tinyssd-base")
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 50.0], [70.0, 64.0, 120.0, 124.0]]),
         "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[30.0, 30.0, 100.0, 90.0]]), "labels": torch.tensor([2])},
    ]  # fmt: skip
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(60):
        loss = sum(model(images, targets).values())
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = float(loss.detach())
    assert last < 0.1 * first, (first, last)
    model.eval()
    with torch.no_grad():
        out = model(images)[0]
    top = out["labels"][out["scores"] > 0.3]
    assert {1, 3} <= set(top.tolist())


def test_recipe_trains_from_the_cli_and_its_checkpoint_needs_only_weights(cli, tmp_path):
    """`train --model yolo --arch ...` then detect, eval and anchors check with `--weights`
    alone: the checkpoint records the head, its options and its priors."""
    from visiontool.data.synth import synth_detection

    data = tmp_path / "shapes"
    synth_detection(data, n=10, imgsz=96, fmt="coco", seed=5)
    run = tmp_path / "run"
    result = cli("train", "--data", data, "--model", "yolo", "--backbone", "tinyssd-base",
                 "--arch", "noobj=1,multiscale=true", "--imgsz", "96", "--epochs", "1",
                 "--batch", "4", "--workers", "0", "--out", run)  # fmt: skip
    assert result.exit_code == 0, result.output
    weights = run / "weights" / "best.pt"
    build = torch.load(weights, weights_only=True)["model_info"]["build"]
    assert build["head"] == "yolo" and build["arch"] == {"noobj": 1, "multiscale": True}
    detected = cli("detect", data / "images" / "val", "--weights", weights, "--out",
                   tmp_path / "det", "--json")  # fmt: skip
    assert detected.exit_code == 0, detected.output
    evaluated = cli("eval", "--weights", weights, "--data", data, "--out", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output
    checked = cli("anchors", "check", "--weights", weights, "--data", data, "--json")
    assert checked.exit_code == 0, checked.output
    bad = cli("train", "--data", data, "--model", "yolo", "--arch", "gamma=2", "--out",
              tmp_path / "bad")  # fmt: skip
    assert bad.exit_code == 2 and "its --arch options: width, coord" in bad.output
