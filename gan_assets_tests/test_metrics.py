"""Evaluation maths against identities and independent formulas; extractors and fingerprints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from gan_assets.metrics import (
    ExtractorError,
    RandomConvExtractor,
    TorchScriptExtractor,
    compare_fingerprints,
    feature_statistics,
    frechet_distance,
    frechet_distance_features,
    kernel_inception_distance,
    memorization_report,
    real_floor,
)
from gan_assets.metrics.frechet import _psd_factor
from gan_assets.metrics.cache import real_features_cached
from gan_assets.storage import store_from_uri
from gan_assets.storage.images import pack_images
from gan_assets.storage.layout import real_features_key


def sqrtm_frechet(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The pytorch-fid formula, written independently: sqrtm of the non-symmetric product."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def random_spd(rng: np.random.Generator, d: int, n: int) -> np.ndarray:
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3
    return np.cov(x, rowvar=False)


def test_equal_gaussians_have_zero_distance() -> None:
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(32), random_spd(rng, 32, 200)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_equal_covariances_give_squared_mean_distance() -> None:
    rng = np.random.default_rng(1)
    sigma = random_spd(rng, 24, 100)
    mu1, mu2 = rng.standard_normal(24), rng.standard_normal(24)
    expected = float(np.sum((mu1 - mu2) ** 2))
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(expected, rel=1e-9)


def test_singular_equal_covariances_give_squared_mean_distance() -> None:
    rng = np.random.default_rng(2)
    sigma = feature_statistics(rng.standard_normal((10, 40))).sigma  # rank 9 of 40
    mu1, mu2 = rng.standard_normal(40), rng.standard_normal(40)
    value = frechet_distance(mu1, sigma, mu2, sigma)
    assert value == pytest.approx(float(np.sum((mu1 - mu2) ** 2)), rel=1e-7)


def test_diagonal_covariances_match_closed_form() -> None:
    # For commuting (diagonal) covariances tr sqrt(S1 S2) = sum sqrt(a_i b_i).
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.0])
    expected = a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()
    assert frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_agrees_with_sqrtm_formula_on_well_conditioned_covariances() -> None:
    rng = np.random.default_rng(3)
    d = 64
    s1, s2 = random_spd(rng, d, 500), random_spd(rng, d, 500)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    assert _psd_factor(s1)[1]  # positive definite: the Cholesky path
    ours = frechet_distance(mu1, s1, mu2, s2)
    reference = sqrtm_frechet(mu1, s1, mu2, s2)
    assert ours == pytest.approx(reference, rel=1e-9)


def test_agrees_with_sqrtm_formula_on_singular_covariances() -> None:
    # N < d: both covariances are singular (the small monthly batches of this project).
    rng = np.random.default_rng(4)
    d, n = 64, 20
    f1 = rng.standard_normal((n, d))
    f2 = rng.standard_normal((n, d)) * 1.3 + 0.4
    ours = frechet_distance_features(f1, f2)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    assert not _psd_factor(s1)[1]  # rank 19 of 64: Cholesky fails, the eigh path is taken
    # sqrtm of a singular product is ill-conditioned; pytorch-fid adds eps*I for that reason.
    reference = sqrtm_frechet(f1.mean(0), s1, f2.mean(0), s2)
    assert np.isfinite(ours) and ours > 0
    assert ours == pytest.approx(reference, rel=1e-5)


def test_zero_covariance_is_finite() -> None:
    zero = np.zeros((5, 5))
    mu = np.arange(5.0)
    assert frechet_distance(mu, zero, mu + 1.0, zero) == pytest.approx(5.0)
    assert frechet_distance(mu, zero, mu, np.eye(5)) == pytest.approx(5.0)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="covariances must be"):
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


def test_kid_of_identical_sets_is_near_zero_and_shifted_sets_positive() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((200, 16))
    same = kernel_inception_distance(x, x.copy(), num_subsets=20, subset_size=100)
    same_distribution = kernel_inception_distance(x, rng.standard_normal((200, 16)), num_subsets=20, subset_size=100)
    shifted = kernel_inception_distance(x, x + 1.0, num_subsets=20, subset_size=100)
    assert shifted.mean > 5.0  # cubic kernel, unit shift in 16 dims
    # Identical sets: ~0 on the scale of a real difference. (Slightly negative, as shared
    # samples put k(x, x) terms into the cross term that the unbiased within-set sums exclude.)
    assert abs(same.mean) < 0.02 * shifted.mean
    # Independent samples of one distribution: zero within the subset noise.
    assert abs(same_distribution.mean) < 3 * same_distribution.std + 1e-3
    assert abs(same_distribution.mean) < 0.01 * shifted.mean
    assert same.subset_size == 100 and shifted.num_subsets == 20


def test_kid_unbiased_mmd_matches_direct_sum() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((7, 3)) + 0.5
    k = lambda a, b: (a @ b / 3 + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(7) for j in range(7) if i != j) / 42
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(7)) / 42
    from gan_assets.metrics import mmd2_unbiased

    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_is_reproducible_and_refuses_tiny_sets() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    assert kernel_inception_distance(x, y, 5, 10, seed=3) == kernel_inception_distance(x, y, 5, 10, seed=3)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(x[:1], y)


def test_floor_is_small_for_one_distribution() -> None:
    rng = np.random.default_rng(8)
    real = rng.standard_normal((400, 8))
    floor = real_floor(real, seed=0, kid_num_subsets=10, kid_subset_size=100)
    assert floor.half_size == 200
    assert 0 <= floor.fid < 0.5
    # Two halves of one distribution: KID is zero within its subset noise.
    assert abs(floor.kid_mean) < 3 * floor.kid_std + 1e-3


def test_floor_needs_four_images() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        real_floor(np.zeros((3, 2)))


def test_memorization_detects_planted_copies() -> None:
    rng = np.random.default_rng(10)
    train_pixels = rng.uniform(-1, 1, (40, 8, 8)).astype(np.float32)
    train_features = rng.standard_normal((40, 16))
    fake_pixels = rng.uniform(-1, 1, (10, 8, 8)).astype(np.float32)
    fake_features = rng.standard_normal((10, 16))
    # Samples 2 and 7 reproduce training images 5 and 31.
    fake_pixels[2], fake_features[2] = train_pixels[5], train_features[5]
    fake_pixels[7], fake_features[7] = train_pixels[31], train_features[31]
    ids = [f"img{i}" for i in range(40)]
    report = memorization_report(fake_features, train_features, fake_pixels, train_pixels, 0.05, ids)
    assert report["feature_space"]["near_copies"] == 2
    assert report["pixel_space"]["near_copies"] == 2
    assert report["near_copy_fraction"] == pytest.approx(0.2)
    assert {p["nearest_training_id"] for p in report["closest"][:2]} == {"img5", "img31"}
    assert {p["sample"] for p in report["closest"][:2]} == {2, 7}
    assert report["closest"][0]["feature_distance"] == 0.0
    clean = memorization_report(np.delete(fake_features, [2, 7], 0), train_features,
                                np.delete(fake_pixels, [2, 7], 0), train_pixels, 0.05, ids)
    assert clean["near_copy_fraction"] == 0.0 and clean["near_copy_fraction_any_space"] == 0.0


def test_random_conv_extractor_is_deterministic_across_instances() -> None:
    images = np.random.default_rng(11).uniform(-1, 1, (6, 32, 32)).astype(np.float32)
    a, b = RandomConvExtractor(feature_dim=64, seed=3), RandomConvExtractor(feature_dim=64, seed=3, batch_size=4)
    assert a.weights_sha256 == b.weights_sha256
    fa, fb = a.extract(images), b.extract(images)
    assert fa.shape == (6, 64) and fa.dtype == np.float32
    np.testing.assert_allclose(fa, fb, rtol=1e-5, atol=1e-6)
    assert np.std(fa, axis=0).mean() > 0  # features actually vary with the image
    other = RandomConvExtractor(feature_dim=64, seed=4)
    assert other.weights_sha256 != a.weights_sha256
    assert not np.allclose(other.extract(images), fa)


def test_fingerprint_changes_with_extractor() -> None:
    a = RandomConvExtractor(feature_dim=64, seed=0)
    fp = a.fingerprint(32, n_real=10, n_fake=12)
    assert {"extractor", "weights_sha256", "input_size", "resize_filter", "feature_dim", "n_real", "n_fake", "dtype", "id"} <= set(fp)
    assert fp["input_size"] == 32 and fp["feature_dim"] == 64 and fp["n_fake"] == 12
    assert a.fingerprint(32, 10, 12) == fp
    for other in (RandomConvExtractor(feature_dim=64, seed=1), RandomConvExtractor(feature_dim=128, seed=0),
                  RandomConvExtractor(feature_dim=64, seed=0, input_size=48)):
        changed = other.fingerprint(32, 10, 12)
        assert changed["id"] != fp["id"]
        assert compare_fingerprints(fp, changed)
    assert a.fingerprint(64, 10, 12)["id"] != fp["id"]
    assert compare_fingerprints(fp, a.fingerprint(32, 10, 20)) == ["n_fake: 12 vs 20"]


class _TinyFeatures(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 2).flatten(1)


def test_torchscript_extractor_from_a_scripted_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _TinyFeatures().eval()
    path = tmp_path / "features.pt"
    torch.jit.script(module).save(str(path))
    extractor = TorchScriptExtractor(str(path), input_size=24, resize_filter="bicubic", input_range="0..1", batch_size=3)
    assert extractor.feature_dim == 20
    images = np.random.default_rng(12).uniform(-1, 1, (5, 16, 16)).astype(np.float32)
    features = extractor.extract(images)
    # Independent expectation: resize, map to [0, 1], replicate grey to RGB, run the eager module.
    x = torch.from_numpy(images).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(24, 24), mode="bicubic", align_corners=False)
    x = ((x + 1) / 2).repeat(1, 3, 1, 1)
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    fp = extractor.fingerprint(16, 5, 5)
    import hashlib

    assert fp["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert fp["extractor"] == "torchscript:features.pt" and fp["input_size"] == 24 and fp["resize_filter"] == "bicubic"
    # A traced variant of other weights is another fingerprint.
    torch.manual_seed(1)
    traced = tmp_path / "traced.pt"
    torch.jit.trace(_TinyFeatures().eval(), torch.zeros(1, 3, 24, 24)).save(str(traced))
    other = TorchScriptExtractor(str(traced), input_size=24, resize_filter="bicubic", input_range="0..1")
    assert other.fingerprint(16, 5, 5)["id"] != fp["id"]


def test_torchscript_extractor_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ExtractorError, match="torchscript_path"):
        TorchScriptExtractor(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a network")
    with pytest.raises(ExtractorError, match="not a loadable TorchScript"):
        TorchScriptExtractor(str(junk))
    with pytest.raises(ExtractorError, match="resize_filter"):
        RandomConvExtractor(feature_dim=64, resize_filter="lanczos")


def test_real_feature_cache_hits_and_notices_new_images(tmp_path: Path) -> None:
    store = store_from_uri(str(tmp_path))
    extractor = RandomConvExtractor(feature_dim=32, seed=0)
    packed = pack_images(np.random.default_rng(13).uniform(-1, 1, (6, 32, 32)))
    first = real_features_cached(store, "2026-02-01", extractor, packed)
    assert not first.cache_hit and first.key == real_features_key(extractor.fingerprint_id(32), "2026-02-01")
    second = real_features_cached(store, "2026-02-01", RandomConvExtractor(feature_dim=32, seed=0), packed)
    assert second.cache_hit
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.stats.sigma, second.stats.sigma)
    changed = packed.copy()
    changed[0, 0, 0] ^= 1
    assert not real_features_cached(store, "2026-02-01", extractor, changed).cache_hit
    assert not real_features_cached(store, "2026-02-01", RandomConvExtractor(feature_dim=32, seed=9), changed).cache_hit


def test_real_feature_cache_on_s3(s3_bucket: str, s3_settings: object) -> None:
    # The same cache through the S3 store, against moto's server on 127.0.0.1.
    store = store_from_uri(f"s3://{s3_bucket}/gan", s3_settings)
    extractor = RandomConvExtractor(feature_dim=16, seed=0)
    packed = pack_images(np.random.default_rng(14).uniform(-1, 1, (5, 32, 32)))
    first = real_features_cached(store, "2026-03-01", extractor, packed)
    assert not first.cache_hit and first.uri == f"s3://{s3_bucket}/gan/{first.key}"
    second = real_features_cached(store, "2026-03-01", extractor, packed)
    assert second.cache_hit
    np.testing.assert_array_equal(first.features, second.features)


def test_kid_subsets_are_smaller_than_the_sets_so_the_spread_is_real() -> None:
    # Real-sized sets (a month of a few hundred images) and a subset_size that used to cover them.
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((300, 16)), rng.standard_normal((240, 16)) + 0.3
    kid = kernel_inception_distance(x, y, num_subsets=200, subset_size=1000, seed=0)
    assert kid.subset_size == 120  # half of the smaller set
    assert kid.std > 0.0
    # Unbiased: the subset mean agrees with the unbiased MMD^2 of the full sets, written out here
    # from the kernel definition (an independent oracle), within the subsets' standard error.
    d = x.shape[1]
    k_xx, k_yy, k_xy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    full = ((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
            - 2 * k_xy.sum() / (m * n))
    assert full > 0.05  # a real difference, not noise around zero
    assert abs(kid.mean - full) < 4 * kid.std / np.sqrt(200) + 1e-9
