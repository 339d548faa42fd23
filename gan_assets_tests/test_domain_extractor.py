"""The domain encoder: deterministic, learns its pretext task, and its features see what random ones miss."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from gan_assets.assets.evaluation import fid_feature_extractor
from gan_assets.io_managers import ArtifactStorage
from gan_assets.metrics.controls import build_controls, split_reference
from gan_assets.metrics.domain_encoder import (
    PRETEXT_CLASSES,
    DomainEncoderSettings,
    pretext_transform,
    train_domain_encoder,
    weights_from_tensors,
    weights_to_tensors,
)
from gan_assets.metrics.extractors import DomainExtractor, ExtractorError, RandomConvExtractor
from gan_assets.metrics.frechet import frechet_distance_features
from gan_assets.partitions import monthly_partitions
from gan_assets.resources import FidExtractor, GanConfig
from gan_assets.storage import TensorBundle, decode, encode
from gan_assets.storage.images import pack_images
from gan_assets_tests.factories import seed_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The invariance term is on here so the tiny runs also exercise its code path.
TINY = DomainEncoderSettings(widths=(8, 16), steps=6, batch_size=8, projector_dim=16, invariance_weight=1.0)
UPSTREAM = dg.AssetSpec("preprocessed_images", partitions_def=monthly_partitions)


def oriented_family(count: int, seed: int, side: int = 32) -> np.ndarray:
    """Images whose only up/down cue is layout: a large disk above a small one (each disk is
    itself mirror-symmetric, so local patterns look the same either way up), plus texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / (side - 1)
    images = np.empty((count, side, side), np.float32)
    for i in range(count):
        cx = rng.uniform(0.35, 0.65)
        large = ((x - cx) ** 2 + (y - rng.uniform(0.25, 0.32)) ** 2) < rng.uniform(0.15, 0.19) ** 2
        small = ((x - cx - rng.normal(0, 0.05)) ** 2 + (y - rng.uniform(0.72, 0.8)) ** 2) < rng.uniform(0.06, 0.09) ** 2
        texture = rng.normal(0.0, 0.1, (side, side))
        images[i] = np.clip(-0.6 + 1.1 * large + 1.1 * small + texture, -1.0, 1.0)
    return images


def test_pretext_transforms_are_the_sixteen_distinct_ones() -> None:
    # Random values: no symmetry, so every transform differs (a linear ramp would not do:
    # its inversion equals its 180-degree rotation).
    image = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 1, 4, 4)).astype(np.float32))
    outputs = [pretext_transform(image, torch.tensor([label]))[0, 0] for label in range(PRETEXT_CLASSES)]
    assert torch.equal(outputs[0], image[0, 0])
    assert torch.equal(outputs[4], image[0, 0].flip(0))  # vertical flip
    assert torch.equal(outputs[2], image[0, 0].flip(0).flip(1))  # 180 degrees
    assert torch.equal(outputs[8], -image[0, 0])  # inversion
    flat = {tuple(o.flatten().tolist()) for o in outputs}
    assert len(flat) == PRETEXT_CLASSES


def test_training_is_deterministic_per_seed() -> None:
    images = oriented_family(12, seed=0)
    before = torch.get_rng_state()
    first = train_domain_encoder(images, seed=3, settings=TINY)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG stream is untouched
    second = train_domain_encoder(images, seed=3, settings=TINY)
    other = train_domain_encoder(images, seed=4, settings=TINY)
    assert first.state.keys() == second.state.keys()
    assert all(torch.equal(first.state[k], second.state[k]) for k in first.state)
    assert first.sha256 == second.sha256
    assert other.sha256 != first.sha256
    description = first.description
    assert description["image_count"] == 12 and description["settings"] == TINY.to_dict()
    assert len(description["images_sha256"]) == 64 and description["seconds"] > 0
    assert set(description["final_losses"]) == {"pretext", "invariance"}


def test_encoder_learns_its_pretext_task() -> None:
    settings = dataclasses.replace(DomainEncoderSettings(), widths=(8, 16, 32), steps=120, batch_size=32,
                                   learning_rate=5e-3)
    weights = train_domain_encoder(oriented_family(64, seed=1), seed=0, settings=settings)
    history = weights.description["history"]
    chance_loss = float(np.log(PRETEXT_CLASSES))
    assert history[0]["pretext_loss"] > history[-1]["pretext_loss"]
    # Mirror-symmetric images leave pairs of classes indistinguishable: the floor is log 2, the
    # best accuracy 1/2. Chance is log 16 and 1/16.
    assert history[-1]["pretext_loss"] < 0.75 * chance_loss
    assert history[-1]["pretext_accuracy"] > 4.0 / PRETEXT_CLASSES


def test_domain_features_and_fingerprint_follow_the_weights() -> None:
    images = oriented_family(10, seed=2)
    weights = train_domain_encoder(images, seed=0, settings=TINY)
    extractor = DomainExtractor(weights)
    features = extractor.extract(images)
    assert features.shape == (10, TINY.feature_dim) and features.dtype == np.float32
    assert np.all(np.isfinite(features))
    assert extractor.weights_sha256 == weights.sha256
    # Any side: native up to max_side, area-downsampled above it (as in training).
    assert extractor.extract(oriented_family(3, seed=4, side=48)).shape == (3, TINY.feature_dim)
    assert extractor.input_size_for(48) == 48 and extractor.input_size_for(256) == TINY.max_side
    # A stored and reloaded bundle (safetensors) is the same extractor.
    tensors, attrs = weights_to_tensors(weights)
    reloaded = weights_from_tensors(*_round_trip(tensors, attrs))
    again = DomainExtractor(reloaded)
    assert again.fingerprint(32, 10, 10) == extractor.fingerprint(32, 10, 10)
    assert np.array_equal(again.extract(images), features)
    # Other weights: another fingerprint. A damaged tensor: refused, naming the asset to rebuild.
    other = DomainExtractor(train_domain_encoder(images, seed=1, settings=TINY))
    assert other.fingerprint_id(32) != extractor.fingerprint_id(32)
    tampered = dict(tensors)
    name = next(k for k in tampered if k.endswith("weight"))
    tampered[name] = tampered[name] + 1.0
    with pytest.raises(ValueError, match="re-materialize fid_feature_extractor"):
        weights_from_tensors(tampered, attrs)


def _round_trip(tensors: dict[str, torch.Tensor], attrs: dict) -> tuple[dict[str, torch.Tensor], dict]:
    bundle = decode("safetensors", encode(TensorBundle(tensors=tensors, attrs=attrs))[1])
    return bundle.tensors, bundle.attrs


def test_resource_builds_the_domain_extractor_only_from_weights() -> None:
    images = oriented_family(8, seed=3)
    weights = train_domain_encoder(images, seed=0, settings=TINY)
    tensors, attrs = weights_to_tensors(weights)
    resource = FidExtractor(kind="domain")
    with pytest.raises(ExtractorError, match="build_domain"):
        resource.build()
    extractor = resource.build_domain(TensorBundle(tensors=tensors, attrs=attrs))
    assert extractor.weights_sha256 == weights.sha256
    with pytest.raises(ExtractorError, match="kind='domain'"):
        resource.build_domain(TensorBundle(tensors={}, attrs={"unused": True}))
    assert resource.build_for(TensorBundle(tensors=tensors, attrs=attrs)).weights_sha256 == weights.sha256
    with pytest.raises(ExtractorError, match="materialize fid_feature_extractor"):
        resource.build_for(None)
    # Other kinds ignore the bundle: random_conv keeps working with or without one.
    assert isinstance(FidExtractor(kind="random_conv").build(), RandomConvExtractor)
    assert isinstance(FidExtractor(kind="random_conv").build_for(TensorBundle(tensors={}, attrs={"unused": True})), RandomConvExtractor)


def test_domain_extractor_sees_flips_that_random_features_miss() -> None:
    """Trained on earlier images with an up/down cue, flipped held-out images must sit far from the reference."""
    train = oriented_family(96, seed=10)
    scored = oriented_family(64, seed=11)
    settings = dataclasses.replace(DomainEncoderSettings(), widths=(16, 32, 64), steps=150, batch_size=32,
                                   learning_rate=5e-3)
    domain = DomainExtractor(train_domain_encoder(train, seed=0, settings=settings))
    random_conv = RandomConvExtractor(feature_dim=64)
    split = split_reference(len(scored), seed=0)
    controls = {c.name: c.images for c in build_controls(scored, scored[split.held_out_index], seed=0)}

    def flip_separation(extractor: DomainExtractor | RandomConvExtractor) -> float:
        reference = extractor.extract(scored[split.reference_index])
        flipped = frechet_distance_features(reference, extractor.extract(controls["flipped_vertical"]))
        real = frechet_distance_features(reference, extractor.extract(controls["held_out_real"]))
        return flipped / real

    domain_separation, random_separation = flip_separation(domain), flip_separation(random_conv)
    assert domain_separation > 8.0
    assert domain_separation > 2.5 * random_separation


def seed_month(root: Path, partition: str, n: int, seed: int, size: int = 32) -> None:
    """A preprocessed_images partition of ``n`` oriented images, stored as the ingest stage stores it."""
    seed_images(root, partition, oriented_family(n, seed=seed, side=size))


def materialize(root: Path, partition: str, kind: str = "domain") -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [UPSTREAM, fid_feature_extractor],
        partition_key=partition,
        resources={"io_manager": ArtifactStorage(root=str(root)),
                   "gan_config": GanConfig(image_size=32),
                   "fid_extractor": FidExtractor(kind=kind, domain_steps=4)},
    )


def stored(root: Path, partition: str) -> TensorBundle:
    bundle = decode("safetensors", (root / "fid_feature_extractor" / f"{partition}.safetensors").read_bytes())
    assert isinstance(bundle, TensorBundle)
    return bundle


def test_asset_first_month_trains_on_the_held_out_half_only(artifacts_dir: Path) -> None:
    seed_month(artifacts_dir, "2026-01-01", 11, seed=5)
    result = materialize(artifacts_dir, "2026-01-01")
    bundle = stored(artifacts_dir, "2026-01-01")
    attrs = bundle.attrs
    split = split_reference(11, seed=0)
    assert attrs["trained_on"] == "held_out_half" and "held-out half" in attrs["split"]
    assert attrs["held_out_index"] == split.held_out_index.tolist()
    assert attrs["counts"] == {"2026-01-01": 5} and attrs["n_images"] == 5
    # Exactly the held-out images were trained on (the reference half never was).
    held_out = (pack_images(oriented_family(11, seed=5)).astype(np.float32) / 127.5 - 1.0)[split.held_out_index]
    from gan_assets.metrics.domain_encoder import images_sha256

    assert attrs["encoder"]["images_sha256"] == images_sha256(held_out)
    weights = weights_from_tensors(bundle.tensors, attrs)
    metadata = result.asset_materializations_for_node("fid_feature_extractor")[0].metadata
    assert metadata["weights_sha256"].value == weights.sha256 == attrs["weights_sha256"]
    assert metadata["trained_on"].value == "held_out_half"
    assert metadata["n_images"].value == 5 and metadata["steps"].value == 4
    assert np.isfinite(metadata["final_pretext_loss"].value)


def test_asset_later_month_trains_on_prior_months_only(artifacts_dir: Path) -> None:
    seed_month(artifacts_dir, "2026-01-01", 6, seed=6)
    seed_month(artifacts_dir, "2026-02-01", 7, seed=7)
    seed_month(artifacts_dir, "2026-03-01", 8, seed=8)
    materialize(artifacts_dir, "2026-03-01")
    attrs = stored(artifacts_dir, "2026-03-01").attrs
    assert attrs["trained_on"] == "prior_months"
    assert attrs["months"] == ["2026-01-01", "2026-02-01"]  # never the scored month
    assert attrs["counts"] == {"2026-01-01": 6, "2026-02-01": 7} and attrs["encoder"]["image_count"] == 13
    assert attrs["settings"]["steps"] == 4 and attrs["kind"] == "domain"
    assert fid_feature_extractor.op.pool == "gan_training"
    assert fid_feature_extractor.group_names_by_key[fid_feature_extractor.key] == "model"


def test_asset_is_a_quick_placeholder_when_the_kind_is_not_domain(artifacts_dir: Path) -> None:
    seed_month(artifacts_dir, "2026-02-01", 6, seed=9)
    result = materialize(artifacts_dir, "2026-02-01", kind="random_conv")
    bundle = stored(artifacts_dir, "2026-02-01")
    assert bundle.tensors == {} and bundle.attrs["unused"] is True and bundle.attrs["kind"] == "random_conv"
    assert result.asset_materializations_for_node("fid_feature_extractor")[0].metadata["unused"].value is True
    with pytest.raises(ExtractorError, match="kind='domain'"):
        FidExtractor(kind="domain").build_domain(bundle)


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="not both 0"):
        dataclasses.replace(TINY, invariance_weight=0.0, pretext_weight=0.0)
    with pytest.raises(ValueError, match="pool_grid"):
        dataclasses.replace(TINY, pool_grid=3)
    with pytest.raises(ValueError, match="at least 2"):
        train_domain_encoder(np.zeros((1, 32, 32), np.float32), seed=0, settings=TINY)
