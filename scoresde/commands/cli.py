"""`scoresde` command line: compare solvers, generate samples, likelihoods, schedules, tune
grids, train models.

Errors in the user's input print one line, ``scoresde: error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Sequence

import torch

import scoresde.evaluation as cmp
from scoresde import __version__
from scoresde.core.grids import GRIDS
from scoresde.core.output_dir import check_output_dir
from scoresde.evaluation import settings as defaults
from scoresde.models.check import ModelCheckWarning
from scoresde.solvers import registry

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class UsageError(Exception):
    pass


def _csv(kind):
    def parse(text: str):
        return [kind(v) for v in text.split(",") if v.strip()]

    return parse


def _int_list(text: str) -> list[int]:
    out = []
    for v in text.split(","):
        try:
            out.append(int(v))
        except ValueError:
            raise argparse.ArgumentTypeError(f"NFE budgets must be integers, got {v!r}") from None
    return out


def _reference(text: str) -> tuple[str, int]:
    name, _, count = text.rpartition(":")
    try:
        return name, int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected solver:count, got {text!r}") from None


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        type=_csv(str),
        default=["gmm2d", "gmm8d"],
        help="comma-separated: gmm2d, gmm8d (default both)",
    )


def _add_schedule(parser: argparse.ArgumentParser, default: str | None = "linear") -> None:
    parser.add_argument(
        "--schedule",
        default=default,
        choices=sorted(cmp.SCHEDULES),
        help="noise schedule of the VP SDE on analytic targets (default linear); not with "
        "--model, which has its own",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scoresde", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compare", help="solvers x NFE budgets on analytic targets or your model")
    _add_target(c)
    c.add_argument(
        "--solvers",
        type=_csv(str),
        default=list(cmp.DEFAULT_SOLVERS),
        help="comma-separated solver specs name[:key=value...][:grid=rule], e.g. "
        f"dpm_solver++:order=3:grid=logsnr; known names: {', '.join(registry.available())} "
        f"(default {','.join(cmp.DEFAULT_SOLVERS)})",
    )
    c.add_argument(
        "--nfe",
        type=_int_list,
        default=None,
        help="comma-separated score-evaluation budgets (default "
        f"{','.join(map(str, defaults.DEFAULT_BUDGETS))}; --model digits: 10,20,50,100)",
    )
    _add_schedule(c, default=None)
    c.add_argument(
        "--path",
        type=_csv(str),
        default=None,
        help="comma-separated Gaussian paths for the analytic targets, instead of --schedule: "
        f"{', '.join(cmp.PATHS)}, each with an optional :shift=a for rectified-flow and cosine "
        "(e.g. rectified-flow:shift=3); every solver runs on every path from the same data "
        "(default: the VP SDE of --schedule)",
    )
    c.add_argument(
        "--time-grid",
        default="uniform",
        choices=list(GRIDS),
        help="time grid of solvers whose spec names none (default %(default)s)",
    )
    c.add_argument(
        "--samples",
        type=int,
        default=None,
        help=f"samples per replicate (default {defaults.DEFAULT_SAMPLES}; digits 128)",
    )
    c.add_argument(
        "--replicates",
        type=int,
        default=None,
        help="independent replicates; metrics are mean ± standard error over them "
        f"(default {defaults.DEFAULT_REPLICATES}; digits 5)",
    )
    c.add_argument(
        "--alpha",
        type=float,
        default=defaults.ALPHA,
        help="level of the paired test that decides 'at the floor' (default %(default)s)",
    )
    c.add_argument(
        "--reference",
        type=_reference,
        default=None,
        help="with --model: solver:NFE of the converged ODE reference (default "
        f"{':'.join(map(str, defaults.MODEL_REFERENCE))}; digits ode_heun:500)",
    )
    c.add_argument(
        "--sde-reference",
        type=_reference,
        default=None,
        help="solver:steps of the reverse-SDE reference on the same Brownian path "
        f"(default {':'.join(map(str, defaults.SDE_REFERENCE))}; digits euler_maruyama:1000)",
    )
    c.add_argument(
        "--seed",
        type=int,
        default=0,
        help="x_T and Brownian paths derive from it (default %(default)s)",
    )
    c.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default %(default)s)")
    c.add_argument(
        "--dtype",
        default="float32",
        choices=sorted(DTYPES),
        help="sample dtype (default %(default)s)",
    )
    c.add_argument(
        "--model",
        default=None,
        help="digits (the built-in trained model) or module:callable building your network "
        "(see scoresde.models; default: none, the analytic targets)",
    )
    c.add_argument(
        "--out",
        default=None,
        help="directory for results.json/.csv, error_vs_nfe.png and (image models) grids/ "
        "(default: none, the table is printed only)",
    )
    c.add_argument(
        "--no-progress", action="store_true", help="no progress bar on stderr (default: shown)"
    )
    c.add_argument(
        "--no-model-check",
        action="store_true",
        help="with --model: skip the adapter sanity check (scoresde.check_model; default: run)",
    )

    s = sub.add_parser("schedules", help="plot alpha_bar, log-SNR and beta of schedules")
    s.add_argument(
        "--steps", type=int, default=10, help="grid points to mark (default %(default)s)"
    )
    s.add_argument(
        "--eps", type=float, default=1e-3, help="smallest time of the grids (default %(default)s)"
    )
    s.add_argument(
        "--out",
        default="schedules.png",
        help="PNG path, or a directory for DIR/schedules.png; missing directories are created "
        "(default %(default)s)",
    )
    lk = sub.add_parser(
        "likelihood",
        help="ODE log-likelihood vs the exact density on targets; --model digits: test-set "
        "bits/dim by the PF-ODE and the DDPM bound",
    )
    _add_target(lk)
    lk.add_argument(
        "--model",
        default=None,
        help="a model whose evaluator brings a likelihood report on its data, e.g. digits "
        "(test-set bits/dim by the ODE and the DDPM bound; default: none, the analytic targets)",
    )
    lk.add_argument(
        "--samples", type=int, default=None, help="samples (default 256; digits: all 450 images)"
    )
    _add_schedule(lk)
    lk.add_argument(
        "--trace",
        default=None,
        choices=["exact", "hutchinson"],
        help="divergence (default exact; digits: hutchinson)",
    )
    lk.add_argument(
        "--probes", type=int, default=1, help="Hutchinson probes per sample (default %(default)s)"
    )
    lk.add_argument(
        "--probe",
        default="rademacher",
        choices=["rademacher", "gaussian"],
        help="Hutchinson probe distribution (default %(default)s)",
    )
    lk.add_argument(
        "--solver",
        default="dopri5",
        choices=["dopri5", "scipy"],
        help="ODE solver: torch-native dopri5 or scipy's RK45 (default %(default)s)",
    )
    lk.add_argument("--rtol", type=float, default=1e-5, help="ODE tolerance (default %(default)s)")
    lk.add_argument("--atol", type=float, default=1e-5, help="ODE tolerance (default %(default)s)")
    lk.add_argument(
        "--eps", type=float, default=1e-5, help="the ODE runs from t = eps (default %(default)s)"
    )
    lk.add_argument(
        "--seed", type=int, default=0, help="data and probe draws (default %(default)s)"
    )
    lk.add_argument("--device", default="cpu", help="cpu, cuda, ... (default %(default)s)")
    lk.add_argument(
        "--dtype", default=None, choices=sorted(DTYPES), help="(default float64; digits float32)"
    )
    gen = sub.add_parser("generate", help="draw many samples of your model into resumable shards")
    gen.add_argument(
        "--model", required=True, help="digits or module:callable (see scoresde.models)"
    )
    gen.add_argument(
        "--solver",
        default="dpm_solver++",
        help="a solver spec as compare takes it, name[:key=value...][:grid=RULE|:grid=file:PATH]"
        "; a grid file from scoresde tune also sets the steps (default %(default)s)",
    )
    gen.add_argument("--steps", type=int, default=20, help="solver steps (default %(default)s)")
    gen.add_argument(
        "--time-grid",
        default="logsnr",
        choices=list(GRIDS),
        help="(default %(default)s)",
    )
    gen.add_argument(
        "--num",
        "--num-samples",
        dest="num",
        type=int,
        required=True,
        help="number of samples (under torchrun write --num-samples: torchrun claims --num)",
    )
    gen.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="samples per sampler call; does not change the samples (default %(default)s)",
    )
    gen.add_argument(
        "--shard-size",
        type=int,
        default=1000,
        help="samples per shard file, part of the run's identity (default %(default)s)",
    )
    gen.add_argument(
        "--seed",
        type=int,
        default=0,
        help="with the sample index, all randomness (default %(default)s)",
    )
    gen.add_argument("--out", required=True, help="output directory (shards + manifest.json)")
    gen.add_argument("--device", default="cpu", help="cpu, cuda, ... (default %(default)s)")
    gen.add_argument(
        "--dtype",
        default="float32",
        choices=sorted(DTYPES),
        help="sample dtype (default %(default)s)",
    )
    gen.add_argument(
        "--no-progress", action="store_true", help="no progress bar on stderr (default: shown)"
    )
    gen.add_argument(
        "--no-model-check",
        action="store_true",
        help="skip the adapter sanity check (scoresde.check_model; default: run)",
    )
    tu = sub.add_parser(
        "tune", help="tune a time grid for one solver and budget on your model (grid file)"
    )
    tu.add_argument("--model", required=True, help="digits or module:callable")
    tu.add_argument(
        "--solver", required=True, help="a deterministic solver spec, e.g. unipc or dpm_solver++"
    )
    tu.add_argument("--nfe", type=int, required=True, help="the budget of score evaluations")
    tu.add_argument(
        "--out", default="grid.json", help="the grid file to write (default %(default)s)"
    )
    tu.add_argument("--seed", type=int, default=0, help="x_T of all runs (default %(default)s)")
    tu.add_argument(
        "--samples", type=int, default=128, help="training starts x_T (default %(default)s)"
    )
    tu.add_argument(
        "--held-out",
        type=int,
        default=512,
        help="held-out starts the table is measured on (default %(default)s)",
    )
    tu.add_argument(
        "--iterations",
        type=int,
        default=200,
        help="gradient steps through the solver, one run each (default %(default)s)",
    )
    tu.add_argument(
        "--init",
        default="best",
        help="start: best (lowest-error named grid), dp (GITS' dynamic programme over a "
        "teacher trajectory) or a grid rule (default %(default)s)",
    )
    tu.add_argument(
        "--network-times",
        action="store_true",
        help="also tune the times at which the model is asked, one per grid time (LD3's "
        "decoupled times; the grid file carries them)",
    )
    tu.add_argument("--device", default="cpu", help="cpu, cuda, ... (default %(default)s)")
    tu.add_argument(
        "--no-progress", action="store_true", help="no progress bar on stderr (default: shown)"
    )
    _add_train(sub)
    return p


def _add_train(sub) -> None:
    from scoresde.core.path_specs import PATHS
    from scoresde.training import T_SAMPLERS, TRAIN_PREDICTIONS, WEIGHTINGS, TrainSettings

    d = TrainSettings()
    tr = sub.add_parser(
        "train",
        help="train a score model under any schedule and loss; writes a model directory "
        "for --model",
    )
    tr.add_argument("--data", required=True, help="digits, or a .npy array (N, ...) of samples")
    tr.add_argument("--out", required=True, help="the model directory to write")
    tr.add_argument(
        "--schedule",
        default=d.path,
        help=f"the path to train on: {', '.join(PATHS)} (default %(default)s)",
    )
    tr.add_argument(
        "--prediction",
        choices=TRAIN_PREDICTIONS,
        help="what the network predicts (default: the schedule's usual one)",
    )
    tr.add_argument(
        "--weighting",
        choices=tuple(WEIGHTINGS),
        help="the loss weighting (default: the schedule's usual one)",
    )
    tr.add_argument(
        "--t-sampler",
        choices=tuple(T_SAMPLERS),
        help="how t is drawn (default: the schedule's usual one)",
    )
    for name, kind, text in (
        ("steps", int, "optimiser steps"),
        ("batch", int, "global batch size"),
        ("lr", float, "peak learning rate"),
        ("warmup", int, "linear warm-up steps"),
        ("ema-decay", float, "EMA decay"),
        ("grad-clip", float, "gradient norm clip"),
        ("width", int, "network width"),
        ("seed", int, "seed of weights and every draw"),
        ("checkpoint-every", int, "steps between checkpoints"),
        ("min-snr-gamma", float, "gamma of min_snr weighting"),
    ):
        default = getattr(d, name.replace("-", "_"))
        tr.add_argument(f"--{name}", type=kind, default=default,
                        help=f"{text} (default %(default)s)")  # fmt: skip
    tr.add_argument(
        "--test-fraction", type=float, default=0.1,
        help="rows of a .npy held out for the test loss (default %(default)s)",
    )  # fmt: skip
    tr.add_argument("--resume", action="store_true", help="continue --out's checkpoint")
    tr.add_argument(
        "--clip-x0",
        action="store_true",
        help="sample the model with x0 clipped to the data's range (eps on ddpm-cosine)",
    )
    tr.add_argument("--device", default="cpu", help="cpu, cuda, ... (default %(default)s)")
    tr.add_argument(
        "--no-progress", action="store_true", help="no progress bar on stderr (default: shown)"
    )


def _init_distributed(device: str) -> tuple[str, int]:
    """Under torchrun (WORLD_SIZE > 1) join the process group (NCCL for cuda, gloo on CPU) and
    pin this process's GPU; returns (device, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
    _check_device(device)
    return device, world


def _train(args: argparse.Namespace) -> int:
    from dataclasses import fields
    from pathlib import Path

    from scoresde.models.builtins import BUILTIN_DATA, builtin
    from scoresde.training import TrainingData, TrainSettings, train

    if args.data in BUILTIN_DATA:
        data = builtin(BUILTIN_DATA, args.data, "data")
    elif args.data.endswith(".npy"):
        data = TrainingData.from_npy(args.data, test_fraction=args.test_fraction, seed=0)
    else:
        raise UsageError(
            f"--data must be {', '.join(BUILTIN_DATA)} or a .npy file, got {args.data!r}"
        )
    given = {f.name: getattr(args, f.name) for f in fields(TrainSettings) if hasattr(args, f.name)}
    settings = TrainSettings(**given, path=args.schedule)
    device, world = _init_distributed(args.device)
    os.environ["SCORESDE_COMMAND"] = "scoresde " + " ".join(sys.argv[1:])
    try:
        result = train(data, args.out, settings=settings, device=device, resume=args.resume,
                       progress=not args.no_progress, clip_x0=args.clip_x0)  # fmt: skip
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        meta = result.meta
        test = meta.get("test_loss")
        print(
            f"trained {meta['prediction']} on {meta['path']} ({meta['training']['weighting']}, "
            f"{meta['training']['t_sampler']}) for {meta['training']['steps']} steps in "
            f"{meta['training']['seconds']:.0f} s: loss {meta['loss_curve'][-1]['loss']:.4f}"
            + (f", held-out {test['mean']:.4f} ± {test['stderr']:.4f}" if test else "")
        )
        print(f"wrote {Path(args.out)}; sample it with --model {args.out}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from scoresde.commands.generate import generate
    from scoresde.models import load_model

    for name in ("num", "batch_size", "shard_size", "steps"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    device, world = _init_distributed(args.device)
    spec = load_model(args.model)
    start = time.perf_counter()
    try:
        res = generate(
            spec,
            args.out,
            num=args.num,
            solver=args.solver,
            steps=args.steps,
            batch_size=args.batch_size,
            seed=args.seed,
            time_grid=args.time_grid,
            shard_size=args.shard_size,
            device=device,
            dtype=DTYPES[args.dtype],
            model_name=args.model,
            progress=not args.no_progress,
            check_model=not args.no_model_check,
        )
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    wall = time.perf_counter() - start
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"{res.num} samples in {res.shards} shards at {res.out} ({res.new_samples} new on "
            f"rank 0); NFE {res.nfe_per_sample} per sample, {res.network_evaluations} network "
            f"calls on rank 0, wall {wall:.1f} s"
        )
    return 0


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")


def _likelihood(args: argparse.Namespace) -> int:
    from scoresde.commands.likelihood_report import likelihood_report

    _check_device(args.device)
    if args.samples is not None and args.samples < 2:
        raise UsageError(f"--samples must be >= 2, got {args.samples}")
    if args.model is not None:
        from scoresde.models import load_model

        spec = load_model(args.model)
        report = getattr(spec.evaluator, "likelihood_report", None)
        if report is None:
            raise UsageError(f"--model {args.model}: the model brings no likelihood report")
        print(
            report(
                spec,
                images=args.samples,
                trace=args.trace or "hutchinson",
                rtol=args.rtol,
                atol=args.atol,
                seed=args.seed,
                device=args.device,
                dtype=DTYPES[args.dtype or "float32"],
            )
        )
        return 0
    skip = ("command", "target", "dtype", "model", "samples", "trace")
    options = {k: v for k, v in vars(args).items() if k not in skip}
    print(
        likelihood_report(
            args.target,
            samples=args.samples or 256,
            trace=args.trace or "exact",
            dtype=DTYPES[args.dtype or "float64"],
            **options,
        )
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    _check_device(args.device)
    out = check_output_dir(args.out) if args.out else None
    bar = None

    def progress(label: str) -> None:
        # the bar opens with the first run, so a usage error never prints an empty one
        nonlocal bar
        if args.no_progress:
            return
        if bar is None:
            from tqdm.auto import tqdm

            bar = tqdm(desc="compare", unit="run", file=sys.stderr, leave=False)
        bar.set_postfix_str(label)
        bar.update(1)

    start = time.perf_counter()
    collector = cmp.SampleCollector() if out is not None and args.model is not None else None
    try:
        records = cmp.compare(
            targets=args.target,
            solvers=args.solvers,
            nfe=args.nfe,
            schedule=args.schedule,
            path=args.path,
            time_grid=args.time_grid,
            samples=args.samples,
            replicates=args.replicates,
            seed=args.seed,
            device=args.device,
            dtype=DTYPES[args.dtype],
            model=args.model,
            reference=args.reference,
            sde_reference=args.sde_reference,
            alpha=args.alpha,
            progress=progress,
            on_samples=collector,
            check_model=not args.no_model_check,
        )
    finally:
        if bar is not None:
            bar.close()
    print(cmp.format_table(records))
    print("\n" + cmp.format_floor_summary(records))
    total = time.perf_counter() - start
    threads = torch.get_num_threads()
    print(f"\n{len(records)} runs in {total:.1f} s on {args.device} ({threads} threads)")
    if out is not None:
        settings = {k: v for k, v in vars(args).items() if k not in ("command", "no_progress")}
        settings.update(  # the settings in force (a model may bring its own defaults)
            nfe=sorted({r.budget for r in records}),
            samples=records[0].samples,
            replicates=records[0].replicates,
        )
        for path in cmp.write_results(records, out, settings):
            print(f"wrote {path}")
        if collector is not None:
            grids = cmp.write_sample_grids(collector, records, out)
            if grids:
                print(f"wrote {len(grids)} sample grids in {grids[0].parent}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from scoresde.commands.tune_report import tune_report

    _check_device(args.device)
    print(
        tune_report(
            args.model,
            args.solver,
            args.nfe,
            out=args.out,
            seed=args.seed,
            samples=args.samples,
            held_out=args.held_out,
            iterations=args.iterations,
            init=args.init,
            network_times=args.network_times,
            device=args.device,
            progress=not args.no_progress,
        )
    )
    return 0


def _schedules(args: argparse.Namespace) -> int:
    from scoresde.commands.schedule_report import schedule_report

    print(schedule_report(args.steps, args.eps, args.out))
    return 0


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our own warnings as one line on stderr ("scoresde: warning: ..."); others as Python's."""
    if issubclass(category, ModelCheckWarning):
        print(f"scoresde: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {
            "compare": _compare,
            "generate": _generate,
            "likelihood": _likelihood,
            "schedules": _schedules,
            "train": _train,
            "tune": _tune,
        }
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            return commands[args.command](args)
    except (UsageError, ValueError, TypeError) as e:
        print(f"scoresde: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # I/O failures (disk full, permissions): what happened, no traceback
        print(f"scoresde: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("scoresde: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
