"""GPU check of the training step: ours vs pytorch/examples' DCGAN step, batch 256, 64x64 and 128x128.

Self-contained (torch + gan_assets.model, no Dagster). Modes:
- reference fp32 (TF32 off) at 64 and 128; reference TF32 at 64; reference bf16 autocast +
  channels_last at 128 (the best reference modes);
- ours fp32 (TF32 off; CUDA-graph replay); ours best (bf16 autocast, channels_last, cuDNN
  benchmark, CUDA graph); ours eager bf16 (no graph); ours + torch.compile (tried last, within
  the time budget).
Prints img/s and peak GPU memory per mode, then one JSON line per mode and a summary JSON line
(last). Without CUDA it says so and exits 0.

    python benchmarks/gpu_check.py [--budget 170] [--seconds 2.0]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback

import numpy as np
import torch

from gan_assets.model.config import TrainConfig
from gan_assets.model.train import GanTrainer, StepOptions, batch_schedule, train_gan
from reference_dcgan import ReferenceDCGAN

BATCH = 256
QUIET = logging.getLogger("gpu_check.quiet")
QUIET.setLevel(logging.WARNING)


def config_for(size: int, **changes: object) -> TrainConfig:
    return TrainConfig(image_size=size, latent_dim=100, generator_width=64, discriminator_width=64,
                       batch_size=BATCH, steps=1, device="cuda", log_every=10**6).replace(**changes)


def set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def dataset(size: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(4096, 1, size, size, generator=gen) * 2 - 1).to(device)


def run_reference(size: int, seconds: float, *, tf32: bool, bf16_cl: bool) -> dict[str, float]:
    set_tf32(tf32)
    device = torch.device("cuda")
    config = config_for(size)
    ref = ReferenceDCGAN(config, device, autocast_dtype=torch.bfloat16 if bf16_cl else None, channels_last=bf16_cl)
    torch.backends.cudnn.benchmark = True  # as pytorch/examples sets it
    data = dataset(size, device)
    fmt = torch.channels_last if bf16_cl else torch.contiguous_format
    batches = [data[i * BATCH:(i + 1) * BATCH].contiguous(memory_format=fmt) for i in range(len(data) // BATCH)]
    for i in range(5):
        ref.step(batches[i % len(batches)])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    steps, start = 0, time.perf_counter()
    while True:
        ref.step(batches[steps % len(batches)])
        steps += 1
        if steps % 10 == 0:
            torch.cuda.synchronize()
            if time.perf_counter() - start >= seconds:
                break
    elapsed = time.perf_counter() - start
    return {"img_per_s": steps * BATCH / elapsed, "steps": steps, "peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20}


def run_ours(size: int, seconds: float, options: StepOptions, *, tf32: bool, **config_changes: object) -> dict[str, float]:
    set_tf32(tf32)
    device = torch.device("cuda")
    config = config_for(size, **config_changes)
    trainer = GanTrainer(config, device, options=options)
    data = dataset(size, device)
    chunk = 20
    schedule = batch_schedule(len(data), BATCH, 400, seed=0)
    t0 = time.perf_counter()
    trainer.fit(data, schedule[:10], logger=QUIET, log_every=10**6)  # warm-up, capture, compile
    warmup_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    steps, start, offset = 0, time.perf_counter(), 10
    while time.perf_counter() - start < seconds:
        if offset + chunk > len(schedule):
            offset = 10
        stats = trainer.fit(data, schedule[offset:offset + chunk], logger=QUIET, log_every=10**6)
        offset += chunk
        steps += chunk
        losses = stats.history[-1].tolist()
    elapsed = time.perf_counter() - start
    return {"img_per_s": steps * BATCH / elapsed, "steps": steps, "warmup_s": warmup_s,
            "peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20, "last_losses": losses}


def profile_step(size: int) -> None:
    """Top CUDA kernels of the eager bf16 channels_last step (graph replay hides kernels from the profiler)."""
    from torch.profiler import ProfilerActivity, profile

    set_tf32(True)
    device = torch.device("cuda")
    trainer = GanTrainer(config_for(size), device, options=StepOptions(channels_last=True, autocast_dtype=torch.bfloat16))
    data = dataset(size, device)
    schedule = batch_schedule(len(data), BATCH, 20, seed=0)
    trainer.fit(data, schedule[:10], logger=QUIET, log_every=10**6)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        trainer.fit(data, schedule[10:15], logger=QUIET, log_every=10**6)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=90))


def smoke() -> dict[str, object]:
    """Every option on CUDA for a few steps: finite losses, and train_gan end to end."""
    out: dict[str, object] = {}
    images = np.random.default_rng(0).uniform(-1, 1, (64, 32, 32)).astype(np.float32)
    tiny = TrainConfig(image_size=32, latent_dim=16, generator_width=8, discriminator_width=8, batch_size=16,
                       steps=20, log_every=10, device="cuda")
    for name, changes in {"bce": {}, "hinge_sn_aug": {"loss": "hinge", "spectral_norm": True,
                                                      "diffaugment": "translation,cutout"},
                          "no_ema_aug": {"ema": False, "diffaugment": "translation"}}.items():
        result = train_gan(images, tiny.replace(**changes), logger=QUIET)
        out[name] = {"loss_d": result.final_loss_d, "loss_g": result.final_loss_g,
                     "finite": bool(np.isfinite([result.final_loss_d, result.final_loss_g]).all()),
                     "ema_finite": all(bool(torch.isfinite(t.float()).all()) for t in result.generator_state.values())}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=170.0, help="seconds; later modes are skipped past it")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per mode")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated mode names to run (default: all)")
    parser.add_argument("--profile", type=int, default=0, help="also profile the eager bf16 step at this size")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is absent: torch sees no GPU, nothing to measure (run this on a GPU machine).")
        print(json.dumps({"benchmark": "train_step_gpu", "status": "skipped", "reason": "no CUDA device"}))
        return 0
    t_start = time.perf_counter()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}", flush=True)
    results: dict[str, dict[str, object]] = {}

    only = {m.strip() for m in args.only.split(",") if m.strip()}

    def attempt(name: str, fn, *fargs, **fkwargs) -> None:  # type: ignore[no-untyped-def]
        if only and name not in only:
            return
        if time.perf_counter() - t_start > args.budget:
            print(f"{name:>28}: skipped (time budget)", flush=True)
            return
        try:
            res = fn(*fargs, **fkwargs)
        except Exception as err:  # keep measuring the other modes; the traceback says what broke
            traceback.print_exc()
            res = {"error": f"{type(err).__name__}: {err}"}
        finally:
            torch.cuda.empty_cache()
        results[name] = res
        if "img_per_s" in res:
            print(f"{name:>28}: {res['img_per_s']:9.0f} img/s  peak {res['peak_mem_mib']:7.0f} MiB  "
                  f"({res.get('warmup_s', 0):.1f}s warm-up)", flush=True)
        else:
            print(f"{name:>28}: {res}", flush=True)

    best = StepOptions(channels_last=True, autocast_dtype=torch.bfloat16, cuda_graph=True)
    attempt("smoke", smoke)
    for size in (64, 128):
        attempt(f"reference_fp32_{size}", run_reference, size, args.seconds, tf32=False, bf16_cl=False)
        attempt(f"ours_fp32_{size}", run_ours, size, args.seconds, StepOptions(cuda_graph=True), tf32=False)
        if size == 64:
            attempt("reference_tf32_64", run_reference, 64, args.seconds, tf32=True, bf16_cl=False)
        else:
            attempt("reference_bf16_cl_128", run_reference, 128, args.seconds, tf32=True, bf16_cl=True)
        attempt(f"ours_best_{size}", run_ours, size, args.seconds, best, tf32=True)
        attempt(f"ours_bf16_eager_{size}", run_ours, size, args.seconds,
                StepOptions(channels_last=True, autocast_dtype=torch.bfloat16), tf32=True)
    for size in (64, 128):
        attempt(f"ours_bf16_nchw_graph_{size}", run_ours, size, args.seconds,
                StepOptions(autocast_dtype=torch.bfloat16, cuda_graph=True), tf32=True)
    if not args.no_compile:
        for size in (64, 128):
            # Inductor picks conv layouts itself; channels_last params trip a stride assert in
            # the first ConvTranspose's weight gradient (seen with torch 2.11 on an H200).
            attempt(f"ours_compile_graph_{size}", run_ours, size, args.seconds,
                    StepOptions(autocast_dtype=torch.bfloat16, cuda_graph=True, compile=True), tf32=True)
    if args.profile:
        profile_step(args.profile)

    for name, res in results.items():
        print(json.dumps({"mode": name, **res}, default=str))

    def rate(name: str) -> float:
        return float(results.get(name, {}).get("img_per_s", 0.0) or 0.0)  # type: ignore[union-attr]

    ours64 = max(rate("ours_best_64"), rate("ours_compile_graph_64"))
    ours128 = max(rate("ours_best_128"), rate("ours_compile_graph_128"))
    base64, base128 = rate("reference_tf32_64"), rate("reference_bf16_cl_128")
    print(json.dumps({
        "benchmark": "train_step_gpu", "device": torch.cuda.get_device_name(), "unit": "img/s",
        "ours": round(ours64), "baseline": round(base64), "ratio": round(ours64 / base64, 3) if base64 else None,
        "ours_128": round(ours128), "baseline_128": round(base128),
        "ratio_128": round(ours128 / base128, 3) if base128 else None,
        "fp32_ratio_64": round(rate("ours_fp32_64") / rate("reference_fp32_64"), 3) if rate("reference_fp32_64") else None,
        "fp32_ratio_128": round(rate("ours_fp32_128") / rate("reference_fp32_128"), 3) if rate("reference_fp32_128") else None,
        "total_s": round(time.perf_counter() - t_start, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
