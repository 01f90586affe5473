"""What the trainer trains on: a train/test split in model space, and an optional per-batch
transform (dequantisation, augmentation) drawn from the trainer's generator.

``TrainingData.from_array`` checks an array once (floating or integer, rank >= 2, no NaN or
Inf, at least two rows) and splits off a seeded test fraction; ``from_npy`` reads a .npy file
without pickle. Built-in data sets (``--data NAME``) are named in
``scoresde.models.builtins`` and return a ``TrainingData`` with their evaluator's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

Transform = Callable[[Tensor, torch.Generator], Tensor]


@dataclass
class TrainingData:
    """Rows of training data and how they become x_0.

    Attributes:
        train: (N, ...) rows the trainer samples batches from (model space, or what
            ``transform`` maps there).
        test: (M, ...) held-out rows, or None.
        transform: transform(rows, generator) -> x_0 of shape (B, *shape), or None.
        shape: the shape of one sample x_0.
        split: how the rows were split (written to model.json).
        source: where the data came from (written to model.json).
        evaluator: the name of a built-in evaluator for models trained on it, or None.
        data_range: (low, high) that every x_0 lies in, or None (for ``clip_x0``).
        compare_defaults: compare's settings for such models.
    """

    train: Tensor
    test: Tensor | None
    shape: tuple[int, ...]
    transform: Transform | None = None
    split: dict[str, Any] = field(default_factory=dict)
    source: str = "array"
    evaluator: str | None = None
    data_range: tuple[float, float] | None = None
    compare_defaults: dict[str, Any] = field(default_factory=dict)

    def x0_of(self, rows: Tensor, generator: torch.Generator) -> Tensor:
        """x_0 for ``rows`` of the data (the transform, if any, draws from ``generator``)."""
        return rows if self.transform is None else self.transform(rows, generator)

    @classmethod
    def from_array(
        cls, array: np.ndarray | Tensor, *, test_fraction: float = 0.1, seed: int = 0,
        source: str = "array",
    ) -> TrainingData:  # fmt: skip
        """Float32 rows of ``array`` (N, ...), a seeded random ``test_fraction`` held out."""
        x = torch.as_tensor(np.asarray(array) if not isinstance(array, Tensor) else array)
        if x.dim() < 2:
            raise ValueError(
                f"data must have shape (N, ...) with one row per sample (rank >= 2), got "
                f"shape {tuple(x.shape)}"
            )
        if x.shape[0] < 2:
            raise ValueError(f"data must have at least 2 rows, got {x.shape[0]}")
        if not (x.dtype.is_floating_point or x.dtype in (torch.int32, torch.int64, torch.uint8)):
            raise ValueError(f"data must be a floating or integer array, got dtype {x.dtype}")
        x = x.to(torch.float32)
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            row = int(bad.reshape(x.shape[0], -1).any(dim=1).nonzero()[0])
            raise ValueError(f"data has NaN or Inf values (first in row {row})")
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
        n = x.shape[0]
        n_test = round(test_fraction * n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        test_idx, train_idx = order[:n_test].sort().values, order[n_test:].sort().values
        return cls(
            train=x[train_idx],
            test=x[test_idx] if n_test else None,
            shape=tuple(x.shape[1:]),
            split={
                "rows": n,
                "test_fraction": test_fraction,
                "seed": seed,
                "test_indices": test_idx.tolist(),
            },
            source=source,
        )

    @classmethod
    def from_npy(cls, path: str | Path, *, test_fraction: float = 0.1, seed: int = 0):
        """``from_array`` of a .npy file, read with ``allow_pickle=False``."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"data: no such file {path}")
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"data: {path} is not a plain .npy array ({e})") from None
        return cls.from_array(array, test_fraction=test_fraction, seed=seed, source=str(path))
