"""Generation at scale: sharded, resumable, batch- and world-size-independent sampling.

Layout of ``out``:

    run.json             the run's identity (model and its fingerprint, solver, steps, grid,
                         seed, num, shard size, shape, dtype), written first; a rerun with
                         other values (new weights included) is refused
    shard_00000.npz ...  samples [k S, (k+1) S) as ``samples`` (n, *shape) and ``indices``,
                         each written to a temporary file and renamed into place
    manifest.json        written last (rank 0, after a barrier): identity, shards with their
                         SHA-256, NFE, wall time, world size and software versions

A rerun resumes: shards that are missing, unreadable, inconsistent or whose SHA-256 differs
from an existing manifest are regenerated. A failed write (disk full, permission) leaves the
finished shards in place and is reported with the shard's name, so the same command resumes.

Sample i's start and every noise draw depend only on (seed, i) (``IndexedNoise``), so samples
do not depend on the batch size, on which shard or process computes them, or on resuming.
With torch.distributed initialised (``torchrun --nproc-per-node N -m scoresde generate ...``)
rank r computes shards k = r, r + N, ...; gloo on CPU, NCCL on GPUs.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scoresde.core.checks import (
    MAX_STEPS,
    check_device,
    check_positive_int,
    check_sampling_dtype,
    check_seed,
)
from scoresde.core.distributed import barrier, rank_and_world
from scoresde.core.indexed_noise import IndexedNoise
from scoresde.core.output_dir import atomic_write, check_output_dir, writer_lock
from scoresde.evaluation.specs import SolverSpec
from scoresde.models import ModelSpec
from scoresde.models.check import check_model as run_model_check
from scoresde.models.fingerprint import model_fingerprint
from scoresde.sample import sample
from scoresde.solvers import registry
from scoresde.solvers.base import Solver

RUN_FILE, MANIFEST = "run.json", "manifest.json"
MAX_SHARDS = 100_000  # the resume check and the manifest visit every shard


class RunMismatchError(ValueError):
    """The output directory holds a run with other arguments."""


@dataclass
class GenerateResult:
    out: Path
    num: int
    new_samples: int
    shards: int
    nfe_per_sample: int
    network_evaluations: int  # batch-level calls made in this invocation
    seconds: float


def _shard_name(k: int) -> str:
    return f"shard_{k:05d}.npz"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_shard(path: Path, start: int, stop: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """The shard's samples if it is complete and consistent, else None (to be regenerated)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            samples, indices = z["samples"], z["indices"]
    except Exception:
        return None
    if samples.shape != (stop - start, *shape) or not np.array_equal(
        indices, np.arange(start, stop)
    ):
        return None
    if not np.isfinite(samples).all():
        return None
    return samples


def _manifest_checksums(out: Path) -> dict[str, str]:
    """file -> SHA-256 from an earlier manifest of this run (empty if there is none)."""
    try:
        shards = json.loads((out / MANIFEST).read_text())["shards"]
        return {s["file"]: s["sha256"] for s in shards}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _shard_done(path: Path, start: int, stop: int, shape, checksums: dict[str, str]) -> bool:
    if load_shard(path, start, stop, shape) is None:
        return False
    recorded = checksums.get(path.name)
    return recorded is None or recorded == _sha256(path)


def _write_shard(path: Path, data: bytes, done: int) -> None:
    try:
        atomic_write(path, data)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OSError(
            f"could not write {path} ({reason}); the {done} shard(s) finished before it are "
            "intact: free space or fix permissions, then rerun the same command to resume"
        ) from None


def _versions() -> dict[str, str]:
    from scoresde import __version__

    return {
        "scoresde": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _claim_run(out: Path, identity: dict[str, Any], rank: int) -> None:
    run_file = out / RUN_FILE
    if rank == 0:
        if run_file.exists():
            try:
                old = json.loads(run_file.read_text())
            except (OSError, ValueError):
                old = None
            if old != identity:
                diff = sorted(
                    k
                    for k in set(identity) | set(old or {})
                    if (old or {}).get(k) != identity.get(k)
                )
                raise RunMismatchError(
                    f"--out {out} holds a different run (differs in: {', '.join(diff)}); "
                    "use a new directory or the same arguments to resume"
                )
        else:
            atomic_write(run_file, json.dumps(identity, indent=2).encode())
    barrier()
    if rank != 0 and json.loads(run_file.read_text()) != identity:
        raise RunMismatchError(f"--out {out} holds a different run")


def generate(
    spec: ModelSpec,
    out: str | Path,
    *,
    num: int,
    solver: str | Solver = "dpm_solver++",
    steps: int = 20,
    batch_size: int = 64,
    seed: int = 0,
    time_grid: str = "logsnr",
    shard_size: int = 1000,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    model_name: str = "",
    progress: bool = True,
    check_model: bool = True,
) -> GenerateResult:
    """Draw samples 0..num-1 of ``spec``'s model into shards under ``out``; resumable.

    Args:
        spec: the model (``scoresde.models.load_model``).
        num: number of samples; batch_size: samples per sampler call (does not change results);
        shard_size: samples per shard file (part of the run's identity).
        solver, steps, time_grid: as in ``sample``; ``solver`` may be a spec as ``compare``
            takes it, ``name[:key=value...][:grid=rule | :grid=file:PATH]``, whose grid
            overrides ``time_grid`` (a grid file also sets the steps). Refused: ``torchsde``
            (its Brownian tree is not keyed by sample) and solvers that couple a batch
            (``pc`` with batch norms).
        seed: with the sample index, the only source of randomness.
        check_model: run ``scoresde.check_model`` first (on rank 0), warning if the model's
            adapter looks wrong (``ModelCheckWarning``).
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec (scoresde.models.load_model), got {spec!r:.60}")
    num = check_positive_int("num", num)
    batch_size = check_positive_int("batch_size", batch_size)
    shard_size = check_positive_int("shard_size", shard_size)
    n_shards = -(-num // shard_size)
    if n_shards > MAX_SHARDS:
        raise ValueError(
            f"num / shard_size = {n_shards:,} shards; at most {MAX_SHARDS:,} per run: "
            "raise shard_size"
        )
    steps = check_positive_int("steps", steps, maximum=MAX_STEPS)
    grid_times = network_times = None
    if isinstance(solver, str):
        solver_spec = SolverSpec.parse(solver)
        solver_obj = solver_spec.build()
        if solver_spec.grid is not None:
            time_grid = solver_spec.grid
        if solver_spec.times is not None:
            grid_times, steps = solver_spec.times, solver_spec.times.numel()
            network_times = solver_spec.network_times
    else:
        solver_obj = registry.get(solver)
    if solver_obj.name == "torchsde":
        raise ValueError("solver torchsde draws from a Brownian tree, not per sample; pick another")
    if solver_obj.batch_coupled:
        raise ValueError(
            f"solver {solver_obj.describe()} couples the samples of a batch (batch-mean norms), "
            "so samples would depend on the batch size; use PredictorCorrector(norms='sample')"
        )
    seed = check_seed("seed", seed)
    dtype = check_sampling_dtype(dtype)
    device = check_device("device", device)
    out = check_output_dir(out)
    grid = time_grid if grid_times is None else grid_times
    # rank 0 holds the directory's lock: a second run on it is refused while this one lives
    with writer_lock(out, hold=rank_and_world()[0] == 0):
        return _generate(
            spec, out, num, solver_obj, steps, grid, batch_size, seed, shard_size, device, dtype,
            model_name, progress, check_model, network_times,
        )  # fmt: skip


def _generate(
    spec: ModelSpec,
    out: Path,
    num: int,
    solver_obj: Solver,
    steps: int,
    grid: str | torch.Tensor,
    batch_size: int,
    seed: int,
    shard_size: int,
    device: torch.device,
    dtype: torch.dtype,
    model_name: str,
    progress: bool,
    check_model: bool,
    network_times: torch.Tensor | None = None,
) -> GenerateResult:
    """``generate`` after its arguments are checked, under the directory's lock."""
    n_shards = -(-num // shard_size)
    rank, world = rank_and_world()
    if check_model and rank == 0:
        run_model_check(spec, device=device)
    shape = tuple(spec.shape)
    identity = {
        "model": model_name,
        "model_fingerprint": model_fingerprint(spec, device),
        "solver": solver_obj.describe(),
        "steps": steps,
        "time_grid": grid if isinstance(grid, str) else grid.tolist(),
        "seed": int(seed),
        "num": num,
        "shard_size": shard_size,
        "shape": list(shape),
        "dtype": str(dtype).removeprefix("torch."),
        "sde": repr(spec.sde),
    }
    if network_times is not None:  # a grid file with decoupled network times (LD3)
        identity["network_times"] = network_times.tolist()
    _claim_run(out, identity, rank)
    mine = range(rank, n_shards, world)
    checksums = _manifest_checksums(out)
    todo = []
    for k in mine:
        start, stop = k * shard_size, min(num, (k + 1) * shard_size)
        if not _shard_done(out / _shard_name(k), start, stop, shape, checksums):
            todo.append((k, start, stop))
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        per_rank = sum(b - a for _, a, b in todo)
        bar = tqdm(total=per_rank * world, unit="sample", desc="generate", file=sys.stderr)
    began = time.perf_counter()
    calls = nfe = new = 0
    for i, (k, start, stop) in enumerate(todo):
        parts = []
        for a in range(start, stop, batch_size):
            b = min(stop, a + batch_size)
            idx = torch.arange(a, b, device=device)
            like = torch.empty((b - a, *shape), device=device, dtype=dtype)
            noise = IndexedNoise(like, idx, seed)
            sol = sample(
                spec.score,
                spec.sde,
                x_T=noise.prior(spec.sde.prior_std),
                solver=solver_obj,
                steps=steps,
                time_grid=grid,
                network_times=network_times,
                noise=noise,
                generator=torch.Generator(device=device).manual_seed(0),  # unused by design
                condition=spec.condition_for(idx),  # keyed by sample index, like the noise
            )
            parts.append(sol.samples.detach().cpu().numpy())
            calls += sol.nfe
            nfe = sol.nfe
            if bar is not None:
                bar.update((b - a) * world)
        samples = np.concatenate(parts)
        buf = io.BytesIO()
        np.savez(buf, samples=samples, indices=np.arange(start, stop))
        _write_shard(out / _shard_name(k), buf.getvalue(), len(mine) - len(todo) + i)
        new += stop - start
    if bar is not None:
        bar.close()
    barrier()
    seconds = time.perf_counter() - began
    if rank == 0:
        shards = []
        for k in range(n_shards):
            start, stop = k * shard_size, min(num, (k + 1) * shard_size)
            path = out / _shard_name(k)
            if load_shard(path, start, stop, shape) is None:
                raise RuntimeError(f"shard {path.name} is missing or invalid after generation")
            shards.append(
                {"file": path.name, "start": start, "stop": stop, "sha256": _sha256(path)}
            )
        manifest = {
            **identity,
            "nfe_per_sample": nfe or solver_obj.planned_nfe(steps),
            "shards": shards,
            "world_size": world,
            "seconds_this_invocation": round(seconds, 3),
            "versions": _versions(),
        }
        atomic_write(out / MANIFEST, json.dumps(manifest, indent=2).encode())
    return GenerateResult(
        out, num, new, n_shards, nfe or solver_obj.planned_nfe(steps), calls, seconds
    )


def read_samples(out: str | Path) -> np.ndarray:
    """All samples of a finished run, in index order, checked against the manifest."""
    out = Path(out)
    manifest = json.loads((out / MANIFEST).read_text())
    shape = tuple(manifest["shape"])
    parts = []
    for s in manifest["shards"]:
        path = out / s["file"]
        if _sha256(path) != s["sha256"]:
            raise ValueError(f"{path} does not match its checksum in the manifest")
        data = load_shard(path, s["start"], s["stop"], shape)
        if data is None:
            raise ValueError(f"{path} is incomplete or invalid")
        parts.append(data)
    return np.concatenate(parts)
