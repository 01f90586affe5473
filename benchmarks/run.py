"""Per-step overhead of scoresde's samplers against hand-written loops, torchsde and diffusers.

    python benchmarks/run.py            # the full table (a few minutes on 2 CPU cores)
    python benchmarks/run.py --quick    # a tiny configuration (seconds), used by the tests

Everything is measured side by side in one process, one thread (CPU), medians over repeats.
The score is cheap and analytic so the numbers show the library's own per-step cost:
Gaussian data N(0, v I) has score(x, t) = -x / (alpha_bar(t) v + 1 - alpha_bar(t)).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from functools import partial

import torch

import scoresde as sd

V_DATA = 0.5


def gaussian_score(sde: sd.VPSDE):
    sched = sde.schedule

    def score(x, t):
        ab = torch.exp(sched.log_alpha_bar(t))
        return x / (-(ab * V_DATA + 1 - ab)).view(-1, *([1] * (x.dim() - 1)))

    return score


def gaussian_eps(sde: sd.VPSDE):
    """eps(x, t) = s(t) x / (alpha_bar v + 1 - alpha_bar): per-sample coefficient, one full op."""
    sched = sde.schedule

    def eps(x, t):
        log_ab = sched.log_alpha_bar(t)
        ab = torch.exp(log_ab)
        coef = torch.sqrt(-torch.expm1(log_ab)) / (ab * V_DATA + 1 - ab)
        return x * coef.view(-1, *([1] * (x.dim() - 1)))

    return eps


def timeit(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- the reference loops -------------------------------------------------------------------------


def em_coefficients(sde, steps):
    grid = sd.make_time_grid(sde, steps, "uniform", 1e-3)
    t, t_next = grid[:-1], grid[1:]
    dt = t_next - t
    g = sde.diffusion(t)
    return grid, (1 + sde.drift_coeff(t) * dt), (-(g * g) * dt), (g * torch.sqrt(-dt))


def naive_em(score, sde, x_T, steps, gen):
    """What a user writes first: the maths, per-step tensors, fresh noise each step."""
    grid = sd.make_time_grid(sde, steps, "uniform", 1e-3).to(x_T.device, x_T.dtype)
    x, b = x_T.clone(), x_T.shape[0]
    for k in range(steps):
        t, t_next = grid[k], grid[k + 1]
        tt = t.expand(b)
        dt = t_next - t
        beta = sde.schedule.beta(t)
        drift = -0.5 * beta * x - beta * score(x, tt)
        x = x + drift * dt
        if k < steps - 1:
            x = x + torch.sqrt(beta * -dt) * torch.randn(x.shape, generator=gen, device=x.device)
    return x


def tuned_em(score, sde, x_T, steps, gen):
    """The practical CPU limit: precomputed float coefficients and times, in-place fused
    updates, one reused noise buffer."""
    grid, a, bcoef, c = em_coefficients(sde, steps)
    a, bcoef, c = a.tolist(), bcoef.tolist(), c.tolist()
    ts = list(grid.to(x_T.device, x_T.dtype)[:, None].repeat(1, x_T.shape[0]).unbind(0))
    x, buf = x_T.clone(), torch.empty_like(x_T)
    for k in range(steps):
        s = score(x, ts[k])
        x.mul_(a[k]).add_(s, alpha=bcoef[k])
        if k < steps - 1:
            x.add_(torch.randn(x.shape, generator=gen, out=buf), alpha=c[k])
    return x


def naive_ddpm(eps_fn, sched, x_T, gen):
    """Ho et al.'s loop written plainly on the alphas_cumprod table."""
    n = sched.num_timesteps
    ab = sched.alphas_cumprod.to(x_T.device, x_T.dtype)
    x, b = x_T.clone(), x_T.shape[0]
    for i in reversed(range(n)):
        t = torch.full((b,), (i + 1) / n, device=x.device, dtype=x.dtype)
        e = eps_fn(x, t)
        ab_t = ab[i]
        ab_prev = ab[i - 1] if i > 0 else torch.ones((), device=x.device, dtype=x.dtype)
        beta = 1 - ab_t / ab_prev
        x = (x - beta / torch.sqrt(1 - ab_t) * e) / torch.sqrt(1 - beta)
        if i > 0:
            var = (1 - ab_prev) / (1 - ab_t) * beta
            x = x + torch.sqrt(var) * torch.randn(x.shape, generator=gen, device=x.device)
    return x


def diffusers_ddpm(eps_fn, x_T, gen):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    sched.set_timesteps(1000)
    x, b = x_T.clone(), x_T.shape[0]
    for ts in sched.timesteps:
        t = torch.full((b,), (int(ts) + 1) / 1000, device=x.device, dtype=x.dtype)
        x = sched.step(eps_fn(x, t), ts, x, generator=gen).prev_sample
    return x


def torchsde_em(score, sde, x_T, steps, gen):
    sol = sd.sample(
        score,
        sde,
        x_T=x_T,
        solver=sd.solvers.TorchsdeSolver("euler"),
        steps=steps,
        noise="brownian",
        generator=gen,
    )
    return sol.samples


# -- the table -----------------------------------------------------------------------------------


def overhead_rows(shapes, steps, repeats, device):
    sde = sd.VPSDE()
    score = gaussian_score(sde)
    rows = []
    for shape in shapes:
        gen = torch.Generator(device=device).manual_seed(0)
        x_T = torch.randn(shape, generator=gen, device=device)

        def lib(solver, x_T=x_T, gen=gen):
            return partial(
                sd.sample, score, sde, x_T=x_T, solver=solver, steps=steps, generator=gen
            )

        t_naive = timeit(partial(naive_em, score, sde, x_T, steps, gen), repeats, device)
        t_tuned = timeit(partial(tuned_em, score, sde, x_T, steps, gen), repeats, device)
        t_em = timeit(lib("euler_maruyama"), repeats, device)
        t_ddpm = timeit(lib("ddpm_ancestral"), repeats, device)
        t_tsde = timeit(partial(torchsde_em, score, sde, x_T, steps, gen), repeats, device)
        rows.append((shape, steps, t_naive, t_tuned, t_em, t_ddpm, t_tsde))
    return rows


def diffusers_rows(shapes, repeats, device):
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return None
    sched = sd.DiscreteSchedule.linear(1000)
    sde = sd.VPSDE(sched)
    eps = gaussian_eps(sde)
    score = sd.score_from_eps(eps, sde)
    rows = []
    for shape in shapes:
        gen = torch.Generator(device=device).manual_seed(0)
        x_T = torch.randn(shape, generator=gen, device=device)
        t_diff = timeit(partial(diffusers_ddpm, eps, x_T, gen), repeats, device)
        t_naive = timeit(partial(naive_ddpm, eps, sched, x_T, gen), repeats, device)
        t_lib = timeit(
            partial(
                sd.sample, score, sde, x_T=x_T, solver="ddpm_ancestral", steps=1000, generator=gen
            ),
            repeats,
            device,
        )
        # same distribution: both end at N(0, V_DATA I) for Gaussian data
        a = diffusers_ddpm(eps, x_T, torch.Generator(device=device).manual_seed(1))
        b = sd.sample(
            score,
            sde,
            x_T=x_T,
            solver="ddpm_ancestral",
            steps=1000,
            generator=torch.Generator(device=device).manual_seed(1),
        ).samples
        rows.append(
            (
                shape,
                t_diff,
                t_naive,
                t_lib,
                float(a.var()),
                float(b.var()),
                float((a - b).abs().max()),
            )
        )
    return rows


MEMORY_SNIPPET = """
import resource, sys, torch, scoresde as sd
sys.path.insert(0, "benchmarks")
from run import gaussian_score
steps, traj = int(sys.argv[1]), sys.argv[2] == "1"
sde = sd.VPSDE()
x_T = torch.randn(64, 3 * 32 * 32, generator=torch.Generator().manual_seed(0))
sd.sample(gaussian_score(sde), sde, x_T=x_T, steps=steps, return_trajectory=traj,
          generator=torch.Generator().manual_seed(0))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory_rows(steps_list):
    rows = []
    for traj in (False, True):
        for steps in steps_list:
            out = subprocess.run(
                [sys.executable, "-c", MEMORY_SNIPPET, str(steps), str(int(traj))],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append((traj, steps, int(out.stdout.strip()) / 1024))
    return rows


def network_rows(batch, steps, repeats, device):
    sys.path.insert(0, "examples")
    from user_model import TinyEpsNet

    torch.manual_seed(0)
    net = TinyEpsNet(width=32).to(device).eval()
    n_params = sum(p.numel() for p in net.parameters())
    sched = sd.DiscreteSchedule.linear(1000)
    sde = sd.VPSDE(sched)
    score = sd.score_from_eps(lambda x, lab: net(x, lab), sde, sd.discrete_index(1000))
    gen = torch.Generator(device=device).manual_seed(0)
    x_T = torch.randn(batch, 3, 32, 32, generator=gen, device=device)
    ts = torch.full((batch,), 999, device=device)

    with torch.no_grad():
        t_net = timeit(lambda: [net(x_T, ts) for _ in range(steps)], repeats, device)
        t_lib = timeit(
            lambda: sd.sample(
                score, sde, x_T=x_T, solver="ddpm_ancestral", steps=steps, generator=gen
            ),
            repeats,
            device,
        )
    return n_params, batch, steps, t_net, t_lib


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny configuration (seconds)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    quick = args.quick
    repeats = args.repeats or (1 if quick else 5)
    shapes = [(256, 2)] if quick else [(4096, 2), (64, 3 * 32 * 32), (16, 3, 64, 64)]
    if device.type == "cuda" and not quick:
        shapes += [(256, 3, 32, 32), (1024, 3, 32, 32), (64, 3, 128, 128)]
    steps = 20 if quick else 500

    cpu = platform.processor() or platform.machine()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu}"
    print(
        f"scoresde benchmark — {name}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), medians of {repeats}"
    )

    print("\n1-2. Overhead per step (µs) with a cheap analytic score, Euler–Maruyama / DDPM")
    print(
        f"{'shape':>18} {'steps':>5} {'naive':>8} {'tuned':>8} {'scoresde EM':>11} "
        f"{'scoresde DDPM':>13} {'torchsde':>9} {'EM/tuned':>8} {'DDPM/tuned':>10} "
        f"{'torchsde/EM':>11}"
    )
    for shape, n, tn, tt, te, td, ts in overhead_rows(shapes, steps, repeats, device):
        us = lambda v, n=n: 1e6 * v / n  # noqa: E731
        print(
            f"{shape!s:>18} {n:>5} {us(tn):8.1f} {us(tt):8.1f} {us(te):11.1f} {us(td):13.1f} "
            f"{us(ts):9.1f} {te / tt:8.2f} {td / tt:10.2f} {ts / te:11.2f}"
        )

    dshapes = [(256, 2)] if quick else shapes[:3]
    rows = diffusers_rows(dshapes, repeats, device)
    print(
        "\n3. 1000-step DDPM: diffusers' DDPMScheduler loop vs a naive loop vs ddpm_ancestral (s)"
    )
    if rows is None:
        print("   diffusers not installed (pip install -e '.[bench]'); skipped")
    else:
        print(
            f"{'shape':>18} {'diffusers':>9} {'naive':>8} {'scoresde':>8} "
            f"{'diffusers/scoresde':>18} "
            f"{'var diffusers':>13} {'var scoresde':>12}"
        )
        for shape, tdf, tn, tl, va, vb, _ in rows:
            print(
                f"{shape!s:>18} {tdf:9.3f} {tn:8.3f} {tl:8.3f} {tdf / tl:18.2f} "
                f"{va:13.4f} {vb:12.4f}"
            )
        print(f"   (exact data variance {V_DATA}; both draw from the generator in the same order)")

    if device.type == "cpu":
        print("\n4. Peak resident memory (MiB), 64 x 3072 samples, Euler–Maruyama")
        steps_list = [50, 200] if quick else [100, 1000, 4000]
        for traj, n, mib in memory_rows(steps_list):
            print(f"   trajectory={'yes' if traj else 'no ':3} steps={n:5d}  peak {mib:8.1f} MiB")
        state_mib = 64 * 3072 * 4 / 2**20
        print(f"   (one state is {state_mib:.2f} MiB; a stored trajectory adds that per step)")

    n_params, b, n, t_net, t_lib = network_rows(
        4 if quick else 64, 5 if quick else 50, repeats, device
    )
    print(f"\n5. A {n_params}-parameter conv eps-network at {b} x 3 x 32 x 32, {n} DDPM steps")
    print(
        f"   network alone {1e3 * t_net / n:.2f} ms/step, sampling {1e3 * t_lib / n:.2f} ms/step, "
        f"library overhead {100 * max(0.0, t_lib - t_net) / t_lib:.1f}% of the step, "
        f"{b / t_lib:.1f} samples/s at {n} steps"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
