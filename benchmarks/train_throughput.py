"""Training throughput of PtychoPINN on this machine; prints ONE JSON object on stdout.

What is timed: the training step itself, measured DIRECTLY (no Lightning loop, no data loading):
``loss = compute_losses(model, x, offsets, training)['loss']; loss.backward(); Adam.step(); zero_grad()``
on a fixed random batch, under ``torch.autocast(cpu/cuda, bfloat16)`` for 'bf16-mixed'. This is what the
Lightning module's ``training_step`` runs plus the optimiser step that Lightning's automatic optimisation
adds; leaving the loop out makes the number more precise (Lightning's per-step overhead is ~1 ms).

Reported per configuration (the default model, the previous default 'unet' at width 2 and the reference
'cnn' at width 2 unless ``--generators`` says otherwise; N=64, batch 16 groups,
gridsize 1 and 2, fp32 and bf16-mixed): training patterns/s (a pattern is one N x N diffraction
pattern; a gridsize-2 group holds 4)
as the median of ``repeats`` (>= 3) timed runs of ``steps`` steps after ``warmup`` steps (1 step per run
when a warm-up step takes over 5 s, e.g. bf16 on CPUs without bf16 units); the forward FLOPs per
pattern counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions/matmuls, 2 per multiply-add;
FFTs and element-wise ops are not counted); achieved training GFLOP/s = 3 x forward FLOPs x patterns/s
(backward ~ 2 x forward) and its ratio to the machine's measured fp32 matmul GFLOP/s (median of square
``--matmul-size`` matmuls). Usage: ``python benchmarks/train_throughput.py [--quick]``.
"""

from __future__ import annotations

import os

# Busy-waiting OpenMP threads steal the few cores of small machines from each other; set before torch loads.
from ptychopinn.runtime import prepare_cpu_runtime  # noqa: E402

prepare_cpu_runtime()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from contextlib import AbstractContextManager, nullcontext  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from ptychopinn.config import ModelConfig, TrainingConfig  # noqa: E402
from ptychopinn.models.pinn import PtychoPINN  # noqa: E402
from ptychopinn.training.losses import compute_losses  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(size: int, repeats: int, device: torch.device) -> float:
    """Median fp32 GFLOP/s of ``[size, size] @ [size, size]`` (2 * size**3 FLOPs each)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm-up (thread pool start, allocator)
    _sync(device)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        rates.append(2 * size**3 / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def _autocast(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def _probe(n: int) -> torch.Tensor:
    """A smooth ``[n, n]`` complex64 disc probe with a quadratic phase (a plausible focused probe)."""
    yy, xx = torch.meshgrid(torch.arange(n) - n / 2, torch.arange(n) - n / 2, indexing="ij")
    r2 = (xx**2 + yy**2) / (n / 4) ** 2
    return (torch.exp(-r2) * torch.exp(1j * 0.5 * r2)).to(torch.complex64)


def forward_flops_per_pattern(model: PtychoPINN, n: int, c: int, device: torch.device) -> float:
    """FLOPs of one forward pass (generator + physics) per diffraction pattern."""
    x = torch.rand(1, c, n, n, device=device) * 0.5
    rel = torch.zeros(1, c, 2, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x, rel)
    return counter.get_total_flops() / c


def time_training(gridsize: int, precision: str, *, n: int, nfs: int, batch: int, steps: int, warmup: int,
                  repeats: int, device: torch.device, generator: str = "unet") -> dict[str, Any]:
    """Patterns/s of forward + backward + Adam step for one configuration."""
    torch.manual_seed(0)
    cfg = ModelConfig(N=n, gridsize=gridsize, n_filters_scale=nfs, generator=generator)
    c = cfg.channels
    model = PtychoPINN(cfg, _probe(n), intensity_scale=1e3 / (n / 2)).to(device).train()
    training = TrainingConfig(batch_size=batch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, c, n, n, device=device) * 0.5
    rel = (torch.rand(batch, c, 2, device=device) - 0.5) * 8.0 if c > 1 else torch.zeros(batch, 1, 2,
                                                                                          device=device)

    def step() -> None:
        with _autocast(precision, device):
            loss = compute_losses(model, x, rel, training)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    if (time.perf_counter() - t0) / warmup > 5.0:
        steps = 1  # very slow configuration (bf16 on a CPU without bf16 units): keep the run bounded
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        runs.append(batch * c * steps / (time.perf_counter() - t0))
    flops = forward_flops_per_pattern(model.eval(), n, c, device)
    rate = statistics.median(runs)
    return {
        "generator": generator,
        "gridsize": gridsize,
        "precision": precision,
        "channels": c,
        "batch_groups": batch,
        "steps_per_run": steps,
        "patterns_per_s": round(rate, 2),
        "patterns_per_s_runs": [round(r, 2) for r in runs],
        "step_time_s": round(batch * c / rate, 4),
        "forward_gflop_per_pattern": round(flops / 1e9, 4),
        "achieved_train_gflops": round(3 * flops * rate / 1e9, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short run: 1 warm-up, 2 steps x 3 repeats")
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--n-filters-scale", type=int, default=None,
                   help="width of every generator without its own ':W' (default: ModelConfig's default)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--gridsizes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--precisions", nargs="+", default=["32", "bf16-mixed"], choices=["32", "bf16-mixed"])
    p.add_argument("--steps", type=int, default=None, help="steps per timed run (default 5; quick 2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--generators", nargs="+", default=None,
                   help="NAME or NAME:WIDTH entries measured side by side (default: the default model, the previous "
                        "default 'unet:2' and the reference 'cnn:2')")
    args = p.parse_args(argv)
    steps = args.steps if args.steps is not None else (2 if args.quick else 5)
    warmup = 1 if args.quick else 2
    device = torch.device(args.device)

    peak = matmul_gflops(args.matmul_size, 3 if args.quick else 7, device)
    results = []
    default = ModelConfig()
    width = args.n_filters_scale or default.n_filters_scale
    entries = args.generators or [f"{default.generator}:{default.n_filters_scale}", "unet:2", "cnn:2"]
    for entry in dict.fromkeys(entries):
        gen, _, w = entry.partition(":")
        nfs = int(w) if w else width
        for g in args.gridsizes:
            for prec in args.precisions:
                r = time_training(g, prec, n=args.N, nfs=nfs, batch=args.batch, steps=steps,
                                  warmup=warmup, repeats=max(3, args.repeats), device=device, generator=gen)
                r["n_filters_scale"] = nfs
                r["utilisation_vs_fp32_matmul"] = round(r["achieved_train_gflops"] / peak, 4)
                results.append(r)
    report = {
        "benchmark": "train_throughput",
        "method": "direct forward+backward+Adam step on a fixed batch (no Lightning loop, no data loading)",
        "N": args.N,
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "steps_per_run_requested": steps,
        "warmup_steps": warmup,
        "fp32_matmul_gflops": round(peak, 2),
        "matmul_size": args.matmul_size,
        "results": results,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
