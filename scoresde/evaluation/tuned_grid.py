"""A time grid tuned for one solver at one budget on one model, with where it came from.

``scoresde.tune_grid`` returns a ``TunedGrid``; ``sample(time_grid=tuned.grid)`` takes its
grid, and ``compare`` / ``generate`` take it in a solver spec as ``grid=file:PATH``. The JSON
file holds the N evaluation times (float64, T .. eps) and the provenance: the solver spec, its
step count and planned NFE, the model (name and fingerprint), the SDE, the objective, the
seed, the train and held-out errors, and the held-out errors of the named grids it was
measured against; with decoupled network times (LD3) also ``network_grid``, the times at
which the model is asked for each grid time (``sample(network_times=...)``). A grid is
refused for another solver or another step count, since the times are tuned to one method's
error at one N.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scoresde.core.output_dir import atomic_write

FORMAT = "scoresde.tuned_grid/1"


@dataclass
class TunedGrid:
    """grid: (N,) float64 evaluation times, strictly decreasing from T to eps (the final step
    eps -> 0 is ``sample``'s, as for a named grid). solver: the solver spec it was tuned for
    (``unipc``, ``dpm_solver++:order=3``); steps, nfe: N and the solver's planned NFE at N.
    held_out_error, held_out_stderr: mean coupled error E|x - x_ref| on held-out x_T (and its
    standard error); named: the same for each named grid, {rule: [error, stderr]}.
    network_grid: None, or (N,) float64 times at which the model is asked for each grid time
    (``scoresde.core.network_times``); ``sample_options()`` gives both to ``sample``."""

    grid: Tensor
    solver: str
    steps: int
    nfe: int
    model: str = "custom"
    fingerprint: str | None = None
    sde: str = ""
    objective: str = "coupled"
    method: str = ""
    seed: int = 0
    samples: int = 0
    held_out: int = 0
    init: str = ""
    evaluations: int = 0
    train_error: float = math.nan
    held_out_error: float = math.nan
    held_out_stderr: float = math.nan
    named: dict[str, list[float]] = field(default_factory=dict)
    network_grid: Tensor | None = None

    def __post_init__(self) -> None:
        grid = torch.as_tensor(self.grid, dtype=torch.float64).flatten().cpu()
        if grid.numel() < 1 or not bool(torch.isfinite(grid).all()):
            raise ValueError("grid must hold at least one finite time")
        if grid.numel() > 1 and not bool((torch.diff(grid) < 0).all()):
            raise ValueError("grid must be strictly decreasing (from T towards eps)")
        if grid.numel() != self.steps:
            raise ValueError(f"grid has {grid.numel()} times but steps = {self.steps}")
        self.grid = grid
        if self.network_grid is not None:
            times = torch.as_tensor(self.network_grid, dtype=torch.float64).flatten().cpu()
            if times.shape != grid.shape or not bool(torch.isfinite(times).all()):
                raise ValueError(
                    f"network_grid must hold {grid.numel()} finite times, one per grid time"
                )
            self.network_grid = times

    def sample_options(self) -> dict[str, Tensor | None]:
        """``sample``'s keyword arguments for this grid: time_grid and network_times."""
        return {"time_grid": self.grid, "network_times": self.network_grid}

    def check_for(self, solver: str, steps: int | None = None) -> None:
        """A ValueError unless this grid was tuned for ``solver`` (the same spec, grid option
        aside) and, when given, ``steps``."""
        if _without_grid(solver) != _without_grid(self.solver):
            raise ValueError(
                f"grid: this grid was tuned for {self.solver!r} at {self.nfe} NFE, not for "
                f"{solver!r}; tune one for it with scoresde tune"
            )
        if steps is not None and steps != self.steps:
            raise ValueError(
                f"grid: this grid has {self.steps} steps ({self.nfe} NFE for {self.solver}), "
                f"not {steps}"
            )

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["grid"] = self.grid.tolist()
        if self.network_grid is None:  # files without network times keep the first layout
            del data["network_grid"]
        else:
            data["network_grid"] = self.network_grid.tolist()
        return json.dumps({"format": FORMAT, **data}, indent=1)

    def save(self, path: str | Path) -> Path:
        """Write the JSON file atomically (missing directories are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, self.to_json().encode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> TunedGrid:
        """Read a file written by ``save``; a ValueError names the file when it is not one."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"grid file {str(path)!r} cannot be read as JSON: {err}") from None
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise ValueError(f"grid file {str(path)!r} is not a scoresde tuned grid ({FORMAT})")
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"grid file {str(path)!r}: {err}") from None


def _without_grid(spec: str) -> str:
    return ":".join(p for p in spec.strip().split(":") if not p.startswith("grid="))
