"""Fréchet distance between Gaussians fitted to feature sets, in float64, without complex numbers.

FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)).

The usual implementation (pytorch-fid) takes ``scipy.linalg.sqrtm(S1 @ S2)``: a general, complex
Schur decomposition of a non-symmetric matrix, which is slow, returns complex values with
spurious imaginary parts, and can produce NaN/inf when a covariance is singular (N < d).

Here the trace term comes from a *symmetric* eigenvalue problem instead. For any factor A with
S1 = A A^T, the eigenvalues of S1 S2 equal those of the symmetric PSD matrix A^T S2 A (the
nonzero eigenvalues of XY and YX coincide), so

    tr(sqrt(S1 S2)) = sum_i sqrt(max(lambda_i(A^T S2 A), 0)).

A = sqrt(S1) gives the textbook form sqrt(S1) S2 sqrt(S1). Any factor gives the same eigenvalues,
so A is the Cholesky factor when S1 is positive definite (d^3/3 flops) and
V diag(sqrt(max(w, 0))) from ``eigh(S1)`` otherwise (singular or indefinite through rounding);
only eigenvalues of the d x d symmetric matrix are then needed. Everything stays real, and
negative eigenvalues from rounding are clipped to 0, so there is no NaN on singular covariances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.linalg.blas import dtrmm


@dataclass(frozen=True)
class GaussianStats:
    """Mean and covariance of a feature set (float64) and how many samples produced them."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])


def feature_statistics(features: np.ndarray) -> GaussianStats:
    """Mean and unbiased covariance (ddof=1) of an N x d feature matrix, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array (N x d), got shape {features.shape}")
    count = features.shape[0]
    if count < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {count}")
    if not np.all(np.isfinite(features)):
        raise ValueError("features contain NaN or inf; the feature extractor produced invalid output")
    mu = features.mean(axis=0)
    centred = features - mu
    # X^T X through one GEMM is both faster and more accurate than np.cov's generic path.
    sigma = centred.T @ centred / (count - 1)
    return GaussianStats(mu=mu, sigma=_symmetrize(sigma), count=count)


def _symmetrize(matrix: np.ndarray) -> np.ndarray:
    return (matrix + matrix.T) * 0.5


def _check_pair(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> int:
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,):
        raise ValueError(f"means must be 1-D of equal length, got {mu1.shape} and {mu2.shape}")
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"covariances must be {d} x {d} to match the means, got {sigma1.shape} and {sigma2.shape}"
        )
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} contains NaN or inf")
    return d


def _psd_factor(sigma: np.ndarray) -> tuple[np.ndarray, bool]:
    """(A, lower_triangular) with sigma = A A^T: Cholesky when positive definite, else via eigh."""
    try:
        return scipy.linalg.cholesky(sigma, lower=True, check_finite=False), True
    except np.linalg.LinAlgError:
        pass
    w, v = scipy.linalg.eigh(sigma, check_finite=False)
    keep = w > 0.0
    # Dropping the null space is exact (those columns contribute zero) and shrinks the next step.
    return v[:, keep] * np.sqrt(w[keep]), False


def _congruence(factor: np.ndarray, lower: bool, sigma: np.ndarray) -> np.ndarray:
    """factor^T @ sigma @ factor; two triangular products (half the flops of GEMMs) for Cholesky."""
    if lower:
        right = dtrmm(1.0, factor, sigma, side=1, lower=1)  # sigma @ L
        return dtrmm(1.0, factor, right, side=0, lower=1, trans_a=1)  # L^T @ (sigma @ L)
    return factor.T @ sigma @ factor


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrt(sigma1 @ sigma2)) for symmetric PSD matrices, via a symmetric eigenvalue problem."""
    sigma1 = _symmetrize(np.asarray(sigma1, dtype=np.float64))
    sigma2 = _symmetrize(np.asarray(sigma2, dtype=np.float64))
    factor, lower = _psd_factor(sigma1)
    if factor.shape[1] == 0:
        return 0.0
    inner = _symmetrize(_congruence(factor, lower, sigma2))
    # Eigenvalues only ('evd': divide and conquer), no eigenvectors: the cheap half of eigh.
    eigenvalues = scipy.linalg.eigvalsh(inner, check_finite=False, driver="evd")
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64, >= 0, never NaN)."""
    mu1 = np.asarray(mu1, dtype=np.float64)
    mu2 = np.asarray(mu2, dtype=np.float64)
    sigma1 = np.asarray(sigma1, dtype=np.float64)
    sigma2 = np.asarray(sigma2, dtype=np.float64)
    _check_pair(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    value = float(diff @ diff) + float(np.trace(sigma1)) + float(np.trace(sigma2)) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    # The exact value is >= 0; rounding can leave ~1e-12 below zero for identical inputs.
    return max(value, 0.0)


def frechet_distance_stats(a: GaussianStats, b: GaussianStats) -> float:
    """:func:`frechet_distance` of two :class:`GaussianStats`."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def frechet_distance_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID-style distance between two N x d feature matrices."""
    return frechet_distance_stats(feature_statistics(features1), feature_statistics(features2))
