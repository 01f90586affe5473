"""Train the built-in digits model and its classifier: ``python -m scoresde.digits.train``.

Reproduces the shipped weights from a seed (same torch version, device and thread count give
the same bytes; ``model.json`` records all three and the SHA-256 of each file). Defaults are
the shipped settings; on 2 CPU cores the whole run takes about ten minutes.

The eps-network is trained with Ho et al.'s simple loss on the training split: timestep
i ~ U{1..N} of the linear DDPM table (N = 1000, beta 1e-4..0.02), x_i = sqrt(alpha_bar_i) x_0
+ sqrt(1 - alpha_bar_i) eps, loss |eps - eps_theta(x_i, i)|^2 averaged over pixels. x_0 is
uniformly dequantised within each level's bin (x_0 = -1 + (k + u) 2/17, fresh u every step),
so the network models the continuous density whose bin masses are the digit probabilities:
the one both likelihoods (PF-ODE on dequantised data, DDPM bound with a discretised decoder)
bound. Adam with linear warm-up and cosine decay; the shipped weights are the EMA ones.

The classifier is trained on the same training split, on dequantised images shifted by up to
one pixel, and must reach >= 97% accuracy on the test split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scoresde.core.schedules import DiscreteSchedule
from scoresde.digits.classifier import DigitClassifier
from scoresde.digits.data import LEVELS, load_split
from scoresde.likelihood import dequantize
from scoresde.models.unet import SmallUNet as DigitsUNet
from scoresde.training.trainer import learning_rate, seeded_module

WEIGHTS_DIR = Path(__file__).parent / "weights"
NUM_TIMESTEPS = 1000
MIN_TEST_ACCURACY = 0.97


def _shifted(x: Tensor, generator: torch.Generator) -> Tensor:
    """Each image moved by up to one pixel in each direction (background -1 fills the edge)."""
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dy, dx = torch.randint(0, 3, (2, x.shape[0]), generator=generator, device=x.device)
    pixels = torch.arange(8, device=x.device)
    rows = (pixels[None] + dy[:, None])[:, :, None]
    cols = (pixels[None] + dx[:, None])[:, None, :]
    batch = torch.arange(x.shape[0], device=x.device)[:, None, None]
    return padded[:, 0][batch, rows, cols].unsqueeze(1)


def train_classifier(
    *, seed: int, steps: int = 3000, batch: int = 128, lr: float = 2e-3, device: str = "cpu"
) -> tuple[DigitClassifier, dict]:
    """Cross-entropy on shifted, dequantised training digits; returns the model and its stats."""
    train, test = load_split("train"), load_split("test")
    gen = torch.Generator(device).manual_seed(seed)
    model = seeded_module(DigitClassifier, seed).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    levels, labels = train.levels.to(device), train.labels.to(device)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup=100)
        idx = torch.randint(0, len(train), (batch,), generator=gen, device=device)
        x = _shifted(dequantize(levels[idx], levels=LEVELS, generator=gen), gen)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(test.images().to(device)).argmax(1).cpu()
    accuracy = float((pred == test.labels).float().mean())
    return model, {"steps": steps, "batch": batch, "lr": lr, "test_accuracy": accuracy}


def eps_loss(
    net: nn.Module, levels: Tensor, schedule: DiscreteSchedule, gen: torch.Generator, draws: int
) -> float:
    """Mean simple loss of ``net`` over ``draws`` (timestep, noise, dequantisation) per image."""
    device = levels.device
    alpha_bars = schedule.alphas_cumprod.to(device=device, dtype=torch.float32)
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            total += float(_simple_loss(net, levels, alpha_bars, gen))
    return total / draws


def _simple_loss(net: nn.Module, levels: Tensor, alpha_bars: Tensor, gen: torch.Generator):
    x0 = dequantize(levels, levels=LEVELS, generator=gen)
    i = torch.randint(1, NUM_TIMESTEPS + 1, (x0.shape[0],), generator=gen, device=x0.device)
    ab = alpha_bars[i - 1].view(-1, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=gen, device=x0.device)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    return (net(x_t, i.float()) - eps).pow(2).mean()


def train_unet(
    *,
    seed: int,
    steps: int = 30_000,
    batch: int = 128,
    lr: float = 2e-3,
    width: int = 16,
    ema_decay: float = 0.9995,
    device: str = "cpu",
    log_every: int = 1000,
) -> tuple[DigitsUNet, dict]:
    """The simple eps-loss on the training split; returns the EMA network and its stats."""
    train = load_split("train")
    schedule = DiscreteSchedule.linear(NUM_TIMESTEPS)
    alpha_bars = schedule.alphas_cumprod.to(device=device, dtype=torch.float32)
    gen = torch.Generator(device).manual_seed(seed)
    net = seeded_module(lambda: DigitsUNet(width=width), seed).to(device)
    ema = seeded_module(lambda: DigitsUNet(width=width), seed).to(device)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    levels = train.levels.to(device)
    recent, history = [], []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup=500)
        idx = torch.randint(0, len(train), (batch,), generator=gen, device=device)
        loss = _simple_loss(net, levels[idx], alpha_bars, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), net.parameters(), strict=True):
                p_ema.lerp_(p, 1 - ema_decay)
        recent.append(loss.detach())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            mean = float(torch.stack(recent).mean())
            history.append({"step": step + 1, "loss": mean})
            print(f"  unet step {step + 1:6d}  loss {mean:.4f}", flush=True)
            recent = []
    ema.eval()
    check = torch.Generator(device).manual_seed(seed + 1)
    stats = {
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "width": width,
        "ema_decay": ema_decay,
        "final_loss": history[-1]["loss"],
        "loss_history": history,
        "ema_train_loss": eps_loss(ema, levels, schedule, check, draws=20),
        "ema_test_loss": eps_loss(ema, load_split("test").levels.to(device), schedule, check, 20),
    }
    return ema, stats


def _save(module: nn.Module, path: Path) -> str:
    state = {k: v.detach().cpu().contiguous().float() for k, v in module.state_dict().items()}
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scoresde.digits.train", description=__doc__)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=30_000, help="eps-network steps")
    p.add_argument("--classifier-steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="directory for the weights")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    classifier, cls_stats = train_classifier(
        seed=args.seed, steps=args.classifier_steps, device=args.device
    )
    print(f"classifier test accuracy {cls_stats['test_accuracy']:.4f}", flush=True)
    if cls_stats["test_accuracy"] < MIN_TEST_ACCURACY:
        raise SystemExit(f"classifier test accuracy below {MIN_TEST_ACCURACY}")
    cls_stats["seconds"] = round(time.perf_counter() - start, 1)
    t_unet = time.perf_counter()
    unet, unet_stats = train_unet(
        seed=args.seed,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        width=args.width,
        device=args.device,
    )
    unet_stats["seconds"] = round(time.perf_counter() - t_unet, 1)
    meta = {
        "seed": args.seed,
        "command": "python -m scoresde.digits.train " + " ".join(argv or []),
        "torch": torch.__version__,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "data": {
            "source": "sklearn.datasets.load_digits (1797 images, 8x8, levels 0..16)",
            "split": "train_test_split(test_size=0.25, stratify=target, random_state=0)",
            "train_size": len(load_split("train")),
            "test_indices": load_split("test").indices.tolist(),
            "model_space": "x = -1 + (k + 1/2) * 2/17 (bin centres); training draws x = "
            "-1 + (k + u) * 2/17, u ~ U[0, 1) (uniform dequantisation)",
            "levels": LEVELS,
        },
        "schedule": {"kind": "DDPM linear", "num_timesteps": NUM_TIMESTEPS, "beta": [1e-4, 0.02]},
        "time_label": "label = N t = 1000 t (the DDPM timestep i at t = i/N, float in between)",
        "unet": unet_stats,
        "classifier": cls_stats,
        "sha256": {
            "unet.pt": _save(unet, args.out / "unet.pt"),
            "classifier.pt": _save(classifier, args.out / "classifier.pt"),
        },
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    (args.out / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out} in {meta['total_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
