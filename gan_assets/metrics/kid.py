"""Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel, over subsets.

k(x, y) = (x . y / d + 1)^3 (Binkowski et al. 2018, "Demystifying MMD GANs"). KID is unbiased
for any sample size, which makes it the more honest number for the small monthly batches here;
the mean and standard deviation over random subsets are reported.

Subsets hold at most half of the smaller set (and at most ``subset_size``). A subset as large as
the set is the whole set every time, so all subsets give one value and the std is always 0; at
half the set, subsets differ and their spread says how much the estimate moves with the sample.
Every subset estimate is unbiased, so their mean is an unbiased estimate of MMD^2 as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_NUM_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000


@dataclass(frozen=True)
class KidResult:
    mean: float
    std: float
    num_subsets: int
    subset_size: int


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(x y^T / d + 1)^3 for row vectors x (n x d) and y (m x d)."""
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between two samples (each with >= 2 rows) under the cubic kernel."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD needs at least 2 samples per set, got {m} and {n}")
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    # Diagonal terms k(x_i, x_i) are excluded: that is what makes the estimate unbiased.
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())


def subset_size_for(count1: int, count2: int) -> int:
    """Half of the smaller set (at least 2): small enough that random subsets differ."""
    return max(2, min(int(count1), int(count2)) // 2)


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    num_subsets: int = DEFAULT_NUM_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    seed: int = 0,
) -> KidResult:
    """KID mean and std over ``num_subsets`` random subsets of ``min(subset_size, min(n1, n2) // 2)`` rows.

    Subsets are drawn without replacement within each subset (as torch-fidelity and clean-fid
    do); ``seed`` makes the estimate reproducible.
    """
    x = np.asarray(features1, dtype=np.float64)
    y = np.asarray(features2, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be N x d matrices of the same d, got {x.shape} and {y.shape}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    if min(x.shape[0], y.shape[0], int(subset_size)) < 2:
        raise ValueError(
            f"KID needs at least 2 samples in each set and subset_size >= 2, got {x.shape[0]}, {y.shape[0]} "
            f"and subset_size {subset_size}"
        )
    size = min(int(subset_size), subset_size_for(x.shape[0], y.shape[0]))
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        xi = x[rng.choice(x.shape[0], size, replace=False)]
        yi = y[rng.choice(y.shape[0], size, replace=False)]
        values[i] = mmd2_unbiased(xi, yi)
    return KidResult(mean=float(values.mean()), std=float(values.std()), num_subsets=num_subsets, subset_size=size)
