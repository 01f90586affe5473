"""Sampling keeps no autograd graph unless asked (``grad=True``), even when the network's
parameters require grad, as they do after ``from_pretrained``."""

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import scoresde as sd
from scoresde.commands.cli import main
from scoresde.models import load_model

HERE = Path(__file__).parent
TRAINABLE = f"{HERE / 'toy_model.py'}:build_trainable"


@contextmanager
def saved_for_backward():
    """Bytes of every tensor autograd saves for a backward pass while the block runs: the
    memory a kept graph retains (zero when no graph is built)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


@pytest.fixture
def spec():
    spec = load_model(TRAINABLE)
    assert all(p.requires_grad for p in spec.score.net.parameters())
    return spec


@pytest.mark.parametrize("solver", ["dpm_solver++", "euler_maruyama", "ode_dopri5", "unipc"])
def test_sample_keeps_no_graph_by_default(spec, solver):
    gen = torch.Generator().manual_seed(0)
    with saved_for_backward() as kept:
        sol = sd.sample(spec.score, spec.sde, (8, *spec.shape), solver=solver, steps=10,
                        generator=gen)  # fmt: skip
    assert not sol.samples.requires_grad and sol.samples.grad_fn is None
    assert kept[0] == 0


def test_grad_true_lets_gradients_flow_to_the_parameters(spec):
    net = spec.score.net

    def run(grad):
        gen = torch.Generator().manual_seed(1)
        return sd.sample(spec.score, spec.sde, (4, *spec.shape), solver="dpm_solver++", steps=6,
                         generator=gen, grad=grad).samples  # fmt: skip

    with saved_for_backward() as kept:
        out = run(True)
    assert out.requires_grad and kept[0] > 0  # the check above can fail
    loss = out.square().sum()
    (g,) = torch.autograd.grad(loss, net.out.bias)
    # central finite difference of the same loss in one bias entry
    h = 1e-3
    with torch.no_grad():
        net.out.bias[0] += h
        up = run(False).square().sum()
        net.out.bias[0] -= 2 * h
        down = run(False).square().sum()
        net.out.bias[0] += h
    fd = (up - down) / (2 * h)
    assert float(g[0]) == pytest.approx(float(fd), rel=2e-2)


def test_retained_memory_is_flat_with_a_requires_grad_network(spec):
    """The acceptance figure: retained memory with a requires_grad network is at most 1.2x
    that of the same network with requires_grad off (here both retain nothing but x)."""

    def retained(requires_grad):
        spec.score.net.requires_grad_(requires_grad)
        gen = torch.Generator().manual_seed(0)
        with saved_for_backward() as kept:
            out = sd.sample(spec.score, spec.sde, (16, *spec.shape), solver="dpm_solver++",
                            steps=20, generator=gen).samples  # fmt: skip
        return kept[0] + out.numel() * out.element_size()

    frozen, trainable = retained(False), retained(True)
    assert trainable <= 1.2 * frozen


def test_compare_generate_and_likelihood_keep_no_graph(spec, tmp_path):
    with saved_for_backward() as kept:
        main(["compare", "--model", TRAINABLE, "--nfe", "4", "--solvers", "ddim,ode_heun",
              "--samples", "8", "--replicates", "2", "--reference", "ode_heun:20",
              "--sde-reference", "euler_maruyama:20", "--no-progress"])  # fmt: skip
        main(["generate", "--model", TRAINABLE, "--num", "6", "--steps", "4",
              "--out", str(tmp_path), "--no-progress"])  # fmt: skip
    assert kept[0] == 0
    x = torch.randn(3, *spec.shape, generator=torch.Generator().manual_seed(2))
    res = sd.log_likelihood(spec.score, spec.sde, x, rtol=1e-3, atol=1e-3)
    assert not res.log_prob.requires_grad and not res.z.requires_grad
