"""LeNet-5 (LeCun et al., 1998) as the classic 32x32 digit classifier.

1x32x32 input; 5x5 convolutions with 6, 16 and 120 channels; 2x2 average pooling; tanh; fully
connected 120-84-num_classes. C3 is fully connected to S2 (the paper's sparse C3 connection table
was a 1998 compute saving that modern references drop), and the output is a plain linear layer
(logits for cross-entropy) instead of the paper's RBF units.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

INPUT_SIZE = 32


class LeNet5(nn.Module):
    """LeNet-5 for `in_channels` x 32 x 32 images; returns logits of shape (N, num_classes)."""

    # parameter-name prefixes of the conv stages, for freeze_backbone_stages
    stages = (("features.c1",), ("features.c3",), ("features.c5",))

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                c1=nn.Conv2d(in_channels, 6, kernel_size=5),  # 32 -> 28
                act1=nn.Tanh(),
                s2=nn.AvgPool2d(2),  # 28 -> 14
                c3=nn.Conv2d(6, 16, kernel_size=5),  # 14 -> 10
                act3=nn.Tanh(),
                s4=nn.AvgPool2d(2),  # 10 -> 5
                c5=nn.Conv2d(16, 120, kernel_size=5),  # 5 -> 1
                act5=nn.Tanh(),
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                f6=nn.Linear(120, 84),
                act6=nn.Tanh(),
                output=nn.Linear(84, num_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
