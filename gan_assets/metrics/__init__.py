"""Evaluation maths (no Dagster): Fréchet distance, KID, real-vs-real floor, memorization,
feature extractors with fingerprints, and the per-month real-feature cache."""

from gan_assets.metrics.extractors import (
    ExtractorError,
    FeatureExtractor,
    RandomConvExtractor,
    TorchScriptExtractor,
    compare_fingerprints,
)
from gan_assets.metrics.frechet import (
    GaussianStats,
    feature_statistics,
    frechet_distance,
    frechet_distance_features,
    frechet_distance_stats,
    trace_sqrt_product,
)
from gan_assets.metrics.kid import KidResult, kernel_inception_distance, mmd2_unbiased
from gan_assets.metrics.memorization import memorization_report, nearest_neighbours
from gan_assets.metrics.score import FloorResult, real_floor, score, status_for, threshold_for

__all__ = [
    "ExtractorError",
    "FeatureExtractor",
    "FloorResult",
    "GaussianStats",
    "KidResult",
    "RandomConvExtractor",
    "TorchScriptExtractor",
    "compare_fingerprints",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_features",
    "frechet_distance_stats",
    "kernel_inception_distance",
    "memorization_report",
    "mmd2_unbiased",
    "nearest_neighbours",
    "real_floor",
    "score",
    "status_for",
    "threshold_for",
]
