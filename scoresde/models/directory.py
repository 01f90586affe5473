"""A trained model as a directory of data: weights as safetensors and a model.json.

Layout:

    model.safetensors   the network's (EMA) weights, float32, no pickle
    model.json          format, network (kind and integer settings, ``scoresde.models.networks``),
                        shape, path (a name of ``scoresde.core.path_specs``), prediction,
                        time_label_scale, EDM preconditioning, x0_clip ([low, high] or
                        null), evaluator name, compare defaults, SHA-256 of the weights, and
                        the trainer's record (settings, data split, loss curve, timings)

``load_model_dir`` reads JSON and tensors only and builds everything from names, so a model
directory never runs code of its own. The network sees label = time_label_scale * t (the DDPM
timestep on a table of 1000 steps); an EDM model's network sees c_noise (``EDMDenoiser``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from scoresde.core.adapters import Score, scaled_time
from scoresde.core.output_dir import atomic_write
from scoresde.core.path_specs import path_from_spec
from scoresde.core.preconditioning import EDMDenoiser, EDMPreconditioning
from scoresde.core.x0_correction import clip_x0
from scoresde.models.builtins import BUILTIN_EVALUATORS, builtin
from scoresde.models.networks import build_network
from scoresde.models.spec import ModelSpec, spec_from

FORMAT = "scoresde.model/1"
MODEL_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_sha256(path: Path, expected: str | None, record: str) -> None:
    """A ValueError unless ``path``'s bytes have the SHA-256 that ``record`` gives."""
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(f"model: {path} has SHA-256 {actual}, {record} says {expected}")


def write_model_dir(out: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``state`` as model.safetensors, then ``meta`` with the weights' SHA-256 as
    model.json (each atomically, the JSON last, so a directory with a model.json is whole)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    data = save(tensors)
    atomic_write(out / WEIGHTS_FILE, data)
    meta = {"format": FORMAT, **meta,
            "sha256": {WEIGHTS_FILE: hashlib.sha256(data).hexdigest()}}  # fmt: skip
    atomic_write(out / MODEL_FILE, (json.dumps(meta, indent=1) + "\n").encode())
    return out


def read_model_json(path: str | Path) -> dict[str, Any]:
    """model.json of a model directory, its format checked."""
    file = Path(path) / MODEL_FILE
    if not file.is_file():
        raise ValueError(f"model: {path} has no {MODEL_FILE}")
    meta = json.loads(file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"model: {file} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_network(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The directory's network with its weights, in eval mode with frozen parameters, after
    checking the weights' SHA-256 against model.json."""
    path = Path(path)
    meta = read_model_json(path)
    weights = path / WEIGHTS_FILE
    check_sha256(weights, meta.get("sha256", {}).get(WEIGHTS_FILE), MODEL_FILE)
    with torch.device("meta"):
        net = build_network(meta["network"])
    net.load_state_dict(load_file(weights), assign=True)
    return net.to(device).eval().requires_grad_(False)


def score_of(net: Any, meta: dict[str, Any]):
    """(sde, Score) of a network under model.json's path, prediction and time label."""
    sde = path_from_spec(meta["path"])
    if meta["prediction"] == "edm":
        pre = EDMPreconditioning(**meta["preconditioning"])
        return sde, Score(EDMDenoiser(net, sde, pre), sde, "x0")
    return sde, Score(net, sde, meta["prediction"], scaled_time(meta["time_label_scale"]))


def load_model_dir(path: str | Path) -> ModelSpec:
    """The ``ModelSpec`` of a model directory (module doc), with its evaluator if it names a
    built-in one, and its x0 clipped to ``x0_clip`` = [low, high] if model.json asks for it
    (Nichol and Dhariwal's sampling of eps-models on DDPM's cosine table, where m(T) = 5e-5
    makes x0 = (x - s eps) / m explode)."""
    meta = read_model_json(path)
    sde, score = score_of(load_network(path), meta)
    if meta.get("x0_clip"):
        low, high = (float(v) for v in meta["x0_clip"])
        score = score.with_x0_correction(clip_x0(low, high))
    evaluator = meta.get("evaluator")
    return spec_from(
        ModelSpec(
            score=score,
            sde=sde,
            shape=tuple(meta["shape"]),
            evaluator=builtin(BUILTIN_EVALUATORS, evaluator, "evaluator") if evaluator else None,
            compare_defaults=_defaults(meta.get("compare_defaults", {})),
        )
    )


def _defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """compare_defaults from JSON: lists back to the tuples compare takes."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
