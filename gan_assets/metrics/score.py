"""From real and generated features to a score: FID, KID, the real-vs-real floor, the verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gan_assets.metrics.frechet import GaussianStats, feature_statistics, frechet_distance_stats
from gan_assets.metrics.kid import DEFAULT_NUM_SUBSETS, DEFAULT_SUBSET_SIZE, kernel_inception_distance

THRESHOLD_MODES = ("absolute", "relative")
MIN_REAL_IMAGES = 4  # two halves of >= 2 images each: the least a covariance and KID allow


@dataclass(frozen=True)
class FloorResult:
    """FID/KID between two disjoint random halves of the real images: what the data allows."""

    fid: float
    kid_mean: float
    kid_std: float
    half_size: int
    seed: int


def real_floor(
    real_features: np.ndarray,
    seed: int = 0,
    kid_num_subsets: int = DEFAULT_NUM_SUBSETS,
    kid_subset_size: int = DEFAULT_SUBSET_SIZE,
) -> FloorResult:
    """Real-vs-real FID and KID over a seeded split of the real features into two halves.

    Each half has N/2 images, so the floor carries the small-sample bias of N/2 (FID is biased
    upwards as N shrinks); it is a conservative reference, which is what a relative threshold
    should be measured against.
    """
    count = len(real_features)
    if count < MIN_REAL_IMAGES:
        raise ValueError(
            f"the real-vs-real floor needs at least {MIN_REAL_IMAGES} real images (two halves of 2), "
            f"got {count}; ingest more images for this month"
        )
    order = np.random.default_rng(seed).permutation(count)
    half = count // 2
    first, second = real_features[order[:half]], real_features[order[half:2 * half]]
    fid = frechet_distance_stats(feature_statistics(first), feature_statistics(second))
    kid = kernel_inception_distance(first, second, kid_num_subsets, kid_subset_size, seed=seed)
    return FloorResult(fid=fid, kid_mean=kid.mean, kid_std=kid.std, half_size=half, seed=seed)


def threshold_for(mode: str, fid_threshold: float, relative_factor: float, floor_fid: float) -> float:
    """The FID a model must reach: absolute, or relative_factor x the real-vs-real floor."""
    if mode == "absolute":
        return float(fid_threshold)
    if mode == "relative":
        return float(relative_factor) * float(floor_fid)
    raise ValueError(f"gan_config.threshold_mode={mode!r} is invalid: choose one of {', '.join(THRESHOLD_MODES)}")


def status_for(passed: bool, attempt: int, max_attempts: int) -> str:
    """'passed'; 'failed' (a retrain may follow); or 'rejected' (failed on the last attempt)."""
    if passed:
        return "passed"
    return "rejected" if attempt >= max_attempts else "failed"


def score(
    real: GaussianStats,
    real_features: np.ndarray,
    fake_features: np.ndarray,
    *,
    threshold_mode: str,
    fid_threshold: float,
    relative_factor: float,
    attempt: int,
    max_attempts: int,
    seed: int = 0,
    kid_num_subsets: int = DEFAULT_NUM_SUBSETS,
    kid_subset_size: int = DEFAULT_SUBSET_SIZE,
    floor: FloorResult | None = None,
) -> dict[str, Any]:
    """The numeric part of fid_score (JSON-able): fid, kid, floor, threshold and verdict."""
    fake = feature_statistics(fake_features)
    fid = frechet_distance_stats(real, fake)
    kid = kernel_inception_distance(real_features, fake_features, kid_num_subsets, kid_subset_size, seed=seed)
    if floor is None:
        floor = real_floor(real_features, seed, kid_num_subsets, kid_subset_size)
    threshold = threshold_for(threshold_mode, fid_threshold, relative_factor, floor.fid)
    passed = bool(fid <= threshold)
    dim = real.dim
    return {
        "fid": fid,
        "kid_mean": kid.mean,
        "kid_std": kid.std,
        "kid_subsets": kid.num_subsets,
        "kid_subset_size": kid.subset_size,
        "floor_fid": floor.fid,
        "floor_kid": floor.kid_mean,
        "floor_kid_std": floor.kid_std,
        "floor_half_size": floor.half_size,
        "threshold": threshold,
        "threshold_mode": threshold_mode,
        "passed": passed,
        "attempt": int(attempt),
        "max_attempts": int(max_attempts),
        "status": status_for(passed, attempt, max_attempts),
        "n_real": int(real.count),
        "n_fake": int(fake.count),
        "feature_dim": int(dim),
        # Covariances of fewer samples than dimensions are singular and FID is strongly biased.
        "small_sample": bool(min(real.count, fake.count, floor.half_size) < dim),
    }
