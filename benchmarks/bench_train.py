"""Training-step throughput on CPU: our GanTrainer step vs pytorch/examples' DCGAN step.

Same architecture and init (64x64, batch 64, ngf = ndf = 64, nz = 100), same process, same
thread count and allocator settings; arms interleaved A/B/A/B so machine load hits both alike.
Reports peak RSS of a fresh process running each step at 128x128, batch 64.

    .venv/bin/python benchmarks/bench_train.py [--threads 1] [--rounds 7] [--steps 2] [--variants] [--no-rss]

With --threads 1 (the default) the ratio is taken from
the CPU seconds each arm used, which neighbours' load does not inflate; wall img/s is printed too.
The headline ratio is the median of the per-round ratios. Run it through ``make bench`` (which
exports the project's glibc malloc settings) or export them yourself: both arms share the
process, so they share the allocator, and the JSON records the settings.

Ends with one JSON line: {"benchmark": "train_step_cpu", "ours": img/s, "baseline": img/s, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import torch

from gan_assets.model.config import TrainConfig
from gan_assets.model.train import GanTrainer, StepOptions
from reference_dcgan import ReferenceDCGAN


def make_config(image_size: int, batch_size: int) -> TrainConfig:
    return TrainConfig(image_size=image_size, latent_dim=100, generator_width=64, discriminator_width=64,
                       batch_size=batch_size, steps=1, ema=True, device="cpu")


def batches(config: TrainConfig, count: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(config.batch_size, 1, config.image_size, config.image_size, generator=gen) * 2 - 1
            for _ in range(count)]


def time_steps(step, data: list[torch.Tensor]) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall seconds, CPU seconds of this process) for one pass over ``data``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for real in data:
        step(real)
    return time.perf_counter() - wall, time.process_time() - cpu


def rss_child(arm: str, image_size: int, batch_size: int, steps: int) -> None:
    config = make_config(image_size, batch_size)
    data = batches(config, 1)
    if arm == "ours":
        step = GanTrainer(config, "cpu").train_step
    else:
        step = ReferenceDCGAN(config, "cpu").step
    for _ in range(steps):
        step(data[0])
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak_rss(arm: str, image_size: int, batch_size: int, steps: int, threads: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--rss-child", arm, "--size", str(image_size),
                          "--batch", str(batch_size), "--steps", str(steps), "--threads", str(threads)],
                         check=True, capture_output=True, text=True, env=os.environ.copy())
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7, help="A/B rounds")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per arm per round")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both arms (1: robust on a shared machine)")
    parser.add_argument("--variants", action="store_true", help="also time ours in NCHW / without fused Adam")
    parser.add_argument("--no-rss", action="store_true", help="skip the 128x128 peak-RSS runs")
    parser.add_argument("--rss-child", choices=("ours", "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args.rss_child, args.size, args.batch, args.steps)
        return

    config = make_config(args.size, args.batch)
    data = batches(config, args.steps)
    cpu_default = StepOptions.for_device(torch.device("cpu"))
    arms = {"ours": GanTrainer(config, "cpu").train_step, "reference": ReferenceDCGAN(config, "cpu").step}
    if args.variants:
        arms["ours_nchw"] = GanTrainer(config, "cpu", options=replace(cpu_default, channels_last=False)).train_step
        arms["ours_foreach_adam"] = GanTrainer(config, "cpu", options=replace(cpu_default, fused_adam=False)).train_step
    for step in arms.values():  # warm-up: oneDNN primitive caches, allocator
        time_steps(step, data[:2])
    wall = {name: [] for name in arms}
    cpu = {name: [] for name in arms}
    for round_index in range(args.rounds):
        for name, step in arms.items():
            w, c = time_steps(step, data)
            wall[name].append(w)
            cpu[name].append(c)
            print(f"round {round_index + 1}/{args.rounds} {name:>20}: {len(data) * args.batch / w:8.1f} img/s wall, "
                  f"{len(data) * args.batch / c:8.1f} img per CPU-s", flush=True)
    images = args.rounds * len(data) * args.batch
    rate_wall = {name: images / sum(s) for name, s in wall.items()}
    rate_cpu = {name: images / sum(s) for name, s in cpu.items()}
    # On a shared machine wall time mostly measures the neighbours; with one thread, the CPU
    # time this process used is the work each step does, so that is the headline there.
    basis = "cpu" if args.threads == 1 else "wall"
    rate = rate_cpu if basis == "cpu" else rate_wall
    seconds = cpu if basis == "cpu" else wall
    # The headline ratio is the median over rounds of ours vs the reference measured next to it,
    # which a burst of load on the machine moves less than the pooled totals.
    round_ratios = [ref / ours for ref, ours in zip(seconds["reference"], seconds["ours"], strict=True)]
    for name in arms:
        print(f"{name:>20}: {rate_wall[name]:8.1f} img/s wall ({rate_wall[name] / rate_wall['reference']:.2f}x), "
              f"{rate_cpu[name]:8.1f} img per CPU-s ({rate_cpu[name] / rate_cpu['reference']:.2f}x reference)")
    print(f"ours / reference per round: {', '.join(f'{r:.3f}' for r in round_ratios)}; "
          f"median {statistics.median(round_ratios):.3f}")
    result = {
        "benchmark": "train_step_cpu",
        "ours": round(rate["ours"], 2),
        "baseline": round(rate["reference"], 2),
        "unit": "img/s" if basis == "wall" else "img per CPU-second",
        "ratio": round(statistics.median(round_ratios), 3),
        "ratio_basis": f"{basis} time, median of per-round ratios",
        "round_ratios": [round(r, 3) for r in round_ratios],
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "options": str(StepOptions.for_device(torch.device("cpu"))),
        "ratio_wall": round(rate_wall["ours"] / rate_wall["reference"], 3),
        "ratio_cpu_time": round(rate_cpu["ours"] / rate_cpu["reference"], 3),
        "baseline_name": "pytorch/examples dcgan/main.py step (Sigmoid+BCELoss, 3 backward passes, .item() per step)",
        "image_size": args.size, "batch_size": args.batch, "threads": args.threads,
        "rounds": args.rounds, "steps_per_round": args.steps,
        "variants_wall": {k: round(v, 2) for k, v in rate_wall.items()},
        "variants_cpu_time": {k: round(v, 2) for k, v in rate_cpu.items()},
    }
    if not args.no_rss:
        result["peak_rss_mib_128"] = {arm: round(peak_rss(arm, 128, 64, 2, args.threads), 1) for arm in ("ours", "reference")}
        print(f"peak RSS at 128x128 batch 64: {result['peak_rss_mib_128']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
