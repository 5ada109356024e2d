"""Model side of training: backbone x head detectors, classifiers, LeNet, fine-tuning helpers."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from visiontool import registry
from visiontool.errors import ConfigError, ModelLoadError, UnknownName
from visiontool.models.compose import allowed_combinations, build_detector
from visiontool.models.factory import create_model
from visiontool.models.finetune import freeze_backbone_stages, param_groups


def replace_class_layers(model, num_classes, head=None):
    """Through the spec, as the engine does: the head's for detectors, the model's otherwise."""
    head = head or getattr(model, "build_kwargs", {}).get("head")
    if head:
        return registry.get("head", head).replace_class_layers(model, num_classes)
    return registry.get("model", "resnet18").replace_class_layers(model, num_classes)


def build_classifier(*, name, num_classes, in_channels=None):
    extra = {} if in_channels is None else {"in_channels": in_channels}
    if registry.get("model", name).info is None:  # trained per data set (LeNet)
        return create_model(name, num_classes=num_classes, **extra)
    return create_model("classifier", name=name, num_classes=num_classes, **extra)


BACKBONES = [
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "vgg11",
    "vgg16",
    "googlenet",
    "tinyssd-base",
]
LOSS_KEYS = {
    "frcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
    "frcnn-classic": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
    "retinanet": {"classification", "bbox_regression"},
    "fcos": {"classification", "bbox_regression", "bbox_ctrness"},
    "ssd": {"classification", "bbox_regression"},
    "ssdlite": {"classification", "bbox_regression"},
    "tinyssd": {"loss_cls", "loss_box"},
    "ssd-focal": {"loss_cls", "loss_box"},
    "yolo": {"loss_box", "loss_obj", "loss_noobj", "loss_cls"},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny CPU models run faster on one thread than on a shared, oversubscribed machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_detector(head: str, backbone: str, fpn: bool | None = None, **kwargs):
    spec = registry.get("head", head)
    size = {"imgsz": 128} if spec.fixed_size else {"min_size": 128, "max_size": 128}
    if "fc" in spec.arch_options and "arch" not in kwargs:
        kwargs["arch"] = {"fc": 128}  # the paper's 4096-wide fc6 is ~100M weights: slow here
    return build_detector(head=head, backbone=backbone, num_classes=3, fpn=fpn, **size, **kwargs)


def tiny_batch():
    images = [torch.rand(3, 128, 128), torch.rand(3, 96, 128)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0], [60.0, 30.0, 120.0, 90.0]]),
            "labels": torch.tensor([2, 1]),
        },
    ]
    return images, targets


def train_step(model: nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model.train()
    losses = model(*tiny_batch())
    total = sum(losses.values())
    total.backward()
    return losses


# --- combinations ----------------------------------------------------------------------------


def test_allowed_combinations_are_the_documented_matrix():
    plain = [b for b in BACKBONES if b != "tinyssd-base"]  # one map: no FPN
    expected = {("frcnn", b, True) for b in plain} | {("frcnn", b, False) for b in BACKBONES}
    expected |= {(h, b, True) for h in ("retinanet", "fcos") for b in plain}
    plain_only = ("frcnn-classic", "ssd", "tinyssd", "ssd-focal", "yolo")
    expected |= {(h, b, False) for h in plain_only for b in BACKBONES}
    expected |= {("ssdlite", b, False) for b in ("mobilenet_v3_large", "mobilenet_v3_small")}
    assert set(allowed_combinations()) == expected


def covering_combinations() -> list[tuple[str, str, bool]]:
    """Every head with its default backbone and with one other, and every backbone under one
    head in each layout it allows: each head's and each backbone's code paths at a fraction
    of the full matrix's time (about 70 pairs, most of them repeats of the same code)."""
    allowed = allowed_combinations()
    chosen: list[tuple[str, str, bool]] = []
    for spec in registry.specs("head"):
        own = [c for c in allowed if c[0] == spec.name]
        default = [c for c in own if c[1] == spec.default_backbone][:1]
        others = [c for c in own if c[1] != spec.default_backbone]
        other = sorted(others, key=lambda c: c[1] != "mobilenet_v3_small")[:1]  # the cheapest
        chosen += default + other
    for backbone in BACKBONES:
        for fpn in (True, False):
            if not any(c[1] == backbone and c[2] == fpn for c in chosen):
                chosen += [c for c in allowed if c[1] == backbone and c[2] == fpn][:1]
    return sorted(set(chosen))


@pytest.mark.parametrize(("head", "backbone", "fpn"), covering_combinations())
def test_every_allowed_combination_trains_one_step(head, backbone, fpn):
    model = tiny_detector(head, backbone, fpn)
    losses = train_step(model)
    assert set(losses) == LOSS_KEYS[head]
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.build_kwargs["fpn"] is fpn


@pytest.mark.parametrize(
    ("head", "backbone", "fpn", "needle"),
    [
        ("retinanet", "resnet18", False, "needs an FPN"),
        ("fcos", "mobilenet_v3_small", False, "needs an FPN"),
        ("ssd", "resnet18", True, "use --no-fpn"),
        ("ssdlite", "resnet50", None, "mobilenet_v3_large, mobilenet_v3_small"),
        ("ssdlite", "vgg16", False, "does not work with backbone 'vgg16'"),
    ],
)
def test_invalid_combination_says_what_works(head, backbone, fpn, needle):
    with pytest.raises(ConfigError, match=needle):
        build_detector(head=head, backbone=backbone, num_classes=3, fpn=fpn)


def test_unknown_backbone_and_head_suggest_the_nearest_name():
    with pytest.raises(UnknownName) as info:
        build_detector(head="frcnn", backbone="resnt50", num_classes=3)
    assert "resnet50" in info.value.suggestions
    assert "did you mean" in str(info.value)
    with pytest.raises(UnknownName, match="retinanet"):
        build_detector(head="retinanett", backbone="resnet18", num_classes=3)


def test_head_default_layout_and_background_count():
    assert tiny_detector("ssd", "resnet18").build_kwargs["fpn"] is False
    assert tiny_detector("frcnn", "mobilenet_v3_small").build_kwargs["fpn"] is True
    with pytest.raises(ConfigError, match="background"):
        build_detector(head="frcnn", backbone="resnet18", num_classes=1)


@pytest.mark.parametrize(
    ("head", "backbone", "reference"),
    [
        ("frcnn", "resnet50", "fasterrcnn_resnet50_fpn"),
        ("retinanet", "resnet50", "retinanet_resnet50_fpn"),
        ("fcos", "resnet50", "fcos_resnet50_fpn"),
        ("frcnn", "mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn"),
    ],
)
def test_defaults_match_torchvision_reference_detectors(head, backbone, reference):
    """Same state-dict layout and anchors as torchvision's builder: its COCO weights load."""
    import torchvision.models.detection as tvd

    ours = build_detector(head=head, backbone=backbone, num_classes=91)
    ref = getattr(tvd, reference)(weights=None, weights_backbone=None, num_classes=91)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    ours.load_state_dict(ref.state_dict())
    gen = ours.rpn.anchor_generator if head == "frcnn" else ours.anchor_generator
    ref_gen = ref.rpn.anchor_generator if head == "frcnn" else ref.anchor_generator
    assert [list(map(float, s)) for s in gen.sizes] == [list(map(float, s)) for s in ref_gen.sizes]
    assert [list(map(float, r)) for r in gen.aspect_ratios] == [
        list(map(float, r)) for r in ref_gen.aspect_ratios
    ]


# --- anchors ---------------------------------------------------------------------------------


def test_anchor_options_reconfigure_the_generator():
    model = tiny_detector(
        "frcnn", "resnet18", anchor_sizes=[16, 32, 64, 128, 256], anchor_ratios=[1.0, 2.0]
    )
    gen = model.rpn.anchor_generator
    assert gen.sizes == ((16.0,), (32.0,), (64.0,), (128.0,), (256.0,))
    assert gen.aspect_ratios == ((1.0, 2.0),) * 5
    assert model.rpn.head.cls_logits.out_channels == 2  # 1 size x 2 ratios per location
    assert model.build_kwargs["anchor_sizes"] == [16, 32, 64, 128, 256]
    train_step(model)


def test_anchor_level_count_must_match_the_feature_maps():
    with pytest.raises(ConfigError, match="5 feature maps"):
        tiny_detector("frcnn", "resnet18", anchor_sizes=[16, 32, 64])
    with pytest.raises(ConfigError, match="same number of anchors"):
        tiny_detector("retinanet", "resnet18", anchor_sizes=[[16], [32, 40], [64], [128], [256]])
    with pytest.raises(ConfigError, match="anchor-free"):
        tiny_detector("fcos", "resnet18", anchor_ratios=[0.5, 1.0])


def test_ssd_anchor_sizes_become_default_box_scales():
    sizes = [16, 32, 48, 64, 96, 112]
    model = tiny_detector("ssd", "mobilenet_v3_small", anchor_sizes=sizes, anchor_ratios=[0.5, 1])
    boxes = model.anchor_generator
    assert boxes.scales == pytest.approx([s / 128 for s in sizes] + [1.0])
    assert boxes.aspect_ratios == [[2.0]] * 6
    assert boxes.num_anchors_per_location() == [4] * 6
    train_step(model)


# --- fine-tuning helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "backbone"),
    [
        ("frcnn", "mobilenet_v3_small"),
        ("retinanet", "mobilenet_v3_small"),
        ("fcos", "mobilenet_v3_small"),
        ("ssd", "mobilenet_v3_small"),
        ("ssdlite", "mobilenet_v3_small"),
    ],
)
def test_replace_class_layers_changes_the_detector_classes(head, backbone):
    model = tiny_detector(head, backbone)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new_names = replace_class_layers(model, 6)
    params = dict(model.named_parameters())
    assert new_names and all(name in params for name in new_names)
    changed = {k for k, v in model.state_dict().items() if v.shape != before[k].shape}
    assert changed and changed <= set(new_names)
    untouched = [k for k in before if k not in new_names]
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in untouched)
    train_step(model)  # the loss runs with the new class count
    model.eval()
    with torch.no_grad():
        scores = model.head.classification_head if head != "frcnn" else None
        out = model([torch.rand(3, 128, 128)])
    assert out[0]["labels"].numel() == 0 or int(out[0]["labels"].max()) < 6
    if head == "frcnn":
        assert model.roi_heads.box_predictor.cls_score.out_features == 6
        assert model.roi_heads.box_predictor.bbox_pred.out_features == 24
    elif head in ("retinanet", "fcos"):
        assert scores.num_classes == 6
        assert scores.cls_logits.out_channels % 6 == 0
    else:
        assert scores.num_columns == 6


def test_replace_class_layers_on_classifier():
    model = build_classifier(name="resnet18", num_classes=10)
    names = replace_class_layers(model, 7)
    assert names == ["fc.weight", "fc.bias"]
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 7)


def test_freeze_backbone_stages_freezes_the_first_stages_only():
    model = tiny_detector("frcnn", "resnet18")
    frozen = freeze_backbone_stages(model, 2)  # stem (conv1+bn1) and layer1
    prefixes = ("backbone.body.conv1.", "backbone.body.bn1.", "backbone.body.layer1.")
    expected = [n for n, _ in model.named_parameters() if n.startswith(prefixes)]
    # stem: conv1.weight, bn1.{weight,bias}; layer1: 2 blocks x (2 convs + 2 BN x 2)
    assert sorted(frozen) == sorted(expected) and len(expected) == 3 + 2 * (2 + 2 * 2)
    for name, param in model.named_parameters():
        assert param.requires_grad == (name not in expected)
    with pytest.raises(ConfigError, match="0..5"):
        freeze_backbone_stages(model, 6)


def test_freeze_lenet_and_torchvision_classifier():
    lenet = build_classifier(name="lenet", num_classes=10)
    assert freeze_backbone_stages(lenet, 1) == ["features.c1.weight", "features.c1.bias"]
    mobile = build_classifier(name="mobilenet_v3_small", num_classes=3)
    frozen = freeze_backbone_stages(mobile, 1)
    assert frozen and all(n.startswith("features.0.") for n in frozen)


def test_trainable_layers_follow_torchvision_semantics():
    """trainable_layers=2 leaves exactly layer3/layer4 trainable, as _resnet_fpn_extractor."""
    import torchvision
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    ours = build_detector(
        head="frcnn", backbone="resnet18", num_classes=3, trainable_layers=2
    ).backbone
    ref = _resnet_fpn_extractor(torchvision.models.resnet18(), 2)
    assert {n: p.requires_grad for n, p in ours.named_parameters()} == {
        n: p.requires_grad for n, p in ref.named_parameters()
    }
    with pytest.raises(ConfigError, match="0..5"):
        build_detector(head="frcnn", backbone="resnet18", num_classes=3, trainable_layers=6)


def test_param_groups_split_decay_and_head_lr():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    groups = param_groups(model, lr=0.01, weight_decay=5e-4, head_lr_mult=10, new_param_names=["3"])
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"base_no_decay", "new_decay", "new_no_decay"}

    def ids(group):
        return {id(p) for p in group["params"]}

    assert ids(by_name["base_no_decay"]) == {
        id(model[0].bias),
        id(model[1].weight),
        id(model[1].bias),
    }
    assert ids(by_name["new_decay"]) == {id(model[3].weight)}
    assert ids(by_name["new_no_decay"]) == {id(model[3].bias)}
    assert by_name["base_no_decay"] == {**by_name["base_no_decay"], "lr": 0.01, "weight_decay": 0}
    assert by_name["new_decay"]["lr"] == pytest.approx(0.1)
    assert by_name["new_decay"]["weight_decay"] == 5e-4
    assert by_name["new_no_decay"]["weight_decay"] == 0.0
    torch.optim.SGD(groups, lr=0.01)  # accepted by an optimizer as is


def test_param_groups_with_replaced_detector_head():
    model = tiny_detector("frcnn", "mobilenet_v3_small")
    new = replace_class_layers(model, 5)
    groups = param_groups(model, lr=0.02, weight_decay=1e-4, head_lr_mult=10, new_param_names=new)
    new_params = {id(p) for g in groups if g["name"].startswith("new") for p in g["params"]}
    assert new_params == {id(p) for n, p in model.named_parameters() if n in new}
    assert all(g["lr"] == pytest.approx(0.2) for g in groups if g["name"].startswith("new"))
    counted = sum(len(g["params"]) for g in groups)
    assert counted == sum(1 for p in model.parameters() if p.requires_grad)


# --- classifiers and LeNet -------------------------------------------------------------------


def test_lenet_shape_and_parameter_count():
    model = build_classifier(name="lenet", num_classes=10)
    assert model(torch.rand(4, 1, 32, 32)).shape == (4, 10)

    def conv(cin, cout, k=5):
        return cin * cout * k * k + cout

    def fc(cin, cout):
        return cin * cout + cout

    expected = conv(1, 6) + conv(6, 16) + conv(16, 120) + fc(120, 84) + fc(84, 10)
    assert expected == 61706
    assert sum(p.numel() for p in model.parameters()) == expected
    pools = [m for m in model.modules() if isinstance(m, nn.AvgPool2d)]
    assert len(pools) == 2 and all(m.kernel_size == 2 for m in pools)
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 4


def test_build_classifier_channels_classes_and_names():
    model = build_classifier(name="mobilenet_v3_small", num_classes=4, in_channels=1)
    model.eval()
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 4)
    assert model.model_info.build == {
        "model": "classifier",
        "name": "mobilenet_v3_small",
        "num_classes": 4,
        "in_channels": 1,
    }
    with pytest.raises(ConfigError, match="not a classifier"):
        build_classifier(name="frcnn", num_classes=3)
    with pytest.raises(UnknownName, match="lenet"):
        build_classifier(name="lenett", num_classes=3)


def test_classifier_weights_from_a_file_then_new_classes(tmp_path):
    """create_model(name, weights=state_dict file, num_classes=K): the file loads strictly into
    the named architecture, then the class layer is replaced for K classes (timm-style)."""
    source = create_model("resnet18")
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    model = create_model("resnet18", weights=str(path), num_classes=3)
    assert model.fc.out_features == 3
    assert model.fresh_parameters == ("fc.weight", "fc.bias")
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


# --- weights and rebuilding ------------------------------------------------------------------


def test_backbone_weights_from_a_classifier_file(tmp_path):
    import torchvision

    classifier = torchvision.models.resnet18(num_classes=5)
    path = tmp_path / "r18.pt"
    torch.save({"model": classifier.state_dict()}, path)
    model = build_detector(
        head="frcnn", backbone="resnet18", num_classes=3, backbone_weights=str(path)
    )
    body = model.backbone.body
    assert torch.equal(body.layer3[0].conv1.weight, classifier.layer3[0].conv1.weight)
    assert type(body.bn1).__name__ == "FrozenBatchNorm2d"  # as torchvision with weights
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}  # default 3 trainable stages
    assert model.build_kwargs["frozen_bn"] is True
    assert model.build_kwargs["trainable_layers"] == 3

    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match="do not fit backbone 'resnet18'"):
        build_detector(
            head="frcnn", backbone="resnet18", num_classes=3, backbone_weights=tmp_path / "bad.pt"
        )


def test_default_backbone_weights_offline_is_a_model_load_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONTOOL_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="not cached") as info:
        build_detector(head="fcos", backbone="resnet18", num_classes=3, backbone_weights="DEFAULT")
    assert info.value.exit_code == 3
    # the hint names the option in play, not --weights
    assert "--backbone-weights PATH" in str(info.value) and "--weights PATH" not in str(info.value)
    with pytest.raises(ModelLoadError, match="pass --weights PATH"):
        create_model("frcnn-mobile-320", weights="DEFAULT")


def test_rebuild_from_build_kwargs_has_the_same_state_dict(tmp_path):
    model = tiny_detector(
        "retinanet", "mobilenet_v3_small", anchor_sizes=[[16, 24]], anchor_ratios=[[0.5, 1, 2]]
    )
    build = json.loads(json.dumps(model.build_kwargs))  # what a checkpoint stores
    rebuilt = create_model(build.pop("model"), **build)
    assert rebuilt.build_kwargs == model.build_kwargs
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    rebuilt.load_state_dict(model.state_dict())
    image = [torch.rand(3, 100, 128)]
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        a, b = model(image)[0], rebuilt(image)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_checkpoint_round_trip_through_the_loader(tmp_path):
    from visiontool.io.checkpoint import make_checkpoint, save_checkpoint
    from visiontool.models.factory import load_model
    from visiontool.models.info import ModelInfo, detector_classes

    model = tiny_detector("frcnn", "mobilenet_v3_small", fpn=False)
    raw, ids = detector_classes(["circle", "square"])
    info = ModelInfo("shapes", "detect", ["circle", "square"], raw, ids, 128, model.build_kwargs)
    path = save_checkpoint(
        tmp_path / "best.pt", make_checkpoint(model.state_dict(), info.to_dict())
    )
    loaded = load_model(weights=str(path))
    assert loaded.info.build == model.build_kwargs
    model.eval()
    image = [torch.rand(3, 128, 128)]
    with torch.no_grad():
        assert torch.equal(model(image)[0]["scores"], loaded.module(image)[0]["scores"])

    lenet = build_classifier(name="lenet", num_classes=10)
    digits = list("0123456789")
    info = ModelInfo(
        "digits", "classify", digits, digits, list(range(10)), 32, lenet.model_info.build
    )
    path = save_checkpoint(
        tmp_path / "lenet.pt", make_checkpoint(lenet.state_dict(), info.to_dict())
    )
    loaded = load_model(weights=str(path))
    x = torch.rand(3, 1, 32, 32)
    lenet.eval()
    assert torch.equal(loaded.module(x), lenet(x))


def test_registry_lists_lenet_but_hides_rebuild_entries():
    from visiontool.models.catalog import list_models

    rows = {row["name"]: row for row in list_models()}
    assert "detector" not in rows and "classifier" not in rows
    assert rows["lenet"]["task"] == "classify" and rows["lenet"]["input_size"] == 32
    assert registry.get("model", "detector").task == "detect"
    assert set(BACKBONES) <= set(registry.names("backbone"))
    assert set(LOSS_KEYS) == set(registry.names("head"))


# tinyssd and ssd-focal lay their papers' anchors (fractions of the image); yolo takes the
# fitted shapes as its priors (tests/test_onestage.py)
FIT_HEADS = [h for h in LOSS_KEYS if h not in ("tinyssd", "ssd-focal", "yolo")]


@pytest.mark.parametrize("head", ["tinyssd", "ssd-focal"])
def test_heads_with_paper_anchors_refuse_an_anchors_fit_file(head):
    with pytest.raises(ConfigError, match="--anchors FILE fits yolo"):
        tiny_detector(head, "mobilenet_v3_small", anchor_fit={"wh": [[10, 12]], "scale": 1.0})


@pytest.mark.parametrize("head", FIT_HEADS)
def test_a_default_anchors_fit_file_feeds_every_head(head):
    """`anchors fit` writes K=9 shapes by default; every head spreads them over its own number
    of levels (3 to 6 here) with the same anchor count per level, and trains a step."""
    wh = [[10, 12], [14, 30], [24, 20], [30, 60], [50, 44], [64, 120], [100, 90], [140, 200],
          [220, 180]]  # fmt: skip
    fit = {"wh": wh, "scale": 0.5}
    model = tiny_detector(head, "mobilenet_v3_small", anchor_fit=fit)
    assert model.build_kwargs["anchor_fit"] == fit
    generator = getattr(getattr(model, "rpn", None), "anchor_generator", None)
    generator = generator or model.anchor_generator
    counts = set(generator.num_anchors_per_location())
    assert len(counts) == 1
    if len(getattr(generator, "sizes", ())) > 1:  # grid generators: sizes grow level by level
        firsts = [level[0] for level in generator.sizes]
        assert firsts == sorted(firsts) and firsts[0] < firsts[-1]
    losses = train_step(model)
    assert set(losses) == LOSS_KEYS[head]


@pytest.mark.parametrize(
    "name, options",
    [
        ("frcnn-mobile-320", {}),  # torchvision's own builder (zoo)
        ("ssdlite", {}),
        ("detector", {"head": "retinanet", "backbone": "resnet18", "num_classes": 3}),
        ("detector", {"head": "fcos", "backbone": "resnet18", "num_classes": 3}),
        ("frcnn-vgg16", {"backbone": "resnet18", "returned_layers": [3], "num_classes": 3}),
    ],
)
def test_anchors_stay_float32_under_autocast(name, options):
    """torchvision lays anchors in the maps' dtype: under bf16 autocast (train --amp) an anchor
    near x = 1300 px was 7 px off, so --amp training learned offsets from shifted anchors."""
    from torchvision.models.detection.image_list import ImageList

    from visiontool.models.heads.torchvision_parts import anchor_generator

    generator = anchor_generator(create_model(name, weights=None, **options))
    if hasattr(generator, "sizes"):  # AnchorGenerator: 1344 x 800, strides 4, 8, ...
        size, maps = (800, 1344), [(800 // 2**k, 1344 // 2**k) for k in range(2, 7)]
        maps = maps[: len(generator.sizes)]
    else:  # DefaultBoxGenerator (SSD): a square input, halving maps
        size, maps = (320, 320), [(20 // 2**k, 20 // 2**k) for k in range(6)]
        maps = [(max(1, h), max(1, w)) for h, w in maps][: len(generator.aspect_ratios)]
    image = ImageList(torch.zeros(1, 3, *size), [size])
    exact = generator(image, [torch.zeros(1, 1, h, w) for h, w in maps])[0]
    half = generator(image, [torch.zeros(1, 1, h, w, dtype=torch.bfloat16) for h, w in maps])[0]
    assert half.dtype == torch.float32 and torch.equal(half, exact)
    assert exact.max() > 1024 or size == (320, 320)  # a range where bf16 steps by 8 px
