"""How big and how costly a model is: parameters, FLOPs and what each feature map sees
(`visiontool models info`).

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on a real forward pass, so
whatever the model runs (convolutions, matmuls, attention) is counted as torch dispatches it,
not estimated from layer shapes. Convention: one multiply-add = 2 FLOPs, as torch counts them
(papers that quote "FLOPs" for multiply-adds give half these numbers).

Receptive fields follow the standard recurrence over the convolutions and poolings in forward
order, per spatial axis (the height axis is reported; every registry model is square):

    r_out = r_in + (k - 1) * d * j_in      (size: input pixels one position sees)
    j_out = j_in * s                       (jump: input pixels between neighbouring positions)
    start_out = start_in + ((k - 1) * d / 2 - p) * j_in   (centre of the first position's field)

with kernel k, stride s, padding p and dilation d (a dilated kernel spans (k - 1) * d + 1
inputs); the input has r = 1, j = 1, start = 0.5 (pixel i spans [i, i + 1)).

The walk follows the data, not the module list: one forward pass (on the meta device: shapes
only, no compute) tags every tensor with its field, so only the layers that run count, each
once, in execution order. Where paths meet, the field of the largest path wins: a residual
shortcut (ResNet's identity or 1x1 downsample) never enlarges the field, concatenated
branches (Inception) take the largest branch, and a gate computed from a global pooling
(squeeze-and-excitation) is left out (it would make every field the whole image).
Resampling (`F.interpolate`) scales the jump; nearest upsampling (FPN's top-down path) keeps
the field size, and its first output copies the first input, so start stays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

INPUT_START = 0.5


def count_flops(run: Callable[[], Any]) -> int:
    """FLOPs (2 x multiply-adds) of everything `run()` computes; `run` is called once, under
    `torch.no_grad()` unless it enables grad itself."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    return int(counter.get_total_flops())


FLOPS_NOTE = "FLOPs = 2 x multiply-adds"
TWO_STAGE_FLOPS_NOTE = "; random weights: the RoI head runs on every proposal the RPN keeps"
FIELD_NOTE = (
    "r: input pixels one position sees; j: input pixels between neighbouring positions; "
    "start: centre of the first position's field (pixel i spans [i, i+1)). Shortcuts and "
    "gates never enlarge r (it follows the main path); concatenated branches take the largest."
)


def describe_model(
    name: str, *, imgsz: int | None = None, backbone: str | None = None
) -> dict[str, Any]:
    """What `visiontool models info` prints, as one JSON-ready dict: the registry model `name`
    built with random weights (offline), optionally over `backbone` (models composed over one:
    the recipes and the single-object model), at `imgsz` x `imgsz` (default: its own input
    size): parameters per part (`parameter_groups`), FLOPs per image (`count_flops`) and the
    receptive field of each stage and feature map (`receptive_fields`)."""
    import torch

    from visiontool import registry
    from visiontool.errors import ConfigError
    from visiontool.models.factory import create_model

    spec = registry.get("model", name)
    arch: dict[str, Any] = {}
    if backbone is not None:
        takes = [s.name for s in registry.specs("model")
                 if not s.hidden and (s.composes or s.task == "single")]  # fmt: skip
        if spec.name not in takes:
            raise ConfigError(
                f"--backbone applies to models composed over a backbone ({', '.join(takes)}); "
                f"{spec.name!r} has its own"
            )
        arch["backbone"] = registry.get("backbone", backbone).name
    if imgsz is not None and imgsz < 1:
        raise ConfigError(f"--imgsz must be a positive number of pixels, got {imgsz}")
    torch.manual_seed(0)  # the same random weights (and so the same detector proposals) each run
    model = create_model(spec.name, weights=None, **arch).eval()
    info = model.model_info
    size = int(imgsz or info.input_size)
    boxes = _set_input_size(model, info, size)  # a detector's interface: a list of images
    first = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    channels = 3 if boxes or first is None else int(first.in_channels)  # LeNet: grayscale
    groups = parameter_groups(model)
    image = torch.rand(channels, size, size)
    forward = (lambda: model([image])) if boxes else (lambda: model(image[None]))
    flops = _on_input(spec.name, size, lambda: count_flops(forward))
    two_stage = hasattr(model, "rpn")  # its FLOPs depend on the proposals kept
    model.to("meta")  # the fields need shapes only
    x = torch.empty(1, channels, size, size, device="meta")
    trunk = getattr(model, "backbone", None)
    if not boxes:
        fields = _on_input(spec.name, size, lambda: receptive_fields(model, x))
    elif trunk is not None:
        stages = "backbone.body" if hasattr(trunk, "body") else "backbone"
        run = getattr(model, "feature_maps", trunk)  # one-stage detectors add extra blocks
        fields = _on_input(spec.name, size,
                           lambda: receptive_fields(model, x, stages=stages, run=run))  # fmt: skip
    else:
        fields = []
    return {
        "name": spec.name,
        "task": info.task,
        "backbone": info.build.get("backbone"),
        "weights": info.weights,
        "input": [channels, size, size],
        "parameters": {
            "total": sum(g.total for g in groups),
            "trainable": sum(g.trainable for g in groups),
            "groups": [asdict(g) for g in groups],
        },
        "flops": flops,
        "flops_note": FLOPS_NOTE + (TWO_STAGE_FLOPS_NOTE if two_stage else ""),
        "receptive_fields": [f.to_dict() for f in fields],
        "receptive_field_note": FIELD_NOTE,
    }


def _set_input_size(model: Any, info: Any, size: int) -> bool:
    """Make a model that resizes its own inputs (a detector: its head says how; the
    single-object model) resize them to `size`, so a square image stays square. False for a
    classifier: it takes a batch tensor of the size it is given."""
    from visiontool.models.factory import head_of

    head = head_of(info)
    if head is not None:
        head.set_input_size(model, size)
    elif hasattr(model, "set_input_size"):
        model.set_input_size(size)
    else:
        return False
    return True


def _on_input(name: str, size: int, run: Callable[[], Any]) -> Any:
    """`run()`, with a model that cannot take a `size` x `size` input as a usage error."""
    from visiontool.errors import ConfigError

    try:
        return run()
    except (RuntimeError, ValueError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(
            f"model {name!r} does not run on a {size}x{size} input ({first}); try another --imgsz"
        ) from None


# --- parameters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterGroup:
    """Parameters of one part of a model (a top-level child, or a part of its backbone)."""

    name: str
    total: int
    trainable: int


def parameter_groups(model: Any) -> list[ParameterGroup]:
    """Parameters per top-level child of `model`, in module order; a child named `backbone`
    with several parts holding parameters (a detector's body and FPN, an SSD's features and
    extra layers) is split into them. Parts without parameters are left out; parameters held by
    `model` itself form the group "(own)". Each parameter counts once (shared ones too), so the
    groups add up to the model's total."""
    parts: list[str] = []
    for name, child in model.named_children():
        holding = [n for n, c in child.named_children() if _holds_parameters(c)]
        if name == "backbone" and len(holding) > 1:
            parts.extend(f"{name}.{n}" for n in holding)
        parts.append(name)  # what the parts above leave (parameters held by it directly)
    totals = {part: [0, 0] for part in [*parts, "(own)"]}
    for name, parameter in model.named_parameters():  # shared parameters are listed once
        part = next((p for p in parts if name.startswith(p + ".")), "(own)")
        totals[part][0] += parameter.numel()
        totals[part][1] += parameter.numel() if parameter.requires_grad else 0
    return [ParameterGroup(part, total, trainable)
            for part, (total, trainable) in totals.items() if total]  # fmt: skip


def _holds_parameters(module: Any) -> bool:
    return next(module.parameters(), None) is not None


# --- receptive fields --------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """The receptive field of the positions of a feature map, along one axis, in input pixels:
    `size` (r) each position sees, `jump` (j) between neighbouring positions (the stride so
    far), `start` the centre of the first position's field. `size` is infinite for a global
    feature (after a global pooling or a fully connected layer)."""

    size: float
    jump: float
    start: float

    @classmethod
    def input(cls) -> Field:
        return cls(1.0, 1.0, INPUT_START)

    @property
    def is_global(self) -> bool:
        return math.isinf(self.size)

    def through(
        self, kernel: float, stride: float = 1, padding: float = 0, dilation: float = 1
    ) -> Field:
        """The field after a convolution or pooling layer (the recurrence above)."""
        if self.is_global:
            return self
        return Field(
            size=self.size + (kernel - 1) * dilation * self.jump,
            jump=self.jump * stride,
            start=self.start + ((kernel - 1) * dilation / 2 - padding) * self.jump,
        )

    def everything(self) -> Field:
        return Field(math.inf, self.jump, self.start)


@dataclass(frozen=True)
class StageField:
    """The field of one stage output (`kind` "stage") or one feature map a head sees ("map"),
    with the output's shape (channels, height, width) for one input image."""

    name: str
    kind: str
    shape: tuple[int, ...]
    field: Field

    def to_dict(self) -> dict[str, Any]:
        field = asdict(self.field)
        if self.field.is_global:
            field["size"] = None  # JSON has no infinity: null = the whole input
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape), **field}


def receptive_fields(
    model: Any, x: Any, *, stages: str = "", run: Callable[[Any], Any] | None = None
) -> list[StageField]:
    """The receptive field of each stage of `model`'s submodule `stages` (a dotted path; ""
    is `model` itself) and of each feature map `run(x)` returns (default `model(x)`), from one
    forward pass on `x`, a batch of one image (on the meta device it costs nothing).

    Stages are the children of the `stages` module that run a convolution or pooling, in the
    order they run (the blocks of a ModuleList count as children), looked for one level down
    while a single child holds them all (a `features` Sequential). Feature maps are the 4-D
    tensors `run` returns: one tensor, a list, or a dict such as a detector backbone's pyramid.
    Names are paths from `model` (e.g. "backbone.body.layer2")."""
    import torch
    from torch import nn

    tracker = _Tracker()
    outputs: dict[str, tuple[Field | None, tuple[int, ...]]] = {}
    layers: list[str] = []
    root = model.get_submodule(stages)
    path = f"{stages}." if stages else ""
    names = {module: path + name if name else stages for name, module in root.named_modules()}

    def record(module: Any, args: Any, output: Any) -> None:
        name = names[module]
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            layers.append(name)
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            outputs[name] = (tracker.field(output), tuple(output.shape[1:]))

    hooks = [module.register_forward_hook(record) for module in names]
    try:
        with torch.no_grad(), tracker:
            tracker.tag(x, Field.input())
            returned = (run or model)(x)
    finally:
        for hook in hooks:
            hook.remove()
    rows = []
    for name in _stage_names(root, path, layers):
        field, shape = outputs.get(name, (None, ()))
        if field is not None:
            rows.append(StageField(name, "stage", shape, field))
    for name, tensor in _maps(returned):
        field = tracker.field(tensor)
        if field is not None:
            rows.append(StageField(name, "map", tuple(tensor.shape[1:]), field))
    return rows


def _stage_names(root: Any, path: str, layers: list[str]) -> list[str]:
    """The children of `root` that ran a conv/pool layer (see `receptive_fields`), in the
    order they first ran."""

    def first_run(name: str) -> int | None:
        return next((i for i, layer in enumerate(layers)
                     if layer == name or layer.startswith(name + ".")), None)  # fmt: skip

    node = root
    while True:
        found = [(n, c) for n, c in _called_children(node, path) if first_run(n) is not None]
        if len(found) != 1 or next(found[0][1].children(), None) is None:
            break
        path, node = found[0][0] + ".", found[0][1]
    return sorted((n for n, _ in found), key=lambda n: first_run(n) or 0)


def _called_children(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Children as they are called: a ModuleList's or ModuleDict's blocks, not the list."""
    from torch import nn

    for name, child in node.named_children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            yield from _called_children(child, f"{path}{name}.")
        else:
            yield path + name, child


def _maps(returned: Any) -> Iterator[tuple[str, Any]]:
    import torch

    if isinstance(returned, torch.Tensor):
        items: Any = [("output", returned)]
    elif isinstance(returned, dict):
        items = [(f"feature map {key}", value) for key, value in returned.items()]
    elif isinstance(returned, (list, tuple)):
        items = [(f"feature map {i}", value) for i, value in enumerate(returned)]
    else:
        items = []
    for name, value in items:
        if isinstance(value, torch.Tensor) and value.dim() == 4:
            yield name, value


@functools.cache
def _mode_class() -> type:
    from torch.overrides import TorchFunctionMode

    class FieldMode(TorchFunctionMode):
        def __init__(self, tracker: _Tracker) -> None:
            super().__init__()
            self.tracker = tracker

        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            self.tracker.after(func, args, kwargs, out)
            return out

    return FieldMode


class _Tracker:
    """Tags each tensor a forward pass makes with its `Field` (see the module docstring).

    A `TorchFunctionMode` sees every torch function and tensor method with its arguments, so
    functional calls (`F.max_pool2d` in FPN's extra level) count like modules. Tensors are kept
    by id (and alive) for the pass only; nothing is stored on them."""

    def __init__(self) -> None:
        self._mode = _mode_class()(self)
        self._fields: dict[int, tuple[Any, Field]] = {}

    def __enter__(self) -> _Tracker:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)

    def tag(self, tensor: Any, field: Field) -> None:
        self._fields[id(tensor)] = (tensor, field)

    def field(self, tensor: Any) -> Field | None:
        entry = self._fields.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def after(self, func: Any, args: Any, kwargs: dict[str, Any], out: Any) -> None:
        """Tag what `func(*args, **kwargs)` returned (and a tensor it wrote in place)."""
        import torch

        fields = [f for t in _flat((args, kwargs)) if isinstance(t, torch.Tensor)
                  for f in [self.field(t)] if f is not None]  # fmt: skip
        if not fields:
            return
        name = getattr(func, "__name__", "")
        rule = RULES.get(name.lstrip("_"))
        first = self.field(args[0]) if args and isinstance(args[0], torch.Tensor) else None
        if rule is not None and first is not None:
            field = rule(first, args, kwargs, out)
        else:  # the largest path wins; a global gate never does (module docstring)
            local = [f for f in fields if not f.is_global]
            field = max(local, key=lambda f: f.size) if local else fields[0]
        if name == "__setitem__":  # written in place, returns None
            self.tag(args[0], field)
        for tensor in _flat(out):
            if isinstance(tensor, torch.Tensor):
                self.tag(tensor, field)


def _flat(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _flat(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _flat(item)
    else:
        yield value


def _arg(args: Any, kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    value = kwargs.get(name, args[index] if len(args) > index else default)
    return default if value is None else value


def _first(value: Any) -> float:
    """The height-axis value of an int-or-pair layer argument."""
    return float(value[0] if isinstance(value, (list, tuple)) else value)


def _conv(field: Field, args: Any, kwargs: dict[str, Any], out: Any) -> Field:
    kernel = float(_arg(args, kwargs, 1, "weight", None).shape[-2])
    stride = _first(_arg(args, kwargs, 3, "stride", 1))
    dilation = _first(_arg(args, kwargs, 5, "dilation", 1))
    padding = _arg(args, kwargs, 4, "padding", 0)
    if isinstance(padding, str):  # "valid" or "same"
        padding = 0.0 if padding == "valid" else dilation * (kernel - 1) / 2
    return field.through(kernel, stride, _first(padding), dilation)


def _max_pool(field: Field, args: Any, kwargs: dict[str, Any], out: Any) -> Field:
    kernel = _first(_arg(args, kwargs, 1, "kernel_size", 1))
    stride = _first(_arg(args, kwargs, 2, "stride", kernel) or kernel)
    padding = _first(_arg(args, kwargs, 3, "padding", 0))
    dilation = _first(_arg(args, kwargs, 4, "dilation", 1))
    return field.through(kernel, stride, padding, dilation)


def _avg_pool(field: Field, args: Any, kwargs: dict[str, Any], out: Any) -> Field:
    kernel = _first(_arg(args, kwargs, 1, "kernel_size", 1))
    stride = _first(_arg(args, kwargs, 2, "stride", kernel) or kernel)
    return field.through(kernel, stride, _first(_arg(args, kwargs, 3, "padding", 0)))


def _adaptive_pool(field: Field, args: Any, kwargs: dict[str, Any], out: Any) -> Field:
    """A global pooling sees everything; a smaller grid pools windows as torch does when the
    sizes divide (stride in // out, kernel in - (out - 1) * stride)."""
    size_in = int(args[0].shape[-2])
    size_out = int(next(_flat(out)).shape[-2])
    if size_out == 1:
        return field.everything()
    stride = size_in // size_out
    return field.through(size_in - (size_out - 1) * stride, stride)


def _interpolate(field: Field, args: Any, kwargs: dict[str, Any], out: Any) -> Field:
    """Resampling by `scale` = in / out: the jump scales; the field grows by the inputs one
    output mixes beyond the first (nearest: none, linear: one, cubic: three; area: the
    window). Output 0 reads input 0 with "nearest" or align_corners; otherwise its centre maps
    to input coordinate 0.5 * scale - 0.5 (pixel centres aligned)."""
    if field.is_global:
        return field
    scale = int(args[0].shape[-2]) / int(next(_flat(out)).shape[-2])
    mode = str(_arg(args, kwargs, 3, "mode", "nearest"))
    taps = {"nearest": 1, "nearest-exact": 1, "bicubic": 4, "area": max(1.0, scale)}.get(mode, 2)
    aligned = mode == "nearest" or bool(_arg(args, kwargs, 4, "align_corners", False))
    return Field(
        size=field.size + (taps - 1) * field.jump,
        jump=field.jump * scale,
        start=field.start + (0.0 if aligned else (scale - 1) / 2 * field.jump),
    )


def _pad(field: Field, args: Any, kwargs: dict[str, Any], out: Any) -> Field:
    pad = _arg(args, kwargs, 1, "pad", ())
    top = float(pad[2]) if len(pad) >= 4 else 0.0
    return Field(field.size, field.jump, field.start - top * field.jump)


def _everything(field: Field, args: Any, kwargs: dict[str, Any], out: Any) -> Field:
    return field.everything()


RULES: dict[str, Callable[[Field, Any, dict[str, Any], Any], Field]] = {
    "conv2d": _conv,
    "max_pool2d": _max_pool,
    "max_pool2d_with_indices": _max_pool,
    "avg_pool2d": _avg_pool,
    "adaptive_avg_pool2d": _adaptive_pool,
    "adaptive_max_pool2d": _adaptive_pool,
    "adaptive_max_pool2d_with_indices": _adaptive_pool,
    "interpolate": _interpolate,
    "pad": _pad,
    "linear": _everything,
    "flatten": _everything,
}
"""Layers that change the field, by torch function name (leading underscores dropped); any
other function passes on the largest non-global field among its tensor inputs."""
