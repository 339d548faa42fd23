"""Memorization check: is any generated image a near-copy of a real training image?

For each generated sample the Euclidean distance to its nearest training image is computed in
feature space and in pixel space, and divided by that space's typical distance between two
real training images (the median pairwise distance). A normalised distance under the threshold
(``EvaluationConfig.memorization_threshold``, e.g. 0.05 = twenty times closer than two typical
training images) counts as a near-copy. A synthetic image that reproduces a patient's image is
a privacy failure, so the report lists the closest pairs by training-image id.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_SCALE_SAMPLES = 1000
WORST_PAIRS = 5


def nearest_neighbours(queries: np.ndarray, references: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Distance to and index of the nearest reference row for each query row (float64, exact)."""
    q = np.asarray(queries, dtype=np.float64).reshape(len(queries), -1)
    r = np.asarray(references, dtype=np.float64).reshape(len(references), -1)
    if r.shape[0] == 0:
        raise ValueError("no reference (training) images to compare against")
    r_sq = np.einsum("ij,ij->i", r, r)
    dist = np.empty(q.shape[0], dtype=np.float64)
    index = np.empty(q.shape[0], dtype=np.int64)
    for start in range(0, q.shape[0], chunk):
        block = q[start:start + chunk]
        # |a-b|^2 = |a|^2 + |b|^2 - 2ab: one GEMM per chunk keeps memory at chunk x N_ref.
        d2 = np.einsum("ij,ij->i", block, block)[:, None] + r_sq[None, :] - 2.0 * block @ r.T
        best = np.argmin(d2, axis=1)
        index[start:start + len(block)] = best
        # Recompute the winner's distance directly: the expanded form cancels badly near 0,
        # and near 0 is exactly where an exact copy must read as 0.
        dist[start:start + len(block)] = np.linalg.norm(block - r[best], axis=1)
    return dist, index


def median_pairwise_distance(x: np.ndarray, seed: int = 0, max_samples: int = MAX_SCALE_SAMPLES) -> float:
    """Median Euclidean distance between distinct rows (on a seeded subset of at most max_samples)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if x.shape[0] > max_samples:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_samples, replace=False)]
    if x.shape[0] < 2:
        return 0.0
    sq = np.einsum("ij,ij->i", x, x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
    upper = d2[np.triu_indices(x.shape[0], k=1)]
    return float(np.sqrt(max(float(np.median(upper)), 0.0)))


def _space_report(dist: np.ndarray, scale: float, threshold: float) -> tuple[dict[str, Any], np.ndarray]:
    # A zero scale means all training images are identical; any distance is then "far".
    normalised = dist / scale if scale > 0 else np.where(dist > 0, np.inf, 0.0)
    copies = normalised < threshold
    return {
        "near_copy_fraction": float(copies.mean()) if len(copies) else 0.0,
        "near_copies": int(copies.sum()),
        "scale_median_real_distance": float(scale),
        "nearest_distance_min": float(normalised.min()) if len(normalised) else None,
        "nearest_distance_median": float(np.median(normalised)) if len(normalised) else None,
    }, normalised


def memorization_report(
    fake_features: np.ndarray,
    train_features: np.ndarray,
    fake_pixels: np.ndarray,
    train_pixels: np.ndarray,
    threshold: float,
    train_ids: np.ndarray | list[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Near-copy fractions in feature and pixel space plus the closest pairs (JSON-able)."""
    if len(fake_features) != len(fake_pixels) or len(train_features) != len(train_pixels):
        raise ValueError("features and pixels must describe the same images (row counts differ)")
    ids = [str(i) for i in (train_ids if train_ids is not None else range(len(train_features)))]
    f_dist, f_index = nearest_neighbours(fake_features, train_features)
    p_dist, p_index = nearest_neighbours(fake_pixels, train_pixels)
    feature_part, f_norm = _space_report(f_dist, median_pairwise_distance(train_features, seed), threshold)
    pixel_part, p_norm = _space_report(p_dist, median_pairwise_distance(train_pixels, seed), threshold)
    order = np.argsort(f_norm, kind="stable")[:WORST_PAIRS]
    closest = [
        {
            "sample": int(i),
            "nearest_training_id": ids[int(f_index[i])],
            "feature_distance": float(f_norm[i]),
            "nearest_training_id_pixels": ids[int(p_index[i])],
            "pixel_distance": float(p_norm[i]),
        }
        for i in order
    ]
    either = (f_norm < threshold) | (p_norm < threshold)
    return {
        # The headline number: near-copies in feature space (what the threshold describes).
        "near_copy_fraction": feature_part["near_copy_fraction"],
        "near_copy_fraction_any_space": float(either.mean()) if len(either) else 0.0,
        "threshold": float(threshold),
        "n_generated": int(len(fake_features)),
        "n_training": int(len(train_features)),
        "feature_space": feature_part,
        "pixel_space": pixel_part,
        "closest": closest,
    }
