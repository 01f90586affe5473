"""scikit-learn's 8x8 handwritten digits, split once and placed in model space.

``sklearn.datasets.load_digits`` holds 1797 greyscale 8x8 images with integer levels
k in {0, ..., 16} (17 levels) and their labels 0-9; it ships with scikit-learn (no download).

Split: ``train_test_split(test_size=0.25, stratify=labels, random_state=0)``, fixed forever:
1347 training and 450 test images (``split_indices``; the test indices are also recorded in
the shipped weights' metadata).

Model space: the 17 levels tile [-1, 1] in bins of width w = 2/17 and each level sits at its
bin's centre, x = -1 + (k + 1/2) w. The PF-ODE likelihood dequantises within the same bins
(``scoresde.dequantize(k, levels=17)``: y = -1 + (k + u) w, u ~ U[0, 1)) and the DDPM bound's
discretised decoder integrates over the same bins, so both bound the same discrete
probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

LEVELS = 17
BIN_WIDTH = 2.0 / LEVELS
SHAPE = (1, 8, 8)
TEST_FRACTION = 0.25
SPLIT_SEED = 0


@dataclass(frozen=True)
class DigitsSplit:
    """Integer images k (N, 1, 8, 8) int64 in {0..16}, labels (N,) and dataset indices (N,)."""

    levels: Tensor
    labels: Tensor
    indices: Tensor

    def images(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The bin centres x = -1 + (k + 1/2) 2/17 in model space, (N, 1, 8, 8)."""
        return levels_to_model(self.levels, dtype)

    def __len__(self) -> int:
        return int(self.labels.numel())


def dequantized(k: Tensor, generator: torch.Generator) -> Tensor:
    """x = -1 + (k + u) w, u ~ U[0, 1) from ``generator``: a training batch in model space
    (the trainer's transform; no checks, so no host reads inside the training loop)."""
    u = torch.rand(k.shape, generator=generator, device=k.device, dtype=torch.float32)
    return -1.0 + (k.to(torch.float32) + u) * BIN_WIDTH


def levels_to_model(k: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """x = -1 + (k + 1/2) w with w = 2/17: integer level k to its bin centre."""
    return -1.0 + (k.to(dtype) + 0.5) * BIN_WIDTH


@lru_cache(maxsize=1)
def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """(train, test) dataset indices of the fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    train, test = train_test_split(
        np.arange(labels.size),
        test_size=TEST_FRACTION,
        stratify=labels,
        random_state=SPLIT_SEED,
    )
    return np.sort(train), np.sort(test)


@lru_cache(maxsize=2)
def load_split(part: str) -> DigitsSplit:
    """The "train" or "test" part of the fixed split."""
    from sklearn.datasets import load_digits

    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    digits = load_digits()
    idx = split_indices()[0 if part == "train" else 1]
    levels = torch.as_tensor(digits.images[idx].astype(np.int64)).unsqueeze(1)
    return DigitsSplit(
        levels=levels,
        labels=torch.as_tensor(digits.target[idx].astype(np.int64)),
        indices=torch.as_tensor(idx),
    )
