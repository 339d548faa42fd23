"""The real-vs-real floor: what FID/KID two halves of the same month's real images give.

The month's verdict (threshold, controls, status) is :func:`gan_assets.metrics.evaluation.evaluate_month`.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from gan_assets.metrics.frechet import feature_statistics, frechet_distance_stats
from gan_assets.metrics.kid import DEFAULT_NUM_SUBSETS, DEFAULT_SUBSET_SIZE, kernel_inception_distance

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
