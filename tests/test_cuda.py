"""Solver checks on a CUDA device; skipped cleanly where none is present."""

import pytest
import torch

import scoresde as sd
from scoresde.evaluation.targets import mixture_2d

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

SOLVERS = [
    "euler_maruyama",
    "reverse_diffusion",
    "ddpm_ancestral",
    "ode_euler",
    "ode_heun",
    "pc",
    "annealed_langevin",
    "torchsde",
    "ode_rk45",
    "ode_dopri5",
]


@pytest.mark.parametrize("solver", SOLVERS)
def test_solver_on_cuda_keeps_device_and_is_deterministic(solver):
    g, sde = mixture_2d(), sd.VPSDE()
    seen = set()

    def score(x, t):
        seen.add((x.device.type, t.device.type, t.shape))
        return g.score(x, t, sde)

    def run():
        gen = torch.Generator(device="cuda").manual_seed(0)
        return sd.sample(score, sde, (512, 2), solver=solver, steps=50, generator=gen)

    a, b = run(), run()
    assert a.samples.device.type == "cuda"
    assert seen == {("cuda", "cuda", (512,))}
    assert torch.equal(a.samples, b.samples)
    ref = g.sample(512, torch.Generator().manual_seed(1))
    assert (a.samples.mean(0).cpu() - ref.mean(0)).abs().max() < 0.3


def test_half_precision_network_with_float32_state():
    g, sde = mixture_2d(), sd.VPSDE()
    score = sd.score_from_eps(lambda x, t: g.eps(x.float(), t.float(), sde).half(), sde)
    sol = sd.sample(
        score, sde, (256, 2), steps=50, generator=torch.Generator(device="cuda").manual_seed(0)
    )
    assert sol.samples.dtype == torch.float32 and torch.isfinite(sol.samples).all()


def test_likelihood_on_cuda_matches_cpu():
    g, sde = mixture_2d(), sd.VPSDE()
    x = g.sample(256, torch.Generator().manual_seed(0), dtype=torch.float64)
    score = g.exact_score(sde)
    cpu = sd.log_likelihood(score, sde, x, rtol=1e-6, atol=1e-6)
    gpu = sd.log_likelihood(score, sde, x.cuda(), rtol=1e-6, atol=1e-6)
    assert gpu.log_prob.device.type == "cuda"
    torch.testing.assert_close(gpu.log_prob.cpu(), cpu.log_prob, atol=1e-6, rtol=0)


def test_generator_on_cpu_for_cuda_samples_is_refused():
    with pytest.raises(ValueError, match="generator is on cpu"):
        sd.sample(lambda x, t: -x, sd.VPSDE(), (4, 2), device="cuda", generator=torch.Generator())


@pytest.mark.parametrize("solver", ["ddim", "dpm_solver++", "edm_heun", "ode_heun"])
def test_cuda_matches_cpu_for_deterministic_solvers(solver):
    """A deterministic solver from the same x_T gives the same samples on both (float64)."""
    g, sde = mixture_2d(), sd.VPSDE()
    x_T = sde.prior_sample((256, 2), generator=torch.Generator().manual_seed(0)).double()
    score = g.exact_score(sde)
    opts = {"steps": 20, "denoise": True}
    cpu = sd.sample(score, sde, x_T=x_T, solver=solver, generator=torch.Generator(), **opts)
    gpu = sd.sample(score, sde, x_T=x_T.cuda(), solver=solver,
                    generator=torch.Generator(device="cuda"), **opts)  # fmt: skip
    torch.testing.assert_close(gpu.samples.cpu(), cpu.samples, rtol=1e-9, atol=1e-9)


def test_generate_with_a_model_on_cuda(tmp_path):
    """The fingerprint probe runs where the model lives."""
    from scoresde.commands.generate import generate, read_samples
    from scoresde.models import ModelSpec

    net = torch.nn.Linear(2, 2).cuda()
    sde = sd.VPSDE()
    spec = ModelSpec(sd.score_from_eps(lambda x, t: net(x), sde), sde, (2,))
    generate(spec, tmp_path, num=8, steps=5, device="cuda", progress=False)
    assert read_samples(tmp_path).shape == (8, 2)


def test_digits_model_on_cuda_matches_cpu():
    """The shipped digits network on the GPU: the same deterministic DDIM samples as on the
    CPU (float32 convolutions differ in the last bits), and a few training steps run there."""
    from scoresde.digits.train import train_unet

    x_T = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = {}
    for device in ("cpu", "cuda"):
        spec = sd.load_model("digits")
        spec.score.net.to(device)
        sol = sd.sample(spec.score, spec.sde, x_T=x_T.to(device), solver="ddim", steps=20)
        out[device] = sol.samples.cpu()
    torch.testing.assert_close(out["cuda"], out["cpu"], rtol=1e-3, atol=1e-3)
    result = train_unet(None, seed=0, steps=20, device="cuda", progress=False)
    assert next(result.network.parameters()).device.type == "cuda"
    assert result.meta["loss_curve"][-1]["loss"] > 0


def test_peak_memory_with_a_requires_grad_network_is_flat():
    """Issue 27's figure: peak CUDA memory of a 20-step run with a requires_grad network is
    at most 1.2x that of the same network with requires_grad off."""
    from toy_model import TrainableEps

    net = TrainableEps().cuda()
    sde = sd.VPSDE()
    score = sd.score_from_eps(net, sde)

    def peak(requires_grad):
        net.requires_grad_(requires_grad)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        gen = torch.Generator(device="cuda").manual_seed(0)
        out = sd.sample(score, sde, (64, 3, 32, 32), solver="dpm_solver++", steps=20,
                        generator=gen).samples  # fmt: skip
        torch.cuda.synchronize()
        assert not out.requires_grad
        return torch.cuda.max_memory_allocated() - base

    frozen, trainable = peak(False), peak(True)
    assert trainable <= 1.2 * frozen


@pytest.mark.parametrize("path", ["ddpm-linear", "edm", "rectified-flow"])
def test_training_on_cuda_is_deterministic_and_loads(tmp_path, path):
    """A few trainer steps on the GPU: same seed, same weights; the model directory loads
    and samples there."""
    from scoresde.models.builtins import BUILTIN_DATA, builtin

    data = builtin(BUILTIN_DATA, "digits", "data")
    runs = [
        sd.train(data, tmp_path / f"m{i}", path=path, steps=20, device="cuda", progress=False)
        for i in range(2)
    ]
    a, b = (r.network.state_dict() for r in runs)
    assert all(v.device.type == "cuda" and torch.equal(v, b[k]) for k, v in a.items())
    spec = sd.load_model(str(tmp_path / "m0"))
    spec.score.net.to("cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    sol = sd.sample(spec.score, spec.sde, (64, *spec.shape), solver="ddim", steps=10, generator=gen)
    assert sol.samples.device.type == "cuda" and torch.isfinite(sol.samples).all()
