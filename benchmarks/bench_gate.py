"""Can the quality gate tell a medical image from noise? The separation table on the demo data.

For each feature extractor in ``--extractors`` (default: every one this checkout knows), one
demo month is scored exactly as ``fid_score`` scores it (``gan_assets.metrics.evaluation.
evaluate_month``): the seven negative controls, the positive control (held-out real images),
and a generator trained briefly on the month, every candidate with as many images as the
held-out half, against the same reference half. Printed: each candidate's FID and KID, the
verdict, the threshold and its rule, and whether the gate is discriminative.

The JSON line's ``ratio`` is the lowest negative control's FID over the positive control's FID
for the first (default) extractor: how many times further the best garbage sits from the real
images than unseen real images do (target >= 5). ``ours`` is that lowest negative FID,
``baseline`` the positive control's FID.

Extractors are the kinds of the ``fid_extractor`` resource, built as the pipeline builds them
(``benchmarks/demo_window.py``): ``domain`` is trained on the months before the scored one,
never on it. The generator is the default training config on the demo window (the three
months), as ``make demo`` trains it.

Run: ``.venv/bin/python benchmarks/bench_gate.py`` (a few minutes on one core; the demo
landing zone is written to /tmp/ladder-lz first if missing).
"""

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from demo_window import DEFAULT_LANDING_ZONE, extractor_of_kind, load_demo_window

from gan_assets.metrics.evaluation import EvaluationSettings, FidScore, TrainingSet, evaluate_month
from gan_assets.model.artifact import sample_images
from gan_assets.model.config import TrainConfig
from gan_assets.model.dcgan import build_generator
from gan_assets.model.train import train_gan
from gan_assets.resources import FidExtractor

TARGET_RATIO = 5.0
KINDS = ("domain", "random_conv")  # the first is the pipeline's default


def train_generator(images: np.ndarray, steps: int, image_size: int) -> Callable[[int], np.ndarray]:
    config = TrainConfig(image_size=image_size, steps=steps, device="cpu", log_every=max(1, steps))
    result = train_gan(images, config)
    generator = build_generator(config)
    generator.load_state_dict(result.generator_state)
    generator.eval()
    return lambda count: sample_images(generator, count, seed=1_000_003, device="cpu")


def table(score: FidScore) -> str:
    lines = [f"{'candidate':<18} {'kind':<9} {'FID':>10} {'KID':>9}  verdict"]
    for control in score.controls:
        right = "ok" if control.verdict_correct else "WRONG"
        lines.append(f"{control.name:<18} {control.kind:<9} {control.fid:>10.4f} {control.kid:>9.5f}  "
                     f"{'pass' if control.passed else 'fail'} ({right})")
    lines.append(f"{'generator':<18} {'candidate':<9} {score.fid:>10.4f} {score.kid_mean:>9.5f}  "
                 f"{'pass' if score.fid <= score.threshold else 'fail'}")
    lines.append(f"threshold {score.threshold:.4f}: {score.gate.rule}")
    lines.append(f"discriminative: {score.gate.discriminative} (separation {score.gate.separation:.2f}, "
                 f"min {score.gate.min_separation:g}); status {score.status}")
    lines += [f"  - {reason}" for reason in score.gate.reasons]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing-zone", default=DEFAULT_LANDING_ZONE)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=TrainConfig().steps,
                        help="generator training steps (default: the pipeline's; 0 skips the generator)")
    parser.add_argument("--extractors", default=",".join(KINDS), help=f"comma-separated fid_extractor kinds ({', '.join(KINDS)})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n.strip() for n in args.extractors.split(",") if n.strip()]
    FidExtractor(kind=names[0])  # fail early on a kind the resource does not know

    window = load_demo_window(args.landing_zone, args.image_size)
    real = window.month_real
    month = window.months[-1]
    print(f"demo month {month}: {len(real)} real images of {args.image_size} px; the domain encoder trains on "
          f"the {len(window.earlier)} images of {', '.join(window.months[:-1])}")

    started = time.perf_counter()
    if args.train_steps > 0:
        sampler = train_generator(window.train, args.train_steps, args.image_size)
        print(f"generator: {args.train_steps} steps in {time.perf_counter() - started:.1f} s")
    else:
        sampler = lambda count: np.random.default_rng(0).uniform(-1, 1, (count, args.image_size, args.image_size))  # noqa: E731
        print("generator skipped (--train-steps 0): uniform noise stands in as the candidate")

    settings = EvaluationSettings()
    results: dict[str, FidScore] = {}
    for name in names:
        t0 = time.perf_counter()
        extractor = extractor_of_kind(name, window)
        training = TrainingSet(extractor.extract(window.train), window.train,
                               tuple(str(i) for i in range(len(window.train))), window.months)
        score = evaluate_month(extractor, real, sampler, training, settings, attempt=1).score
        results[name] = score
        print(f"\n== extractor {name} ({time.perf_counter() - t0:.1f} s) ==")
        print(table(score))

    default = results[names[0]]
    lowest = min(default.negatives, key=lambda c: c.fid)
    positive = default.positive
    print(json.dumps({
        "benchmark": "gate",
        "ours": round(lowest.fid, 4),
        "baseline": round(positive.fid, 4),
        "unit": "FID",
        "ratio": round(lowest.fid / positive.fid, 3) if positive.fid > 0 else None,
        "ours_name": f"lowest negative control ({lowest.name})",
        "baseline_name": "held_out_real (positive control)",
        "target_ratio": TARGET_RATIO,
        "extractor": names[0],
        "month": month,
        "n_reference": default.n_reference,
        "n_per_candidate": default.n_fake,
        "threshold": round(default.threshold, 4),
        "threshold_rule": default.threshold_rule,
        "discriminative": default.gate.discriminative,
        "every_negative_fails": all(not c.passed for c in default.negatives),
        "positive_passes": positive.passed,
        "generator_fid": round(default.fid, 4) if args.train_steps > 0 else None,
        "generator_steps": args.train_steps,
        "controls": {name: {c.name: round(c.fid, 4) for c in score.controls} for name, score in results.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }))


if __name__ == "__main__":
    main()
