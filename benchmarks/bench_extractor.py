"""Can the FID feature extractor tell real images from the controls? Domain encoder vs random conv.

For each image family, the scored month's real images are split with ``split_reference``
(seed 0, as the evaluation core does) into a reference half and a held-out half; every control
of ``build_controls`` (seven negatives, the held-out real positive) is scored by FID against the
reference half with each extractor. The domain encoder is trained on the months BEFORE the
scored month only (the ``fid_feature_extractor`` split), so it never saw the reference set.

separation ratio = (lowest negative-control FID) / (held_out_real FID): how far the easiest
garbage sits above real images the extractor has not seen. A gate needs it well above 1.

Families (never tune to one of them):
- ``demo_ct``: the demo landing zone's DICOM CT phantoms (generated into /tmp if missing),
  through the ingest cores (scan, decode, window, resize to 64), months 2026-01/02 to train,
  2026-03 scored.
- ``synthetic_chest``: a second, unrelated family drawn here: a radiograph-like projection
  (bright mediastinum, two dark lung fields of random size, an off-centre heart, a diaphragm
  gradient, random nodules and texture). 300 images to train, 100 scored.

Baseline: ``random_conv`` (the resource's defaults: 512 features, seed 0). Ours: ``domain``
(default ``DomainEncoderSettings``: the 16-way orientation/polarity pretext task on augmented
views, global average pooling). Variants show what each alternative buys: ``domain_vicreg``
(+ VICReg invariance, weight 1), ``domain_light_vicreg`` (weight 0.1), ``domain_vicreg_only``
(VICReg without the pretext task) and ``domain_grid2`` (2 x 2 pooled grid instead of global).
``BENCH_VARIANTS=domain,...`` runs a subset.

Run: ``.venv/bin/python benchmarks/bench_extractor.py`` (a few minutes on one core).
"""

import dataclasses
import json
import logging
import os
import sys
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from demo_window import DEFAULT_LANDING_ZONE, load_demo_window

from gan_assets.metrics.controls import NEGATIVE_CONTROLS, build_controls, split_reference
from gan_assets.metrics.domain_encoder import DomainEncoderSettings, train_domain_encoder
from gan_assets.metrics.extractors import DomainExtractor, FeatureExtractor, RandomConvExtractor
from gan_assets.metrics.frechet import frechet_distance_features

LANDING_ZONE = os.environ.get("BENCH_LANDING_ZONE", DEFAULT_LANDING_ZONE)
SIDE = 64
SEED = 0
DEFAULT = DomainEncoderSettings()
VARIANTS = {
    "domain": DEFAULT,
    "domain_vicreg": dataclasses.replace(DEFAULT, invariance_weight=1.0),
    "domain_light_vicreg": dataclasses.replace(DEFAULT, invariance_weight=0.1),
    "domain_vicreg_only": dataclasses.replace(DEFAULT, pretext_weight=0.0, invariance_weight=1.0),
    "domain_grid2": dataclasses.replace(DEFAULT, pool_grid=2),
}
if os.environ.get("BENCH_VARIANTS"):
    VARIANTS = {name: VARIANTS[name] for name in os.environ["BENCH_VARIANTS"].split(",")}


def demo_months() -> tuple[np.ndarray, np.ndarray]:
    """(training images of 2026-01 and 2026-02, images of 2026-03) through the ingest cores."""
    window = load_demo_window(LANDING_ZONE, SIDE)
    return window.earlier, window.month_real


def synthetic_chest(count: int, seed: int) -> np.ndarray:
    """Radiograph-like projections with a clear up/down and polarity (float N x 64 x 64 in [-1, 1])."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64) / (SIDE - 1)
    images = np.empty((count, SIDE, SIDE), np.float32)
    for i in range(count):
        body = np.exp(-(((x - 0.5) / rng.uniform(0.38, 0.46)) ** 6)) * 0.55
        image = body + 0.35 * y ** 1.5 * body  # denser towards the abdomen
        for centre in (0.3 + rng.normal(0, 0.02), 0.7 + rng.normal(0, 0.02)):
            top, height, width = rng.uniform(0.12, 0.2), rng.uniform(0.38, 0.5), rng.uniform(0.13, 0.18)
            lung = np.exp(-(((x - centre) / width) ** 2 + ((y - top - height / 2) / (height / 2)) ** 4))
            image -= 0.45 * lung
        heart = np.exp(-(((x - 0.57 - rng.normal(0, 0.02)) / 0.1) ** 2 + ((y - 0.62) / 0.09) ** 2))
        image += 0.3 * heart
        for _ in range(rng.integers(0, 4)):
            cy, cx, r = rng.uniform(0.2, 0.7), rng.uniform(0.2, 0.8), rng.uniform(0.01, 0.03)
            image += 0.15 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        image += gaussian_filter(rng.normal(0, 0.05, image.shape), 1.0)
        images[i] = np.clip(image * 2.4 - 1.0, -1.0, 1.0)
    return images


def score_controls(extractor: FeatureExtractor, scored: np.ndarray) -> dict[str, float]:
    split = split_reference(len(scored), seed=0)
    reference = scored[split.reference_index]
    held_out = scored[split.held_out_index]
    reference_features = extractor.extract(reference)
    fids = {}
    for control in build_controls(scored, held_out, seed=0):
        fids[control.name] = frechet_distance_features(reference_features, extractor.extract(control.images))
    return fids


def separation(fids: dict[str, float]) -> float:
    return min(fids[name] for name in NEGATIVE_CONTROLS) / fids["held_out_real"]


def run_family(name: str, train: np.ndarray, scored: np.ndarray) -> dict[str, dict[str, float]]:
    print(f"\n== {name}: {len(train)} training images, {len(scored)} scored ({SIDE}x{SIDE})")
    results = {"random_conv": score_controls(RandomConvExtractor(), scored)}
    for variant, settings in VARIANTS.items():
        started = time.process_time()
        weights = train_domain_encoder(train, seed=SEED, settings=settings)
        cpu = time.process_time() - started
        desc = weights.description
        print(f"   {variant}: trained in {desc['seconds']:.1f} s wall / {cpu:.1f} s CPU; pretext accuracy "
              f"{desc['final_pretext_accuracy']:.2f}, losses {desc['final_losses']}")
        results[variant] = score_controls(DomainExtractor(weights), scored)
        results[variant]["train_seconds"] = desc["seconds"]
        results[variant]["train_cpu_seconds"] = cpu
    names = list(next(iter(results.values())))
    names = [n for n in names if not n.startswith("train_")]
    header = f"{'control':<18}" + "".join(f"{k:>22}" for k in results)
    print(header)
    for control in names:
        print(f"{control:<18}" + "".join(f"{results[k][control]:>22.3f}" for k in results))
    print(f"{'separation ratio':<18}" + "".join(f"{separation(results[k]):>22.2f}" for k in results))
    for k in results:
        results[k]["separation"] = separation(results[k])
    return results


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    train, scored = demo_months()
    demo = run_family("demo_ct", train, scored)
    if os.environ.get("BENCH_ONLY_DEMO"):
        return
    synthetic = run_family("synthetic_chest", synthetic_chest(300, seed=1), synthetic_chest(100, seed=2))
    ours, baseline = demo["domain"]["separation"], demo["random_conv"]["separation"]
    print(json.dumps({
        "benchmark": "extractor",
        "ours": round(ours, 3),
        "baseline": round(baseline, 3),
        "unit": "separation ratio",
        "ratio": round(ours / baseline, 3),
        "family": "demo_ct",
        "synthetic_chest": {"ours": round(synthetic["domain"]["separation"], 3),
                            "baseline": round(synthetic["random_conv"]["separation"], 3)},
        "variants_demo_ct": {k: round(v["separation"], 3) for k, v in demo.items()},
        "variants_synthetic_chest": {k: round(v["separation"], 3) for k, v in synthetic.items()},
        "domain_train_wall_s": round(demo["domain"]["train_seconds"], 1),
        "domain_train_cpu_s": round(demo["domain"]["train_cpu_seconds"], 1),
        "torch_threads": 1,
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
