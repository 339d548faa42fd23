"""Fréchet distance at Inception scale (d = 2048, N = 10,000 features): ours vs the sqrtm formula.

Baseline: pytorch-fid's ``calculate_frechet_distance`` formula, ``scipy.linalg.sqrtm(S1 @ S2)``
(a complex Schur decomposition of a non-symmetric matrix). Ours: ``gan_assets.metrics.
frechet_distance`` (Cholesky or eigh factor, then the eigenvalues of one symmetric matrix).
Both get the same statistics in the same run; BLAS is pinned to one thread so the figures are
per core and other work on the machine disturbs them less. Also prints the default feature
extractor's throughput on 64 x 64 images.

Run: ``.venv/bin/python benchmarks/bench_fid.py`` (about a minute on one core).
"""

import json
import os
import sys
import time

import numpy as np
import scipy.linalg
import torch

from gan_assets.metrics import RandomConvExtractor, feature_statistics, frechet_distance
from gan_assets.metrics.frechet import _psd_factor

# One BLAS thread for a per-core comparison (a value set by the caller wins).
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

D, N, RANK = 2048, 10_000, 64
OURS_REPEATS = 3


def features(rng: np.random.Generator, scales: np.ndarray, mixing: np.ndarray, shift: float) -> np.ndarray:
    """Spiked-covariance features: per-dimension noise plus a low-rank shared part, like a CNN's."""
    return rng.standard_normal((N, D)) * scales + rng.standard_normal((N, RANK)) @ mixing + shift


def sqrtm_frechet(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """pytorch-fid's formula, including its eps fallback for a non-finite sqrtm."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def timed(fn, *args):  # type: ignore[no-untyped-def]
    # CPU time of this (single-BLAS-thread) process: other work on a shared machine inflates
    # wall time for both methods unevenly; wall time is printed too.
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn(*args)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"    ({fn.__name__}: {wall:.3f} s wall, {cpu:.3f} s CPU)")
    return value, cpu


def eigh_path_frechet(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Ours with the eigh factor forced (the path singular covariances take)."""
    w, v = scipy.linalg.eigh(s1)
    keep = w > 0
    factor = v[:, keep] * np.sqrt(w[keep])
    inner = factor.T @ s2 @ factor
    trace_sqrt = np.sqrt(np.clip(scipy.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)


def extractor_throughput(count: int = 1024) -> float:
    torch.set_num_threads(1)
    extractor = RandomConvExtractor()  # the resource's defaults: 512 features, native size
    images = np.random.default_rng(0).uniform(-1, 1, (count, 64, 64)).astype(np.float32)
    extractor.extract(images[:64])  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    extractor.extract(images)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"    (extractor: {wall:.3f} s wall, {cpu:.3f} s CPU for {count} images)")
    return count / cpu


def main() -> None:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    scales, mixing = rng.uniform(0.2, 1.0, D), rng.standard_normal((RANK, D)) * 0.3
    a = feature_statistics(features(rng, scales, mixing, 0.0))
    # The second set: same structure, slightly shifted and rescaled (a decent generator).
    b = feature_statistics(features(rng, scales * 1.05, mixing * 0.95, 0.05))
    stats_seconds = time.perf_counter() - start
    print(f"statistics of 2 x {N} x {D} features: {stats_seconds:.2f} s (shared by both methods, not timed below)")
    assert _psd_factor(a.sigma)[1]  # well-conditioned: ours takes the Cholesky path

    ours_times = []
    baseline_value, baseline_seconds = None, None
    # Interleaved: ours, baseline, ours, ours.
    for i in range(OURS_REPEATS):
        value, seconds = timed(frechet_distance, a.mu, a.sigma, b.mu, b.sigma)
        ours_times.append(seconds)
        ours_value = value
        print(f"ours   run {i + 1}: {seconds:.3f} s  FID {value:.12f}")
        if i == 0:
            baseline_value, baseline_seconds = timed(sqrtm_frechet, a.mu, a.sigma, b.mu, b.sigma)
            print(f"sqrtm  run 1: {baseline_seconds:.3f} s  FID {baseline_value:.12f}")
    eigh_value, eigh_seconds = timed(eigh_path_frechet, a.mu, a.sigma, b.mu, b.sigma)
    print(f"ours via eigh factor (singular-covariance path): {eigh_seconds:.3f} s  FID {eigh_value:.12f}")
    ours_seconds = float(np.median(ours_times))
    rel_diff = abs(ours_value - baseline_value) / abs(baseline_value)
    images_per_second = extractor_throughput()
    print(f"default extractor (random_conv, 512 features) on 64x64 images: {images_per_second:.0f} images/s per CPU second (1 thread)")
    print(f"relative difference ours vs sqrtm: {rel_diff:.2e}; speed-up {baseline_seconds / ours_seconds:.1f}x")
    print(json.dumps({
        "benchmark": "frechet_distance_d2048_n10000",
        "ours": round(ours_seconds, 4),
        "baseline": round(baseline_seconds, 4),
        "unit": "cpu_s",
        "ratio": round(baseline_seconds / ours_seconds, 2),
        "baseline_name": "scipy.linalg.sqrtm(S1 @ S2) (pytorch-fid formula)",
        "rel_diff": rel_diff,
        "ours_eigh_path_s": round(eigh_seconds, 4),
        "rel_diff_eigh_path": abs(eigh_value - baseline_value) / abs(baseline_value),
        "extractor_images_per_s_64px": round(images_per_second, 1),
        "blas_threads": 1,
        "d": D,
        "n": N,
    }))


if __name__ == "__main__":
    # BLAS reads its thread count once, when numpy loads: restart with the variables set.
    if any(name not in os.environ for name in ONE_THREAD):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**ONE_THREAD, **os.environ})
    main()
