"""Evaluation maths (no Dagster): Fréchet distance, KID, real-vs-real floor, memorization,
feature extractors with fingerprints, the per-month real-feature cache, the controls, and the
month's evaluation (``gan_assets.metrics.evaluation``)."""

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
from gan_assets.metrics.score import FloorResult, real_floor

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
]
