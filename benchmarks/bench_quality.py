"""Image quality at equal compute: our default training config vs the pytorch/examples DCGAN recipe.

On the demo data (the default 3-month window through the ingest core), for each seed:
1. ours: ``train_gan`` with ``TrainConfig()`` defaults (CPU, one thread); its CPU seconds are
   the budget;
2. reference: pytorch/examples ``dcgan/main.py`` as written (ngf = ndf = 64, batch 64, Adam
   2e-4 / beta1 0.5, Sigmoid + BCELoss, no EMA, no augmentation; ``reference_dcgan.py``), on
   the same images and the same seed, stepping until it has used the same CPU seconds.
Both are scored against the last month's real images with the pipeline's feature extractor
(``--extractor``) on the same number of samples from the same noise. The reference is scored
with its generator in eval mode and in train mode (batch statistics, how its recipe saves
samples) and keeps the better FID, so the ratio is not inflated by a sampling choice.

With one thread per arm the process's CPU time is the wall-clock an idle core would take,
which neighbours' load on a shared machine does not inflate; wall seconds are printed too.

    nice .venv/bin/python benchmarks/bench_quality.py [--seeds 0,1] [--extractor random_conv]

Ends with one JSON line: {"benchmark": "quality", "ours": our FID, "baseline": reference FID,
"unit": "FID", "ratio": reference FID / our FID, ...} (means over seeds; target ratio >= 1.4).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from demo_window import (
    DEFAULT_LANDING_ZONE, SAMPLE_SEED, add_extractor_arguments, build_extractor, generator_samples,
    load_demo_window, mean_spread, score_features,
)
from gan_assets.model.config import TrainConfig
from gan_assets.model.train import batch_schedule, images_to_tensor, train_gan
from reference_dcgan import ReferenceDCGAN

# pytorch/examples dcgan/main.py defaults: --ngf 64 --ndf 64 --batchSize 64 --nz 100 --lr 0.0002 --beta1 0.5.
REFERENCE = TrainConfig(latent_dim=100, generator_width=64, discriminator_width=64, batch_size=64,
                        lr_g=2e-4, lr_d=2e-4, beta1=0.5, loss="bce", spectral_norm=False, diffaugment="",
                        ema=False, device="cpu")


def train_reference(images: np.ndarray, config: TrainConfig, cpu_budget: float) -> tuple[ReferenceDCGAN, int, float]:
    """Step the reference recipe on shuffled epochs until it has used ``cpu_budget`` CPU seconds."""
    data = images_to_tensor(images, config.image_size)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    model = ReferenceDCGAN(config, "cpu")
    # A schedule far longer than the budget can use; the loop stops on time, not on its end.
    schedule = batch_schedule(len(data), config.batch_size, 100_000, config.seed)
    steps = 0
    while time.process_time() - cpu_start < cpu_budget:
        model.step(data[schedule[steps]])
        steps += 1
    return model, steps, time.perf_counter() - wall_start


def reference_samples(model: ReferenceDCGAN, count: int, train_mode: bool) -> np.ndarray:
    generator = model.netG.train(train_mode)
    noise = torch.randn(count, model.config.latent_dim, 1, 1, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    with torch.no_grad():
        # Batches of the recipe's size: in train mode batch norm uses each batch's statistics.
        parts = [generator(noise[i:i + model.config.batch_size]) for i in range(0, count, model.config.batch_size)]
    return torch.cat(parts).squeeze(1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds, the same for both arms (default 0,1)")
    parser.add_argument("--num-fake", type=int, default=1000, help="samples scored per generator (default 1000)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both arms (default 1)")
    parser.add_argument("--landing-zone", default=DEFAULT_LANDING_ZONE, help="demo landing zone (written when empty)")
    parser.add_argument("--steps", type=int, default=0, help="our step budget (0 = the default config's; sets the budget)")
    add_extractor_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ours_base = TrainConfig().replace(device="cpu", log_every=10**6)
    if args.steps:
        ours_base = ours_base.replace(steps=args.steps)
    window = load_demo_window(args.landing_zone, ours_base.image_size)
    extractor = build_extractor(args, window)
    real_features = extractor.extract(window.month_real)
    print(f"demo window {window.months}: {len(window.train)} training images, {len(window.month_real)} real "
          f"images scored against; extractor {args.extractor}", flush=True)

    rows: list[dict[str, float]] = []
    for seed in (int(s) for s in args.seeds.split(",") if s.strip()):
        ours_config = ours_base.replace(seed=seed)
        cpu_start = time.process_time()
        trained = train_gan(window.train, ours_config)
        budget = time.process_time() - cpu_start
        ours = score_features(real_features, extractor.extract(
            generator_samples(trained.generator_state, ours_config, args.num_fake)))

        ref_config = REFERENCE.replace(image_size=ours_base.image_size, seed=seed)
        model, ref_steps, ref_wall = train_reference(window.train, ref_config, budget)
        ref_scores = {mode: score_features(real_features, extractor.extract(reference_samples(model, args.num_fake, mode)))
                      for mode in (False, True)}
        best_mode = min(ref_scores, key=lambda mode: ref_scores[mode].fid)
        ref = ref_scores[best_mode]
        rows.append({"seed": seed, "ours_fid": ours.fid, "ours_kid": ours.kid, "ours_steps": ours_config.steps,
                     "ours_cpu_s": budget, "ours_wall_s": trained.wall_seconds, "ref_fid": ref.fid, "ref_kid": ref.kid,
                     "ref_steps": ref_steps, "ref_wall_s": ref_wall,
                     "ref_fid_eval_mode": ref_scores[False].fid, "ref_fid_train_mode": ref_scores[True].fid})
        print(f"seed {seed}: ours FID {ours.fid:.3f} KID {ours.kid:.5f} ({ours_config.steps} steps, {budget:.1f} CPU-s, "
              f"{trained.wall_seconds:.1f} s wall) | reference FID {ref.fid:.3f} KID {ref.kid:.5f} "
              f"({ref_steps} steps in the same CPU time, {ref_wall:.1f} s wall; eval-mode FID "
              f"{ref_scores[False].fid:.3f}, train-mode {ref_scores[True].fid:.3f})", flush=True)

    ours_fid, ours_spread = mean_spread([r["ours_fid"] for r in rows])
    ref_fid, ref_spread = mean_spread([r["ref_fid"] for r in rows])
    print(f"ours FID {ours_fid:.3f} +- {ours_spread:.3f}, reference FID {ref_fid:.3f} +- {ref_spread:.3f} "
          f"(mean +- half-range over {len(rows)} seeds)")
    print(json.dumps({
        "benchmark": "quality", "ours": round(ours_fid, 3), "baseline": round(ref_fid, 3), "unit": "FID",
        "ratio": round(ref_fid / ours_fid, 3),
        "ratio_per_seed": [round(r["ref_fid"] / r["ours_fid"], 3) for r in rows],
        "baseline_name": "pytorch/examples dcgan/main.py recipe (ngf=ndf=64, batch 64, BCE, no EMA) at equal CPU time",
        "budget": "CPU seconds of our default training, one thread per arm",
        "extractor": args.extractor, "num_fake": args.num_fake, "threads": args.threads,
        "ours_config": {k: v for k, v in ours_base.to_dict().items()
                        if k in ("image_size", "generator_width", "discriminator_width", "batch_size", "steps",
                                 "lr_g", "lr_d", "loss", "spectral_norm", "diffaugment", "ema", "ema_decay")},
        "seeds": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
        "ours_fid_spread": round(ours_spread, 3), "baseline_fid_spread": round(ref_spread, 3),
        "statistic": "mean over seeds; spread = half-range",
        "median_ratio": round(statistics.median(r["ref_fid"] / r["ours_fid"] for r in rows), 3),
    }))


if __name__ == "__main__":
    main()
