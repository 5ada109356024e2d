"""A YOLOv2-style head (Redmon & Farhadi, "YOLO9000", 2017) over any backbone's last map.

Two 3x3 conv + BatchNorm + LeakyReLU layers on the last map (stride 32 on ResNets), then the
passthrough: the map before it (stride 16) goes through a 1x1 conv to 64 channels and a
space-to-depth by 2 (`pixel_unshuffle`: 2x2 neighbours stacked as channels, 256 of them at
stride 32), is concatenated, and one more 3x3 conv mixes both, so the fine-grained features of
small objects reach the output. A backbone that returns one map (`--returned-layers 4`, or
`tinyssd-base`) has no passthrough. Last, a 1x1 conv with A x (5 + C) outputs per cell
(A prior shapes). Direct location prediction: bx = sigmoid(tx) + cx, by = sigmoid(ty) + cy (in
cells), bw = pw exp(tw), bh = ph exp(th) (priors as fractions of the image).

Training targets: the prior with the best shape IoU in the cell holding a box's centre is
responsible for it. Its coordinates learn (sigmoid(tx), sigmoid(ty), tw, th) towards the box
(squared error, weight `coord` = 5); its objectness learns towards the IoU of its prediction with
the box; its class by cross-entropy (the paper regresses softmax probabilities; cross-entropy is
the usual modern choice and trains faster). Every other prediction whose best IoU with any box
is below `ignore` (0.6) learns objectness towards 0 with weight `noobj` (0.5). Losses are
summed per image and averaged over the batch. With `multiscale`, every 10 training batches
the input size changes to a random multiple of 32 between 0.625x and 1.375x the input size, as
the paper does (a new size every batch was 4x slower on CPU: new kernels and buffers each step).

Inference: score = sigmoid(objectness) x class probability for each box's best class, then
per-class NMS.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from visiontool.models.onestage.base import SingleShotDetector, replace_conv

# YOLOv2's VOC priors (in cells of the 13x13 grid at 416 px) as fractions of the image
VOC_PRIORS = tuple(
    (w / 13.0, h / 13.0)
    for w, h in ((1.3221, 1.73145), (3.19275, 4.00944), (5.05587, 8.09892),
                 (9.47112, 4.84053), (11.2364, 10.0071))
)  # fmt: skip
MAX_LOG_SCALE = 4.0  # tw, th clamp before exp at inference (e^4 = 55x the prior)
PASSTHROUGH_CHANNELS = 64  # the paper's 1x1 conv before space-to-depth (x 4 after it)
MULTISCALE_EVERY = 10  # training batches between input-size changes (the paper's 10)


def conv_bn_leaky(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)
    )


class YOLOv2(SingleShotDetector):
    """The YOLOv2-style detector (module docstring)."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        size: int = 416,
        priors: Sequence[tuple[float, float]] = VOC_PRIORS,
        width: int = 256,
        coord: float = 5.0,
        noobj: float = 0.5,
        ignore: float = 0.6,
        multiscale: bool = False,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ):
        from visiontool.models.parts import probe

        maps = probe(backbone)
        channels = maps[-1].channels
        super().__init__(backbone, nn.ModuleList(), num_classes=num_classes, size=size,
                         image_mean=image_mean, image_std=image_std)  # fmt: skip
        self.priors = [(float(w), float(h)) for w, h in priors]
        self.coord, self.noobj, self.ignore = float(coord), float(noobj), float(ignore)
        self.multiscale = bool(multiscale)
        self._batches = 0
        self._train_size: int | None = None
        self.neck = nn.Sequential(conv_bn_leaky(channels, width), conv_bn_leaky(width, width))
        finer = len(maps) >= 2 and maps[-2].stride * 2 == maps[-1].stride
        self.passthrough = (
            nn.Sequential(
                nn.Conv2d(maps[-2].channels, PASSTHROUGH_CHANNELS, 1, bias=False),
                nn.BatchNorm2d(PASSTHROUGH_CHANNELS),
                nn.LeakyReLU(0.1),
                nn.PixelUnshuffle(2),
            )
            if finer
            else None
        )
        mixed = width + (4 * PASSTHROUGH_CHANNELS if finer else 0)
        self.fuse = conv_bn_leaky(mixed, width) if finer else nn.Identity()
        self.out = nn.Conv2d(width, len(self.priors) * (5 + num_classes - 1), 1)
        init_objectness(self.out, len(self.priors))

    # predictions are (N, H, W, A, 5 + C): tx, ty, tw, th, objectness, class logits
    def head(self, maps: list[Tensor]) -> Tensor:
        top = self.neck(maps[-1])
        if self.passthrough is not None:
            top = self.fuse(torch.cat([top, self.passthrough(maps[-2])], dim=1))
        raw = self.out(top)
        n, _, h, w = raw.shape
        return raw.view(n, len(self.priors), -1, h, w).permute(0, 3, 4, 1, 2)

    def anchors(self, shapes: list[tuple[int, int]], device: Any = None) -> Tensor:
        """The priors centred in every cell (normalised xyxy, (H*W*A, 4)): what `anchors check`
        shows; predictions move from the cell's corner by sigmoid(t)."""
        (h, w), priors = shapes[-1], torch.tensor(self.priors, device=device)
        ys, xs = torch.meshgrid(
            (torch.arange(h, device=device) + 0.5) / h,
            (torch.arange(w, device=device) + 0.5) / w,
            indexing="ij",
        )
        centre = torch.stack([xs, ys], dim=-1).reshape(-1, 1, 2)
        return torch.cat([centre - priors / 2, centre + priors / 2], dim=-1).reshape(-1, 4)

    def decode(self, preds: Tensor) -> Tensor:
        """(N, H, W, A, 4) normalised xyxy boxes from the raw predictions."""
        _, h, w, _, _ = preds.shape
        ys, xs = torch.meshgrid(
            torch.arange(h, device=preds.device), torch.arange(w, device=preds.device),
            indexing="ij",
        )  # fmt: skip
        grid = torch.stack([xs, ys], dim=-1)[None, :, :, None].float()
        scale = preds.new_tensor([w, h]).float()
        xy = (torch.sigmoid(preds[..., :2].float()) + grid) / scale
        priors = preds.new_tensor(self.priors).float()
        wh = priors * torch.exp(preds[..., 2:4].float().clamp(max=MAX_LOG_SCALE))
        return torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)

    def forward(self, images: list[Tensor], targets: Any = None) -> Any:
        if self.training and self.multiscale:
            side = self.input_size()
            if self._batches % MULTISCALE_EVERY == 0 or self._train_size is None:
                choices = list(range(max(32, round(side * 0.625 / 32) * 32),
                                     round(side * 1.375 / 32) * 32 + 1, 32))  # fmt: skip
                self._train_size = random.Random(torch.randint(1 << 30, ()).item()).choice(choices)
            self._batches += 1
            self.transform.fixed_size = (self._train_size, self._train_size)
            try:
                return super().forward(images, targets)
            finally:
                self.transform.fixed_size = (side, side)
        return super().forward(images, targets)

    def loss(
        self, outputs: Tensor, anchors: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        preds = outputs.float()
        boxes = self.decode(preds)
        totals = {
            k: preds.new_zeros(()) for k in ("loss_box", "loss_obj", "loss_noobj", "loss_cls")
        }
        for b, target in enumerate(targets):
            parts = self._image_loss(preds[b], boxes[b], target)
            for key, value in parts.items():
                totals[key] = totals[key] + value
        count = max(1, len(targets))
        return {key: value / count for key, value in totals.items()}

    def _image_loss(
        self, pred: Tensor, boxes: Tensor, target: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        h, w, a = pred.shape[:3]
        truth = target["boxes"].float()
        objectness = torch.sigmoid(pred[..., 4])
        background = torch.ones(h, w, a, dtype=torch.bool, device=pred.device)
        if len(truth):  # predictions overlapping a box enough are not pushed to "no object"
            best = box_iou(boxes.detach().reshape(-1, 4), truth).max(dim=1).values
            background = (best < self.ignore).view(h, w, a)
        cells, prior, index = self.responsible(truth, (h, w))
        background[cells[:, 1], cells[:, 0], prior] = False
        loss = {"loss_noobj": self.noobj * (objectness[background] ** 2).sum()}
        if not len(index):
            zero = pred.new_zeros(())
            return {**loss, "loss_box": zero, "loss_obj": zero, "loss_cls": zero}
        chosen = pred[cells[:, 1], cells[:, 0], prior]
        gt = truth[index]
        centre = (gt[:, :2] + gt[:, 2:]) / 2 * pred.new_tensor([w, h])
        wh = (gt[:, 2:] - gt[:, :2]).clamp(min=1e-6)
        priors = pred.new_tensor(self.priors)[prior]
        coords = torch.cat([torch.sigmoid(chosen[:, :2]), chosen[:, 2:4]], dim=1)
        wanted = torch.cat([centre - cells.float(), torch.log(wh / priors)], dim=1)
        iou = box_iou(boxes[cells[:, 1], cells[:, 0], prior].detach(), gt).diagonal()
        return {
            **loss,
            "loss_box": self.coord * ((coords - wanted) ** 2).sum(),
            "loss_obj": ((objectness[cells[:, 1], cells[:, 0], prior] - iou) ** 2).sum(),
            "loss_cls": F.cross_entropy(
                chosen[:, 5:], target["labels"][index] - 1, reduction="sum"
            ),  # fmt: skip
        }

    def responsible(self, truth: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """For each box: its centre's cell (x, y), the prior of best shape IoU, and the box
        index; when two boxes claim one (cell, prior), the later box keeps it."""
        h, w = grid
        if not len(truth):
            empty = torch.zeros(0, dtype=torch.long, device=truth.device)
            return empty.view(0, 2), empty, empty
        centre = (truth[:, :2] + truth[:, 2:]) / 2
        cells = (centre * truth.new_tensor([w, h])).long()
        cells[:, 0].clamp_(0, w - 1)
        cells[:, 1].clamp_(0, h - 1)
        wh = truth[:, 2:] - truth[:, :2]
        priors = truth.new_tensor(self.priors)
        inter = torch.min(wh[:, None], priors[None]).prod(-1)
        shape_iou = inter / (wh.prod(-1)[:, None] + priors.prod(-1)[None] - inter)
        prior = shape_iou.argmax(dim=1)
        key = (cells[:, 1] * w + cells[:, 0]) * len(self.priors) + prior
        index = torch.arange(len(truth), device=truth.device)
        last = {int(k): int(i) for k, i in zip(key.tolist(), index.tolist(), strict=True)}
        keep = torch.tensor(sorted(last.values()), dtype=torch.long, device=truth.device)
        return cells[keep], prior[keep], keep

    def detect(self, outputs: Tensor, anchors: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        preds = outputs.float()
        boxes = self.decode(preds).reshape(preds.shape[0], -1, 4)
        objectness = torch.sigmoid(preds[..., 4]).reshape(preds.shape[0], -1)
        probs = F.softmax(preds[..., 5:], dim=-1).reshape(preds.shape[0], objectness.shape[1], -1)
        best, cls = probs.max(dim=-1)
        return [(boxes[b], objectness[b] * best[b], cls[b] + 1) for b in range(preds.shape[0])]

    def replace_class_layers(self, num_classes: int) -> list[str]:
        self.out = replace_conv(self.out, len(self.priors) * (5 + num_classes - 1))
        init_objectness(self.out, len(self.priors))
        self.num_classes = num_classes
        return [n for n, _ in self.named_parameters() if n.startswith("out.")]


def init_objectness(conv: nn.Conv2d, priors: int) -> None:
    """Start every objectness at 1% (as RetinaNet's class prior): with hundreds of cells the
    no-object loss would otherwise swamp the first steps."""
    from visiontool.models.heads.torchvision_parts import prior_bias

    with torch.no_grad():
        conv.bias.view(priors, -1)[:, 4] = prior_bias(0.01)
