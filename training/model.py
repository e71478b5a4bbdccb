"""Pre-activation WideResNet (Zagoruyko & Komodakis, 2016).

Parameter names follow ``docs/reference-model.md`` (``conv``, ``blocks.N.{bn1,conv1,bn2,
conv2,shortcut}``, ``bn``, ``fc``) so externally trained weights load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """``o = relu(bn1(x)); y = conv2(drop(relu(bn2(conv1(o))))); y + shortcut(o) or x``."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = F.relu(self.bn2(self.conv1(o)))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        y = self.conv2(y)
        return y + (self.shortcut(o) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-``depth``-``width``: three groups of ``(depth - 4) / 6`` blocks at 16k, 32k, 64k channels."""

    def __init__(self, depth: int = 28, width: int = 10, num_classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1, got {depth}")
        if width < 1:
            raise ValueError(f"WideResNet width must be >= 1, got {width}")
        n = (depth - 4) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        blocks, c_in = [], 16
        for group, c_out in enumerate(widths):
            for i in range(n):
                stride = 2 if group > 0 and i == 0 else 1
                blocks.append(Block(c_in, c_out, stride, dropout))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.conv(x))
        x = F.relu(self.bn(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
