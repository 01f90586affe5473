"""The trainer: denoising score matching under any path, prediction, weighting and time
proposal, written out as a model directory that ``--model DIR`` samples with no flags.

One step, for a global batch of B rows and W processes (W = 1 without torch.distributed):

    rows  = B indices ~ U{0..N-1}                   the trainer's generator (seeded), on every
    x_0   = data.transform(rows)                    process alike: the whole global batch's
    t, r  = t_sampler(B), noise ~ N(0, I)           draws, in this order
    loss  = mean over this process's B / W rows of denoising_loss(...)   (scoresde.training.losses)
    Adam on the gradient averaged over processes (DistributedDataParallel), after clipping its
    global norm; lr = linear warm-up, then cosine decay to 0; EMA of the weights with decay
    min(ema_decay, (1 + k) / (10 + k)) at step k (the usual warm-up, so that short runs are not
    dominated by the initial weights).

So every process draws the same numbers and takes its share: the weights after k steps do not
depend on W, up to float reassociation in the gradient's all-reduce (gloo on CPU, NCCL on
GPUs). Network initial weights come from the seed too, without touching the global RNG.

Checkpoints (every ``checkpoint_every`` steps and at the end): checkpoint-<step>.safetensors
(network, EMA, Adam's moments, the generator's state) and checkpoint.json (step, settings,
loss curve, the tensors file's SHA-256), each written atomically and the JSON last; the older
tensors file is removed only after the JSON names the new one. ``resume=True`` continues from
the checkpoint with the same settings (a different setting is refused by name), and gives the
same bytes as an uninterrupted run on the same machine, thread count and process count.

The model directory (``scoresde.models.directory``) holds the EMA weights and a model.json with
every setting, the data split, the loss curve, the held-out loss and timings.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn
from tqdm import tqdm

from scoresde.core.adapters import scaled_time
from scoresde.core.checks import check_device, check_positive_int, check_seed
from scoresde.core.distributed import barrier, rank_and_world
from scoresde.core.output_dir import atomic_write, check_output_dir, writer_lock
from scoresde.core.path_specs import path_from_spec
from scoresde.core.preconditioning import EDMPreconditioning
from scoresde.core.sde import SDE
from scoresde.models.directory import MODEL_FILE, write_model_dir
from scoresde.models.networks import build_network, network_config
from scoresde.training.data import TrainingData
from scoresde.training.losses import TRAIN_PREDICTIONS, denoising_loss
from scoresde.training.time_samplers import T_SAMPLERS, TimeSampler, time_sampler_from
from scoresde.training.weightings import WEIGHTINGS, EDMWeight, MinSNR, Weighting, weighting_from

CHECKPOINT_FILE = "checkpoint.json"
LABEL_SCALE = 1000.0  # the network's label is 1000 t (N t on a table of N steps)

# each path's usual recipe: (prediction, weighting, t_sampler)
RECIPES: dict[str, tuple[str, str, str]] = {
    "ddpm-linear": ("eps", "simple", "discrete"),
    "ddpm-cosine": ("eps", "simple", "discrete"),
    "vp-discrete": ("eps", "simple", "discrete"),
    "ddpm-zsnr": ("v", "simple", "discrete"),
    "vp-linear": ("eps", "simple", "uniform"),
    "vp-cosine": ("eps", "simple", "uniform"),
    "subvp": ("eps", "simple", "uniform"),
    "ve": ("eps", "simple", "uniform"),
    "edm": ("edm", "edm", "lognormal"),
    "rectified-flow": ("flow", "simple", "logit_normal"),
    "cosine": ("v", "simple", "uniform"),
}


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of a training run (all written to model.json). ``prediction``,
    ``weighting`` and ``t_sampler`` default to the path's recipe (``RECIPES``); the warm-up
    is at most a fifth of the steps."""

    path: str = "ddpm-linear"
    prediction: str | None = None
    weighting: str | None = None
    t_sampler: str | None = None
    min_snr_gamma: float = 5.0
    sigma_data: float = 0.5
    t_min: float = 1e-5
    steps: int = 30_000
    batch: int = 128
    lr: float = 2e-3
    warmup: int = 500
    ema_decay: float = 0.9995
    grad_clip: float = 1.0
    width: int = 16
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 100

    def resolved(self) -> TrainSettings:
        """The settings with the recipe filled in, each checked (errors name the setting)."""
        path_from_spec(self.path)
        name = self.path.partition(":")[0]
        recipe = RECIPES.get(name, ("eps", "simple", "uniform"))
        out = replace(
            self,
            warmup=min(self.warmup, self.steps // 5),
            prediction=self.prediction or recipe[0],
            weighting=self.weighting or recipe[1],
            t_sampler=self.t_sampler or recipe[2],
        )
        if out.prediction not in TRAIN_PREDICTIONS:
            raise ValueError(
                f"prediction must be one of {', '.join(TRAIN_PREDICTIONS)}, got {out.prediction!r}"
            )
        if out.weighting not in WEIGHTINGS:
            raise ValueError(
                f"weighting must be one of {', '.join(WEIGHTINGS)}, got {out.weighting!r}"
            )
        if out.t_sampler not in T_SAMPLERS:
            raise ValueError(
                f"t_sampler must be one of {', '.join(T_SAMPLERS)}, got {out.t_sampler!r}"
            )
        for name in ("steps", "batch", "width", "checkpoint_every", "log_every"):
            check_positive_int(name, getattr(out, name))
        check_positive_int("warmup", out.warmup, minimum=0)
        check_seed("seed", out.seed)
        for name, low, high in (
            ("lr", 0.0, 1.0),
            ("ema_decay", 0.0, 1.0),
            ("t_min", 0.0, 0.5),
            ("grad_clip", 0.0, math.inf),
            ("min_snr_gamma", 0.0, math.inf),
            ("sigma_data", 0.0, math.inf),
        ):
            value = getattr(out, name)
            if not (isinstance(value, int | float) and low < value < high):
                raise ValueError(f"{name} must lie in ({low:g}, {high:g}), got {value!r}")
        return out

    def weighting_object(self) -> Weighting:
        if self.weighting == "min_snr":
            return MinSNR(self.min_snr_gamma)
        if self.weighting == "edm":
            return EDMWeight(self.preconditioning())
        return weighting_from(self.weighting)

    def sampler_object(self) -> TimeSampler:
        sampler = time_sampler_from(self.t_sampler)
        if hasattr(sampler, "t_min") and self.t_sampler != "discrete":
            sampler.t_min = self.t_min
        return sampler

    def preconditioning(self) -> EDMPreconditioning:
        return EDMPreconditioning(self.sigma_data, LABEL_SCALE)


@dataclass
class TrainResult:
    """What ``train`` returns: the model directory (or None), the EMA network and model.json."""

    out: Path | None
    network: nn.Module
    meta: dict[str, Any]


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def seeded_module(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """A module with initial weights from ``seed``, the global RNG left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _objective(cfg: TrainSettings, sde: SDE):
    """loss(model, x0, t, noise): the batch mean of ``denoising_loss`` under ``cfg``."""
    weighting, sampler, pre = cfg.weighting_object(), cfg.sampler_object(), cfg.preconditioning()
    label = scaled_time(_label_scale(sde))

    def loss(model: nn.Module, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return denoising_loss(
            model, sde, x0, prediction=cfg.prediction, weighting=weighting, t_sampler=sampler,
            time_label=label, preconditioning=pre, t=t, noise=noise,
        ).mean()  # fmt: skip

    return loss


@dataclass
class _Progress:
    """Where training stands: steps done, the loss curve so far, seconds spent."""

    step: int = 0
    loss_curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class _Models:
    """The network, its EMA copy, Adam and the generator: what a checkpoint holds."""

    def __init__(self, net: nn.Module, ema: nn.Module, generator: torch.Generator) -> None:
        self.net, self.ema, self.generator = net, ema, generator
        self.ema.load_state_dict(net.state_dict())
        self.ema.requires_grad_(False)
        self.opt = torch.optim.Adam(net.parameters())

    @classmethod
    def build(cls, config, network, seed: int, lr: float, device: torch.device) -> _Models:
        """The package's network of ``config`` with initial weights from ``seed`` (or the
        given ``network``), and a generator seeded with ``seed``."""
        if network is None:
            net = seeded_module(lambda: build_network(config), seed).to(device)
            ema = seeded_module(lambda: build_network(config), seed).to(device)
        else:
            net, ema = network.to(device), copy.deepcopy(network).to(device)
        models = cls(net, ema, torch.Generator(device).manual_seed(seed))
        models.set_lr(lr)
        return models

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def update(self, loss: Tensor, step: int, clip: float, ema_decay: float) -> None:
        """One Adam step on ``loss`` after clipping the gradient's norm at ``clip``; then the
        EMA with decay min(ema_decay, (1 + step) / (10 + step))."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), clip)
        self.opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), self.net.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)

    def tensors(self) -> dict[str, Tensor]:
        return {
            **{f"net.{k}": v for k, v in self.net.state_dict().items()},
            **{f"ema.{k}": v for k, v in self.ema.state_dict().items()},
            **_optimizer_tensors(self.opt),
            "generator": self.generator.get_state(),
        }

    def restore(self, tensors: dict[str, Tensor]) -> None:
        self.net.load_state_dict(_prefixed("net.", tensors))
        self.ema.load_state_dict(_prefixed("ema.", tensors))
        _load_optimizer(self.opt, tensors)
        self.generator.set_state(tensors["generator"])


def _label_scale(sde: SDE) -> float:
    n = getattr(getattr(sde, "schedule", None), "num_timesteps", None)
    return float(n) if n else LABEL_SCALE


class _Checkpoint:
    """checkpoint.json and its tensors file in ``out`` (module doc)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def write(self, step: int, tensors: dict[str, Tensor], record: dict[str, Any]) -> None:
        name = f"checkpoint-{step:08d}.safetensors"
        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        atomic_write(self.out / name, data)
        old = self.read_json()
        record = {
            **record,
            "step": step,
            "tensors": name,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        atomic_write(self.out / CHECKPOINT_FILE, (json.dumps(record) + "\n").encode())
        if old is not None and old["tensors"] != name:
            (self.out / old["tensors"]).unlink(missing_ok=True)

    def read_json(self) -> dict[str, Any] | None:
        file = self.out / CHECKPOINT_FILE
        return json.loads(file.read_text()) if file.is_file() else None

    def read(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        record = self.read_json()
        if record is None:
            raise ValueError(f"resume: {self.out} has no {CHECKPOINT_FILE} to resume from")
        file = self.out / record["tensors"]
        data = file.read_bytes() if file.is_file() else b""
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise ValueError(f"resume: {file} is missing or differs from {CHECKPOINT_FILE}")
        return record, load_file(file)

    def resume(self, models: _Models, settings: dict[str, Any]) -> _Progress:
        """Restore ``models`` from the checkpoint, refusing one written with other settings."""
        record, tensors = self.read()
        if record["settings"] != settings:
            diff = [k for k in settings if record["settings"].get(k) != settings[k]]
            raise ValueError(f"resume: the checkpoint was written with other settings: {diff}")
        models.restore(tensors)
        return _Progress(record["step"], record["loss_curve"], record["seconds"])


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    out = {}
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            out[f"opt.{i}.{key}"] = torch.as_tensor(value)
    return out


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    full = opt.state_dict()
    full["state"] = state
    opt.load_state_dict(full)


def _prefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def train(
    data: TrainingData | Tensor | np.ndarray,
    out: str | Path | None = None,
    *,
    settings: TrainSettings | None = None,
    network: nn.Module | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    progress: bool = True,
    clip_x0: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Train a score model on ``data`` and write it to ``out`` as a model directory (module
    doc); ``overrides`` set fields of ``TrainSettings`` (``train(data, out, path="edm",
    steps=300)``).

    Args:
        data: a ``TrainingData``, or an array (N, ...) of samples (10 % held out, seed 0).
        out: the model directory (created; refused if it already holds a model or a
            checkpoint, unless ``resume``). None trains without writing anything.
        settings: every training setting (``TrainSettings``).
        network: an ``nn.Module`` called as net(x, label); default the package's U-Net for
            images or MLP for vectors, sized from the data's shape and ``width``.
        device: where to train ("cpu", "cuda", ...); under torchrun each process's own.
        resume: continue from ``out``'s checkpoint.
        progress: a progress bar with the loss (rank 0).
        clip_x0: sample the model with its x0 clipped to the data's range (model.json's
            x0_clip; Nichol and Dhariwal's choice for eps on DDPM's cosine table).
    """
    unknown = set(overrides) - {f.name for f in fields(TrainSettings)}
    if unknown:
        raise TypeError(f"train() got unknown settings {sorted(unknown)}")
    cfg = replace(settings or TrainSettings(), **overrides).resolved()
    if isinstance(data, Tensor | np.ndarray):
        data = TrainingData.from_array(data)
    if not isinstance(data, TrainingData):
        raise TypeError(f"data must be a TrainingData or a tensor, got {type(data).__name__}")
    device = check_device("device", device)
    rank, world = rank_and_world()
    if clip_x0 and data.data_range is None:
        raise ValueError("clip_x0: the data declares no range (TrainingData.data_range)")
    if cfg.batch % world:
        raise ValueError(f"batch ({cfg.batch}) must be divisible by the process count {world}")
    sde = path_from_spec(cfg.path)
    # one throwaway draw refuses a bad interval now (its own generator: the global RNG stays)
    cfg.sampler_object().draw(sde, 1, torch.Generator().manual_seed(0), torch.device("cpu"))

    out_dir = None if out is None else check_output_dir(out)
    if resume and out_dir is None:
        raise ValueError("resume: needs out, the directory of the interrupted run")
    net_config = network_config(data.shape, cfg.width) if network is None else None
    models = _Models.build(net_config, network, cfg.seed, cfg.lr, device)
    # rank 0 writes; its lock refuses a second run on this directory while this one lives
    with writer_lock(out_dir, hold=rank == 0):
        checkpoint, begun = None, _Progress()
        if out_dir is not None:
            checkpoint = _Checkpoint(out_dir)
            if not resume:
                for name in (MODEL_FILE, CHECKPOINT_FILE):
                    if (out_dir / name).exists():
                        raise ValueError(
                            f"out: {out_dir} already holds {name}; resume=True continues it"
                        )
            else:
                begun = checkpoint.resume(models, asdict(cfg))
        done = _fit(models, cfg, sde, data, device, checkpoint, begun, progress)
        meta = _model_record(cfg, sde, data, net_config, network, done, clip_x0, device)
        ema = models.ema.eval()
        if data.test is not None:
            meta["test_loss"] = held_out_loss(ema, sde, data, cfg, device)
        if out_dir is not None and rank == 0:
            write_model_dir(out_dir, ema.state_dict(), meta)
        barrier()
    return TrainResult(out_dir, ema, meta)


def _fit(
    models: _Models,
    cfg: TrainSettings,
    sde: SDE,
    data: TrainingData,
    device: torch.device,
    checkpoint: _Checkpoint | None,
    begun: _Progress,
    progress: bool,
) -> _Progress:
    """Run steps ``begun.step`` .. ``cfg.steps`` - 1, checkpointing on rank 0."""
    rank, world = rank_and_world()
    loss_of = _objective(cfg, sde)
    sampler = cfg.sampler_object()
    train_rows = data.train.to(device)
    loss_curve = list(begun.loss_curve)
    model = models.net
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(models.net, device_ids=ids)
    share = cfg.batch // world
    rows_here = slice(rank * share, (rank + 1) * share)
    gen = models.generator
    bar = tqdm(
        total=cfg.steps,
        initial=begun.step,
        disable=not progress or rank != 0,
        desc="train",
        unit="step",
    )
    began = time.perf_counter()
    running = torch.zeros((), device=device, dtype=torch.float64)
    since = begun.step
    for step in range(begun.step, cfg.steps):
        models.set_lr(learning_rate(step, cfg.steps, cfg.lr, cfg.warmup))
        # the whole global batch's draws, on every process alike; this process takes its share
        index = torch.randint(0, train_rows.shape[0], (cfg.batch,), generator=gen, device=device)
        x0 = data.x0_of(train_rows[index], gen)
        t, _ = sampler.draw(sde, cfg.batch, gen, device)
        noise = torch.randn(x0.shape, generator=gen, device=device, dtype=x0.dtype)
        loss = loss_of(model, x0[rows_here], t[rows_here], noise[rows_here])
        models.update(loss, step, cfg.grad_clip, cfg.ema_decay)
        running += loss.detach()
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            if world > 1:
                torch.distributed.all_reduce(running)
                running /= world
            mean = float(running) / (done - since)
            if not math.isfinite(mean):
                raise FloatingPointError(
                    f"training loss is not finite over steps {since + 1}..{done} "
                    f"(lr {cfg.lr:g}); the last checkpoint is step "
                    f"{since - since % cfg.checkpoint_every}"
                )
            loss_curve.append({"step": done, "loss": mean})
            bar.set_postfix(loss=f"{mean:.4f}")
            running.zero_()
            since = done
        bar.update(1)
        if (
            checkpoint is not None
            and rank == 0
            and (done % cfg.checkpoint_every == 0 or done == cfg.steps)
        ):
            elapsed = begun.seconds + time.perf_counter() - began
            record = {"settings": asdict(cfg), "loss_curve": loss_curve, "seconds": elapsed}
            checkpoint.write(done, models.tensors(), record)
    bar.close()
    return _Progress(cfg.steps, loss_curve, begun.seconds + time.perf_counter() - began)


def _model_record(
    cfg: TrainSettings,
    sde: SDE,
    data: TrainingData,
    net_config: dict[str, Any] | None,
    network: nn.Module | None,
    done: _Progress,
    clip_x0: bool,
    device: torch.device,
) -> dict[str, Any]:
    """model.json's content, less the held-out loss."""
    return {
        "network": net_config or {"kind": "custom", "class": type(network).__qualname__},
        "shape": list(data.shape),
        "path": cfg.path,
        "prediction": cfg.prediction,
        "time_label_scale": _label_scale(sde),
        "preconditioning": cfg.preconditioning().describe() if cfg.prediction == "edm" else None,
        "x0_clip": list(data.data_range) if clip_x0 else None,
        "evaluator": data.evaluator,
        "compare_defaults": data.compare_defaults,
        "training": {
            **asdict(cfg),
            "weighting_detail": cfg.weighting_object().describe(),
            "t_sampler_detail": cfg.sampler_object().describe(),
            "world_size": rank_and_world()[1],
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "seconds": round(done.seconds, 1),
            "command": os.environ.get("SCORESDE_COMMAND"),
        },
        "data": {"source": data.source, **data.split},
        "loss_curve": done.loss_curve,
    }


def held_out_loss(
    net: nn.Module,
    sde: SDE,
    data: TrainingData,
    cfg: TrainSettings,
    device: torch.device,
    draws: int = 8,
) -> dict[str, float]:
    """The training objective on the test rows: mean and standard error over ``draws`` passes
    of (t, noise, transform) from a fixed generator (seed + 1)."""
    gen = torch.Generator(device).manual_seed(cfg.seed + 1)
    rows = data.test.to(device)
    loss_of, sampler = _objective(cfg, sde), cfg.sampler_object()
    per_pass = []
    with torch.no_grad():
        for _ in range(draws):
            x0 = data.x0_of(rows, gen)
            t, _ = sampler.draw(sde, x0.shape[0], gen, device)
            noise = torch.randn(x0.shape, generator=gen, device=device, dtype=x0.dtype)
            per_pass.append(float(loss_of(net, x0, t, noise)))
    mean = sum(per_pass) / draws
    sd = math.sqrt(sum((v - mean) ** 2 for v in per_pass) / (draws - 1))
    return {"mean": mean, "stderr": sd / math.sqrt(draws), "draws": draws}
