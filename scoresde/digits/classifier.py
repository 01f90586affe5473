"""The small digit classifier whose features define the Fréchet distance on digits.

Two 3x3 conv layers (32 and 64 channels, ReLU, 2x2 max-pool after each) and a 64-unit
feature layer before the 10-way linear head. ``features`` returns the 64 feature-layer
activations (after ReLU): the space in which ``scoresde.digits.metrics`` measures the Fréchet
distance, as Inception's pool features do for FID on natural images.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class DigitClassifier(nn.Module):
    """logits(x) for x (B, 1, 8, 8) in model space [-1, 1]; features(x) is (B, 64)."""

    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 2 * 2, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
