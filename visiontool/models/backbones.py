"""Detection backbones: torchvision classifiers cut into feature extractors, with or without FPN.

Every builder is keyword-only and returns a torchvision-style backbone module:

- `fpn=True`: `BackboneWithFPN` over `returned_layers` (+ an extra `pool` or `p6p7` level); an
  OrderedDict of maps with `out_channels` (256) channels each, as torchvision's detectors use.
- `fpn=False`, no `returned_layers`: the last stage reduced to 256 channels by a 1x1 conv, one
  tensor (torchvision's non-FPN MobileNet layout), for single-map Faster R-CNN.
- `fpn=False` with `returned_layers`: an OrderedDict of the native maps (multi-scale source for
  SSD heads).

The module also carries `stages`: parameter-name prefixes of the trunk's stages from the input
on, which `trainable_layers` and `visiontool.models.finetune.freeze_backbone_stages` use.
`returned_layers` index that stage list (ResNet 1-4 = layer1-4 and MobileNet 0-5 as in
torchvision; VGG 0-4 = conv1-conv5 blocks; GoogLeNet 0-4 = conv1, conv3, inception3-5).

This module imports without torch so the registry can list it; builders import inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from visiontool import registry
from visiontool.errors import ConfigError, ModelLoadError
from visiontool.io.weights import IMAGENET_MEAN, IMAGENET_STD, weights_kind
from visiontool.models.specs import BackboneSpec

FPN_CHANNELS = 256
DEFAULT_TRAINABLE = 3  # stages left trainable when starting from ImageNet weights (torchvision)


@dataclass(frozen=True)
class Family:
    """One registered backbone: which torchvision classifier it cuts and its layer presets.

    `layers` maps a preset to default `returned_layers`: "fpn" (two-stage heads), "dense"
    (RetinaNet/FCOS: stride >= 8, as torchvision), "ssd" (the native maps SSD starts from; YOLO's
    last map and its passthrough) and "last" (the last map only: the focal-loss SSD head and the
    original Faster R-CNN).
    """

    name: str
    kind: str  # "resnet" | "mobilenet" | "vgg" | "googlenet"
    weights_enum: str
    layers: dict[str, tuple[int, ...]]
    description: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


_RESNET_LAYERS = {"fpn": (1, 2, 3, 4), "dense": (2, 3, 4), "ssd": (3, 4), "last": (4,)}
_MOBILE_LAYERS = {"fpn": (4, 5), "dense": (4, 5), "ssd": (3, 5), "last": (5,)}
# VGG stage i ends at the ReLU before max-pool i+1: "last" is conv5's last ReLU, stride 16
_VGG_LAYERS = {"fpn": (2, 3, 4), "dense": (3, 4), "ssd": (3, 4), "last": (4,)}
_VGG_CONFIGS = {"vgg11": "A", "vgg16": "D"}  # torchvision's layer tables

FAMILIES = (
    Family("resnet18", "resnet", "ResNet18_Weights", _RESNET_LAYERS, "ResNet-18"),
    Family("resnet34", "resnet", "ResNet34_Weights", _RESNET_LAYERS, "ResNet-34"),
    Family("resnet50", "resnet", "ResNet50_Weights", _RESNET_LAYERS, "ResNet-50"),
    Family(
        "mobilenet_v3_large",
        "mobilenet",
        "MobileNet_V3_Large_Weights",
        _MOBILE_LAYERS,
        "MobileNetV3-Large",
    ),
    Family(
        "mobilenet_v3_small",
        "mobilenet",
        "MobileNet_V3_Small_Weights",
        _MOBILE_LAYERS,
        "MobileNetV3-Small",
    ),
    Family("vgg11", "vgg", "VGG11_Weights", _VGG_LAYERS, "VGG-11 (conv layers only)"),
    Family("vgg16", "vgg", "VGG16_Weights", _VGG_LAYERS, "VGG-16 (conv layers only)"),
    Family(
        "googlenet",
        "googlenet",
        "GoogLeNet_Weights",
        {"fpn": (1, 2, 3, 4), "dense": (2, 3, 4), "ssd": (3, 4), "last": (4,)},
        "GoogLeNet (Inception v1)",
        # torchvision's GoogLeNet weights expect inputs scaled to [-1, 1] (its transform_input)
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
)


def last_map_trunk(
    backbone: str,
    *,
    weights: Any = None,
    trainable_layers: int | None = None,
    frozen_bn: bool | None = None,
) -> tuple[Any, Any, bool]:
    """(backbone spec, trunk returning its last map, frozen_bn) for the heads that read one
    map (the single-object model, the backbone classifier). Batch norms are frozen when the
    trunk starts from pretrained weights unless `frozen_bn` says otherwise."""
    from visiontool import registry
    from visiontool.io.weights import weights_kind

    spec = registry.get("backbone", backbone)
    frozen = weights_kind(weights) != "none" if frozen_bn is None else bool(frozen_bn)
    body = spec.build(weights=weights, trainable_layers=trainable_layers, fpn=False,
                      returned_layers=None, frozen_bn=frozen)  # fmt: skip
    return spec, body, frozen


def build_backbone(
    family: Family,
    *,
    weights: Any = None,
    trainable_layers: int | None = None,
    fpn: bool = True,
    returned_layers: list[int] | tuple[int, ...] | None = None,
    extra_blocks: str = "pool",
    frozen_bn: bool | None = None,
    fpn_channels: int = FPN_CHANNELS,
) -> Any:
    """Build `family` as a detection backbone (see the module docstring for the layouts).

    `weights`: None/"none" (random init), "DEFAULT" (torchvision ImageNet weights, downloaded
    once and cached) or a path to a classifier state dict. `frozen_bn` (default: on exactly when
    weights are loaded, as torchvision) swaps BatchNorm for FrozenBatchNorm2d.
    `trainable_layers` counts stages from the top (default 3 with weights, all without).
    """
    kind = weights_kind(weights)
    pretrained = kind != "none"
    frozen = pretrained if frozen_bn is None else bool(frozen_bn)
    classifier = _classifier(family, frozen_bn=frozen)
    trunk, prefix = _trunk(family, classifier)
    from visiontool.models.parts import freeze_batchnorm, stages_of

    stages = stages_of(trunk)
    if pretrained:
        _load_trunk_weights(
            classifier, family, weights, kind, [f"{prefix}{p}" for s in stages for p in s]
        )
    if frozen and family.kind == "googlenet":
        freeze_batchnorm(trunk)  # GoogLeNet hard-codes BatchNorm2d; swap after loading stats
    _freeze_first(trunk, stages, _trainable(family, trainable_layers, len(stages), pretrained))
    outputs = _outputs(family, trunk, stages)
    module = _assemble(family, trunk, outputs, fpn, returned_layers, extra_blocks, fpn_channels)
    module.stages = tuple(tuple(f"body.{p}" for p in stage) for stage in stages)
    return module


def _classifier(family: Family, *, frozen_bn: bool) -> Any:
    """The torchvision classifier (random init, never downloads) whose trunk we cut out."""
    import torchvision.models as tvm
    from torch import nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    if family.kind in ("resnet", "mobilenet"):
        return getattr(tvm, family.name)(weights=None, norm_layer=norm)
    if family.kind == "googlenet":
        return tvm.googlenet(weights=None, aux_logits=False, init_weights=True)
    return _vgg_features_only(_VGG_CONFIGS[family.name])


def _vgg_features_only(config: str) -> Any:
    """A VGG conv stack (torchvision's layer table `config`: "A" VGG-11, "D" VGG-16) under the
    name `features`, as in the classifier (skips the 120M-parameter classifier)."""
    from torch import nn
    from torchvision.models.vgg import cfgs, make_layers

    holder = nn.Module()
    holder.features = make_layers(cfgs[config], batch_norm=False)
    for layer in holder.features.modules():
        if isinstance(layer, nn.Conv2d):  # same init as torchvision's VGG
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(layer.bias, 0)
    return holder


def _trunk(family: Family, classifier: Any) -> tuple[Any, str]:
    """The module whose children are the stages, and its name prefix inside the classifier."""
    if family.kind in ("mobilenet", "vgg"):
        return classifier.features, "features."
    return classifier, ""


def _outputs(family: Family, trunk: Any, stages: list[tuple[str, ...]]) -> list[str | None]:
    """For each stage, the child whose output is that stage's feature map (None: no output)."""
    from torch import nn

    if family.kind == "resnet":
        return [None, "layer1", "layer2", "layer3", "layer4"]
    if family.kind == "googlenet":
        return ["conv1", "conv3", "inception3b", "inception4e", "inception5b"]
    if family.kind == "mobilenet":  # torchvision: the first (strided) block of each stage
        return [stage[0] for stage in stages]
    children = dict(trunk.named_children())  # VGG: the last ReLU before each max-pool
    return [[n for n in stage if isinstance(children[n], nn.ReLU)][-1] for stage in stages]


def _trainable(family: Family, layers: int | None, total: int, pretrained: bool) -> int:
    if layers is None:
        return min(DEFAULT_TRAINABLE, total) if pretrained else total
    if not 0 <= layers <= total:
        raise ConfigError(
            f"trainable layers for backbone {family.name!r} must be 0..{total}, got {layers}"
        )
    return layers


def _freeze_first(trunk: Any, stages: list[tuple[str, ...]], trainable: int) -> None:
    from visiontool.models.parts import matches

    frozen = [p for stage in stages[: len(stages) - trainable] for p in stage]
    for name, param in trunk.named_parameters():
        if matches(name, frozen):
            param.requires_grad_(False)


def _assemble(
    family: Family,
    trunk: Any,
    outputs: list[str | None],
    fpn: bool,
    returned_layers: list[int] | tuple[int, ...] | None,
    extra_blocks: str,
    width: int = FPN_CHANNELS,
) -> Any:
    """`width`: channels of every FPN level (or of the 1x1 reduction without FPN)."""
    from torch import nn
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

    from visiontool.models.parts import BackboneNoFPN, probe

    single = returned_layers is None and not fpn
    if returned_layers is None:
        returned_layers = family.layers["fpn"] if fpn else (len(outputs) - 1,)
    names = _returned_names(family, outputs, returned_layers)
    return_layers = {name: str(i) for i, name in enumerate(names)}
    getter = IntermediateLayerGetter(trunk, return_layers=return_layers)
    maps = probe(BackboneNoFPN(getter, 0))
    channels = [m.channels for m in maps]
    if fpn:
        if extra_blocks not in ("pool", "p6p7"):
            raise ConfigError(f"extra FPN block must be 'pool' or 'p6p7', got {extra_blocks!r}")
        extra = LastLevelMaxPool() if extra_blocks == "pool" else LastLevelP6P7(width, width)
        # BackboneWithFPN wraps the trunk in its own IntermediateLayerGetter (same keys)
        return BackboneWithFPN(trunk, return_layers, channels, width, extra_blocks=extra)
    if single:
        reduce = nn.Conv2d(channels[-1], width, kernel_size=1)
        return BackboneNoFPN(getter, width, reduce)
    return BackboneNoFPN(getter, channels[-1])


def _returned_names(
    family: Family, outputs: list[str | None], layers: list[int] | tuple[int, ...]
) -> list[str]:
    valid = [i for i, name in enumerate(outputs) if name is not None]
    layers = [int(i) for i in layers]
    if not layers or any(i not in valid for i in layers) or sorted(set(layers)) != layers:
        raise ConfigError(
            f"returned layers for backbone {family.name!r} must be increasing values from "
            f"{valid}, got {layers}"
        )
    return [outputs[i] for i in layers]  # type: ignore[misc]


def _load_trunk_weights(
    classifier: Any, family: Family, weights: Any, kind: str, prefixes: list[str]
) -> None:
    """Fill the trunk from ImageNet weights or a classifier state dict; the head is ignored."""
    from visiontool.models.parts import matches

    state, source = _weights_state(family, weights, kind)
    own = classifier.state_dict()
    wanted = [k for k in own if matches(k, prefixes) and not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k not in state]
    wrong = [k for k in wanted if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        first = missing[0] if missing else f"{wrong[0]} {tuple(state[wrong[0]].shape)}"
        raise ModelLoadError(
            f"weights in {source} do not fit backbone {family.name!r}: {len(missing)} missing "
            f"and {len(wrong)} mis-shaped trunk keys (first {first}); pass an ImageNet "
            f"{family.name} classifier state dict, DEFAULT or none"
        )
    classifier.load_state_dict({k: state[k] for k in wanted}, strict=False)


def _weights_state(family: Family, weights: Any, kind: str) -> tuple[dict[str, Any], str]:
    if kind == "default":
        import torchvision.models as tvm

        from visiontool.io.weights import ensure_downloadable

        enum = getattr(tvm, family.weights_enum).DEFAULT
        ensure_downloadable(enum.url, model=family.name, flag="--backbone-weights")
        try:
            return enum.get_state_dict(progress=False), f"torchvision {enum}"
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(
                f"could not download ImageNet weights for {family.name!r} ({exc}); "
                f"pass --backbone-weights PATH or none"
            ) from exc
    from visiontool.io.checkpoint import extract_state_dict, read_checkpoint

    path = Path(str(weights))
    return extract_state_dict(read_checkpoint(path), path), str(path)


def _register(family: Family) -> None:
    registry.add(
        "backbone",
        BackboneSpec(
            name=family.name,
            build=partial(build_backbone, family),
            layers=family.layers,
            mean=family.mean,
            std=family.std,
            weights=f"{family.weights_enum}.DEFAULT",
            family=family.kind,
            description=family.description,
        ),
    )


def build_tinyssd_base(
    *,
    weights: Any = None,
    fpn: bool = False,
    returned_layers: Any = None,
    trainable_layers: int | None = None,
    **_: Any,
) -> Any:
    """TinySSD's base network (3 -> 16 -> 32 -> 64, one map at stride 8): trained from scratch,
    so it has no pretrained weights, no FPN and one returned map."""
    if weights_kind(weights) != "none":
        raise ConfigError("backbone 'tinyssd-base' has no pretrained weights: it trains from "
                          "scratch (drop --backbone-weights)")  # fmt: skip
    if fpn:
        raise ConfigError("backbone 'tinyssd-base' has one map and no FPN: use --no-fpn")
    if returned_layers and list(returned_layers) != [2]:
        raise ConfigError(f"backbone 'tinyssd-base' returns its last block (2) only, got "
                          f"{list(returned_layers)}")  # fmt: skip
    from visiontool.models.onestage.tinyssd import TinySSDBase

    module = TinySSDBase()
    if trainable_layers is not None:
        from visiontool.models.parts import matches

        frozen = [p for s in module.stages[: len(module.stages) - trainable_layers] for p in s]
        for name, param in module.named_parameters():
            if matches(name, frozen):
                param.requires_grad_(False)
    return module


for _family in FAMILIES:
    _register(_family)
registry.add(
    "backbone",
    BackboneSpec(
        name="tinyssd-base",
        build=build_tinyssd_base,
        layers={"fpn": (2,), "dense": (2,), "ssd": (2,), "last": (2,)},
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        fpn=False,
        family="tinyssd",
        description="TinySSD base (16-32-64 convs, stride 8)",
    ),
)
