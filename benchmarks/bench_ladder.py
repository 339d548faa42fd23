"""Which retrain rung helps? Each candidate change against the base config, same seeds, same budget.

On the demo data (the default 3-month window, preprocessed by the ingest core), trains the base
config (``TrainConfig()`` unless overridden) and every arm below applied to it, with the same
seeds and -- except for the ``steps_x1.5`` arm, which measures the budget alone -- the same step
budget, so the table separates a rung's change from the extra steps the old ladder gave it.
Each generator is scored against the last month's real images with the pipeline's feature
extractor (``--extractor``): FID and KID on ``--num-fake`` samples (the same noise for every arm).

    nice .venv/bin/python benchmarks/bench_ladder.py [--seeds 0,1] [--steps N] [--arms a,b|all]
        [--extractor random_conv] [--landing-zone /tmp/ladder-lz] [--jsonl runs.jsonl] [--reuse runs.jsonl]

Arms (the default set, marked *, is about 14 CPU-minutes at 2 seeds; ``--arms all`` runs every one):
  base*            the base config (the defaults: DiffAugment translation,cutout on, EMA on)
  steps_x1.5*      50% more steps, nothing else (the budget; the ladder's rungs)
  diffaug_off*     DiffAugment off (the default before augmentation measured better)
  diffaugment      DiffAugment translation,cutout (on a base without augmentation)
  diffaug_transl   DiffAugment translation only
  lr_x0.5          halve lr_g and lr_d (the old first rung)
  lr_x0.25         quarter both learning rates (the old second rung's learning rates)
  hinge_sn         hinge loss + spectral norm on D
  hinge_sn_diffaug hinge + spectral norm + DiffAugment translation,cutout
  ttur             two time-scale update rule: lr_d = 2 x lr_g
  ema_off          no generator EMA (the scored generator is the live one)
  ema_0.99         EMA decay 0.99 instead of 0.999

To measure against the old default: ``--base '{"diffaugment": ""}' --arms all``.
Prints a table (arm, FID mean +- half-range over seeds, KID, delta vs base, seconds) and ends
with one JSON line: {"benchmark": "ladder", "ours": best arm FID, "baseline": base FID, ...}.
Training runs single-threaded (``--threads``), as fair between arms as a shared machine allows.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from demo_window import (
    DEFAULT_LANDING_ZONE, add_extractor_arguments, build_extractor, generator_samples, load_demo_window,
    mean_spread, score_features,
)
from gan_assets.model.config import TrainConfig
from gan_assets.model.train import DivergenceError, train_gan

AUGMENT = "translation,cutout"
ARMS: dict[str, Callable[[TrainConfig], TrainConfig]] = {
    "base": lambda c: c,
    "lr_x0.5": lambda c: c.replace(lr_g=c.lr_g * 0.5, lr_d=c.lr_d * 0.5),
    "lr_x0.25": lambda c: c.replace(lr_g=c.lr_g * 0.25, lr_d=c.lr_d * 0.25),
    "steps_x1.5": lambda c: c.replace(steps=int(np.ceil(c.steps * 1.5))),
    "diffaug_off": lambda c: c.replace(diffaugment=""),
    "diffaugment": lambda c: c.replace(diffaugment=AUGMENT),
    "diffaug_transl": lambda c: c.replace(diffaugment="translation"),
    "hinge_sn": lambda c: c.replace(loss="hinge", spectral_norm=True),
    "hinge_sn_diffaug": lambda c: c.replace(loss="hinge", spectral_norm=True, diffaugment=AUGMENT),
    "ttur": lambda c: c.replace(lr_d=c.lr_g * 2.0),
    "ema_off": lambda c: c.replace(ema=False),
    "ema_0.99": lambda c: c.replace(ema=True, ema_decay=0.99),
}
DEFAULT_ARMS = ("base", "steps_x1.5", "diffaug_off")


def parse_arms(text: str) -> list[str]:
    if text == "all":
        return list(ARMS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ARMS]
    if unknown:
        raise SystemExit(f"--arms: unknown arm(s) {unknown}; choose from {list(ARMS)} or 'all'")
    return names if "base" in names else ["base", *names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default 0,1)")
    parser.add_argument("--steps", type=int, default=0, help="base step budget (0 = the default config's)")
    parser.add_argument("--image-size", type=int, default=0, help="0 = the default config's")
    parser.add_argument("--base", default="{}", help="JSON of TrainConfig fields overriding the defaults for the base")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS), help="comma-separated arms, or 'all'")
    parser.add_argument("--num-fake", type=int, default=1000, help="samples scored per generator (default 1000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--landing-zone", default=DEFAULT_LANDING_ZONE, help="demo landing zone (written when empty)")
    parser.add_argument("--jsonl", default="", help="also append one JSON line per trained arm and seed to this file")
    parser.add_argument("--reuse", default="", help="a --jsonl file of an earlier run: arms and seeds it holds for the "
                        "same base, budget, extractor and sample count are read from it instead of trained again")
    add_extractor_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    overrides = json.loads(args.base)
    base = TrainConfig().replace(device="cpu", log_every=10**6, **overrides)
    if args.steps:
        base = base.replace(steps=args.steps)
    if args.image_size:
        base = base.replace(image_size=args.image_size)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    arms = parse_arms(args.arms)

    window = load_demo_window(args.landing_zone, base.image_size)
    extractor = build_extractor(args, window)
    real_features = extractor.extract(window.month_real)
    print(f"demo window {window.months}: {len(window.train)} training images, {len(window.month_real)} real images "
          f"scored against; extractor {args.extractor}; base steps={base.steps} size={base.image_size} "
          f"widths={base.generator_width}/{base.discriminator_width} batch={base.batch_size}", flush=True)

    run_key = {"base": json.dumps(overrides, sort_keys=True), "base_steps": base.steps, "image_size": base.image_size,
               "extractor": args.extractor, "num_fake": args.num_fake}
    earlier: dict[tuple[str, int], dict[str, float]] = {}
    if args.reuse and Path(args.reuse).is_file():
        for line in Path(args.reuse).read_text().splitlines():
            record = json.loads(line)
            if all(record.get(k) == v for k, v in run_key.items()):
                earlier[(record["arm"], record["seed"])] = record

    results: dict[str, dict[str, list[float]]] = {arm: {"fid": [], "kid": [], "seconds": []} for arm in arms}
    diverged: dict[str, int] = {arm: 0 for arm in arms}
    # Seed-major order: an interrupted run still has every arm at the first seed.
    for seed in seeds:
        for arm in arms:
            config = ARMS[arm](base).replace(seed=seed)
            if (arm, seed) in earlier:
                record = earlier[(arm, seed)]
                for name in ("fid", "kid", "seconds"):
                    results[arm][name].append(float(record[name]))
                print(f"{arm:>18} seed {seed}: FID {record['fid']:8.3f}  KID {record['kid']:.5f}  "
                      f"{record['seconds']:6.1f}s (from {args.reuse})", flush=True)
                continue
            started = time.perf_counter()
            try:
                trained = train_gan(window.train, config)
            except DivergenceError as err:
                diverged[arm] += 1
                print(f"{arm:>18} seed {seed}: diverged ({err})", flush=True)
                continue
            seconds = time.perf_counter() - started
            fake_features = extractor.extract(generator_samples(trained.generator_state, config, args.num_fake))
            score = score_features(real_features, fake_features)
            results[arm]["fid"].append(score.fid)
            results[arm]["kid"].append(score.kid)
            results[arm]["seconds"].append(seconds)
            print(f"{arm:>18} seed {seed}: FID {score.fid:8.3f}  KID {score.kid:.5f}  {seconds:6.1f}s", flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as handle:
                    handle.write(json.dumps({"arm": arm, "seed": seed, "fid": score.fid, "kid": score.kid,
                                             "seconds": seconds, "steps": config.steps, **run_key}) + "\n")

    summary: dict[str, dict[str, float]] = {}
    for arm in arms:
        if not results[arm]["fid"]:
            continue
        fid, fid_spread = mean_spread(results[arm]["fid"])
        kid, _ = mean_spread(results[arm]["kid"])
        summary[arm] = {"fid": fid, "fid_spread": fid_spread, "kid": kid,
                        "seconds": float(np.mean(results[arm]["seconds"])), "seeds": len(results[arm]["fid"])}
    if "base" not in summary:
        raise SystemExit("the base arm diverged at every seed: nothing to compare against")
    base_fid = summary["base"]["fid"]
    print(f"\n{'arm':>18} | {'FID mean +- half-range':>22} | {'KID':>8} | {'delta vs base':>13} | {'seconds':>7}")
    for arm, row in sorted(summary.items(), key=lambda item: item[1]["fid"]):
        note = f" ({diverged[arm]} diverged)" if diverged[arm] else ""
        print(f"{arm:>18} | {row['fid']:12.3f} +- {row['fid_spread']:6.3f} | {row['kid']:8.5f} | "
              f"{row['fid'] - base_fid:+13.3f} | {row['seconds']:7.1f}{note}")
    best_arm = min(summary, key=lambda arm: summary[arm]["fid"])
    best = summary[best_arm]["fid"]
    print(json.dumps({
        "benchmark": "ladder", "ours": round(best, 3), "baseline": round(base_fid, 3), "unit": "FID",
        "ratio": round(base_fid / best, 3), "best_arm": best_arm, "extractor": args.extractor,
        "seeds": seeds, "base_steps": base.steps, "image_size": base.image_size, "num_fake": args.num_fake,
        "arms": {arm: {k: round(v, 4) for k, v in row.items()} for arm, row in summary.items()},
        "diverged": {arm: n for arm, n in diverged.items() if n},
    }))


if __name__ == "__main__":
    main()
