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

Extractors are built by name from :data:`EXTRACTORS`, a builder per name that receives the
images it may train on (disjoint from the month scored); add one (e.g. ``domain``) there.

Run: ``.venv/bin/python benchmarks/bench_gate.py`` (under two minutes on one core; the demo
landing zone is written to /tmp/gate-bench-lz first if missing).
"""

import os

# One BLAS/torch thread: the machine is shared; figures are per core.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gan_assets.dicom.demo_data import generate_landing_zone, landing_zone_has_files  # noqa: E402
from gan_assets.dicom.preprocess import PreprocessOptions, RejectError, preprocess_file, read_dataset  # noqa: E402
from gan_assets.dicom.scan import DATE_TAGS, assign_month  # noqa: E402
from gan_assets.metrics.evaluation import EvaluationSettings, FidScore, TrainingSet, evaluate_month  # noqa: E402
from gan_assets.metrics.extractors import FeatureExtractor, RandomConvExtractor  # noqa: E402
from gan_assets.model.artifact import sample_images  # noqa: E402
from gan_assets.model.config import TrainConfig  # noqa: E402
from gan_assets.model.dcgan import build_generator  # noqa: E402
from gan_assets.model.train import train_gan  # noqa: E402
from gan_assets.storage.images import pack_images, unpack_images  # noqa: E402

DEFAULT_LANDING_ZONE = "/tmp/gate-bench-lz"
DEFAULT_MONTH = "2026-03"
TARGET_RATIO = 5.0

# name -> builder(images it may train on) -> extractor. The first entry is the default.
EXTRACTORS: dict[str, Callable[[np.ndarray], FeatureExtractor]] = {
    "random_conv": lambda _train_images: RandomConvExtractor(),
}


def load_months(landing_zone: Path, image_size: int) -> dict[str, np.ndarray]:
    """The demo landing zone's good images, preprocessed as ingest does, grouped by month (YYYY-MM)."""
    options = PreprocessOptions(image_size=image_size)
    months: dict[str, list[np.ndarray]] = {}
    for path in sorted(landing_zone.rglob("*.dcm")):
        try:
            assigned = assign_month(read_dataset(str(path)), DATE_TAGS)
            image = preprocess_file(str(path), options)
        except (RejectError, ValueError, OSError):
            continue  # the demo's deliberately bad files
        if assigned is None:
            continue
        month = str(assigned[0])[:7]
        months.setdefault(month, []).extend(image.images)
    # Through the uint8 storage of preprocessed_images, as fid_score sees them.
    return {month: unpack_images(pack_images(np.stack(images))) for month, images in sorted(months.items())}


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
    parser.add_argument("--month", default=DEFAULT_MONTH, help="YYYY-MM of the demo month scored")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=100,
                        help="generator training steps (default 100 keeps the run short; 0 skips the generator)")
    parser.add_argument("--extractors", default=",".join(EXTRACTORS), help=f"comma-separated, of {', '.join(EXTRACTORS)}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n.strip() for n in args.extractors.split(",") if n.strip()]
    unknown = sorted(set(names) - set(EXTRACTORS))
    if unknown:
        raise SystemExit(f"unknown extractor(s) {unknown}; known: {', '.join(EXTRACTORS)}")

    zone = Path(args.landing_zone)
    if not landing_zone_has_files(str(zone)):
        generate_landing_zone(str(zone), seed=0, workers=1)
    months = load_months(zone, args.image_size)
    if args.month not in months:
        raise SystemExit(f"month {args.month} not in the landing zone {zone}: it has {sorted(months)}")
    real = months[args.month]
    # Images an extractor may train on: the other months, never the month whose reference it scores.
    others = np.concatenate([images for month, images in months.items() if month != args.month])
    print(f"demo month {args.month}: {len(real)} real images of {args.image_size} px; "
          f"{len(others)} images of other months for extractors that train")

    started = time.perf_counter()
    if args.train_steps > 0:
        sampler = train_generator(real, args.train_steps, args.image_size)
        print(f"generator: {args.train_steps} steps in {time.perf_counter() - started:.1f} s")
    else:
        sampler = lambda count: np.random.default_rng(0).uniform(-1, 1, (count, args.image_size, args.image_size))  # noqa: E731
        print("generator skipped (--train-steps 0): uniform noise stands in as the candidate")

    settings = EvaluationSettings()
    results: dict[str, FidScore] = {}
    for name in names:
        t0 = time.perf_counter()
        extractor = EXTRACTORS[name](others)
        training = TrainingSet(extractor.extract(real), real, tuple(str(i) for i in range(len(real))), (args.month,))
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
        "month": args.month,
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
