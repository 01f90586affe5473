"""Train the built-in digits model and its classifier: ``python -m scoresde.digits.train``.

Reproduces the shipped files from a seed (same torch version, device and thread count give
the same bytes; each record holds all three and the SHA-256 of the weights):

- ``DIR/model``: the eps-network, one call of the trainer (``scoresde.train``) with
  ``SHIPPED_SETTINGS``, the same as ``scoresde train --data digits --schedule ddpm-linear
  --steps 30000 --warmup 500 --seed 0 --checkpoint-every 1000 --out DIR/model``: Ho et al.'s
  simple loss |eps - eps_theta(x_i, i)|^2 with timestep i ~ U{1..N} of the linear DDPM table
  (N = 1000, beta 1e-4..0.02), x_0 uniformly dequantised within each level's bin afresh in
  every batch (``scoresde.digits.data``), Adam with warm-up and cosine decay, EMA weights.
- ``DIR/weights``: the classifier behind the data-side metrics, trained on the same split on
  dequantised images shifted by up to one pixel; it must reach >= 97% test accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import Tensor

from scoresde.digits import CLASSIFIER_FILE, CLASSIFIER_RECORD, training_data
from scoresde.digits.classifier import DigitClassifier
from scoresde.digits.data import LEVELS, load_split
from scoresde.likelihood import dequantize
from scoresde.training.trainer import TrainResult, learning_rate, seeded_module, train

MIN_TEST_ACCURACY = 0.97
# the shipped U-Net's settings beyond the trainer's defaults (the seed is main's --seed)
SHIPPED_SETTINGS = {"path": "ddpm-linear", "steps": 30_000, "warmup": 500, "checkpoint_every": 1000}


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


def train_unet(
    out: str | Path | None, *, seed: int, device: str = "cpu", progress: bool = True, **settings
) -> TrainResult:
    """The shipped eps-network's training: ``scoresde.train`` on the digits' split with
    ``SHIPPED_SETTINGS`` (``settings`` override them, e.g. ``steps`` for a short run)."""
    return train(
        training_data(), out, device=device, progress=progress,
        **{**SHIPPED_SETTINGS, "seed": seed, **settings},
    )  # fmt: skip


def write_classifier(out: Path, model: DigitClassifier, record: dict) -> dict:
    """``out``/classifier.safetensors and its record (settings, accuracy, SHA-256)."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().float() for k, v in model.state_dict().items()}
    data = save(state)
    (out / CLASSIFIER_FILE).write_bytes(data)
    record = {**record, "sha256": hashlib.sha256(data).hexdigest()}
    (out / CLASSIFIER_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scoresde.digits.train", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="a new folder for model/ and weights/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=SHIPPED_SETTINGS["steps"], help="U-Net steps")
    p.add_argument("--classifier-steps", type=int, default=3000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    # the trainer records the command that made the model (model.json's training.command)
    os.environ["SCORESDE_COMMAND"] = " ".join([p.prog, *(argv or [])])
    start = time.perf_counter()
    classifier, stats = train_classifier(
        seed=args.seed, steps=args.classifier_steps, device=args.device
    )
    print(f"classifier test accuracy {stats['test_accuracy']:.4f}", flush=True)
    if stats["test_accuracy"] < MIN_TEST_ACCURACY:
        raise SystemExit(f"classifier test accuracy below {MIN_TEST_ACCURACY}")
    write_classifier(
        args.out / "weights",
        classifier,
        {
            "seed": args.seed,
            "command": "python -m scoresde.digits.train",
            "torch": torch.__version__,
            "device": args.device,
            "threads": torch.get_num_threads(),
            **stats,
            "seconds": round(time.perf_counter() - start, 1),
        },
    )
    result = train_unet(
        args.out / "model", seed=args.seed, steps=args.steps, device=args.device,
        progress=not args.no_progress,
    )  # fmt: skip
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s "
          f"(held-out loss {result.meta['test_loss']})", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
