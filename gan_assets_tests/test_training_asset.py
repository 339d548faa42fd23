"""trained_generator materializes from stored preprocessed_images and its weights load back safely."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from gan_assets.assets.common import TRAINING_TAG
from gan_assets.assets.training import pack_window, trained_generator
from gan_assets.io_managers import LocalOpenFormatIOManager
from gan_assets.model.artifact import generator_from_bundle, sample_images
from gan_assets.model.config import TrainConfig
from gan_assets.partitions import monthly_partitions
from gan_assets.report.images import grid_png
from gan_assets.resources import GanConfig
from gan_assets.storage import ArrayBundle, LocalObjectStore, TensorBundle, decode, encode
from gan_assets.storage.images import encoding_attrs, pack_images

TINY = {"image_size": 32, "latent_dim": 16, "generator_width": 8, "discriminator_width": 8, "batch_size": 8,
        "steps": 4, "log_every": 2, "num_samples": 8, "fid_num_fake": 16, "device": "cpu"}
UPSTREAM = dg.AssetSpec("preprocessed_images", partitions_def=monthly_partitions)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def seed_month(root: Path, partition: str, n: int, size: int = 32) -> np.ndarray:
    """Write a preprocessed_images partition exactly as the ingest stage stores it."""
    rng = np.random.default_rng(len(partition) + n)
    packed = pack_images(rng.uniform(-1, 1, (n, size, size)).astype(np.float32))
    bundle = ArrayBundle(
        arrays={"images": packed, "ids": np.array([f"{partition}-{i}" for i in range(n)], dtype=np.str_)},
        attrs={**encoding_attrs(), "image_size": size, "partition": partition},
    )
    ext, data = encode(bundle)
    LocalObjectStore(root).put(f"preprocessed_images/{partition}.{ext}", data)
    return packed


def materialize(root: Path, partition: str, **config: object) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [UPSTREAM, trained_generator],
        partition_key=partition,
        resources={"io_manager": LocalOpenFormatIOManager(base_dir=str(root)),
                   "gan_config": GanConfig(**{**TINY, **config})},
        tags={"gan/attempt": "2"},
        raise_on_error=False,
    )


def test_materializes_over_the_window_and_weights_reload_exactly(artifacts_dir: Path) -> None:
    january = seed_month(artifacts_dir, "2026-01-01", 10)
    march = seed_month(artifacts_dir, "2026-03-01", 14)  # February is missing: allowed
    result = materialize(artifacts_dir, "2026-03-01")
    assert result.success

    stored = (artifacts_dir / "trained_generator" / "2026-03-01.pt").read_bytes()
    bundle = decode("pt", stored)  # torch.load(weights_only=True) inside
    assert isinstance(bundle, TensorBundle)
    attrs = bundle.attrs
    assert attrs["config"] == TrainConfig(**TINY).to_dict()
    assert attrs["attempt"] == 2
    fingerprint = attrs["data_fingerprint"]
    assert fingerprint["partitions"] == {"2026-01-01": 10, "2026-03-01": 14}
    assert fingerprint["n_images"] == 24
    assert len(fingerprint["sha256"]) == 64
    assert attrs["loss_history"]["step"] == [1, 2, 3, 4]
    assert attrs["device"] == "cpu" and attrs["fixed_noise_seed"] == 0

    # A fresh generator from the stored bundle reproduces the fixed-noise grid shown in the UI.
    generator = generator_from_bundle(bundle)
    again = generator_from_bundle(decode("pt", stored))
    samples = sample_images(generator, 64, seed=attrs["fixed_noise_seed"])
    assert np.array_equal(samples, sample_images(again, 64, seed=attrs["fixed_noise_seed"]))
    materialization = result.asset_materializations_for_node("trained_generator")[0]
    metadata = materialization.metadata
    shown = re.search(r"base64,([A-Za-z0-9+/=]+)\)", metadata["samples"].value).group(1)  # type: ignore[union-attr]
    assert base64.b64decode(shown) == grid_png(samples, columns=8)

    assert metadata["steps"].value == 4 and metadata["attempt"].value == 2
    assert metadata["device"].value == "cpu"
    assert metadata["images_per_second"].value > 0 and metadata["wall_seconds"].value > 0
    assert metadata["generator_parameters"].value == sum(p.numel() for p in generator.parameters())
    assert "data:image/png;base64," in metadata["loss_curve"].value  # type: ignore[operator]
    assert np.isfinite(metadata["final_loss_d"].value)
    # the same packed bytes give the same fingerprint (what a reader checks against)
    _, same = pack_window({"2026-01-01": ArrayBundle({"images": january}),
                           "2026-03-01": ArrayBundle({"images": march})}, 32)
    assert same == fingerprint


def test_empty_window_fails_with_a_clear_error(artifacts_dir: Path) -> None:
    result = materialize(artifacts_dir, "2026-05-01")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None
    assert "no training images in the window" in failure.to_string()


def test_image_size_mismatch_names_the_partition() -> None:
    with pytest.raises(ValueError, match=r"2026-04-01 has 64x64 images but gan_config.image_size=32"):
        pack_window({"2026-04-01": ArrayBundle({"images": np.zeros((2, 64, 64), np.uint8)})}, 32)


def test_training_runs_are_tagged() -> None:
    assert trained_generator.op.tags[TRAINING_TAG] == "true"
    assert trained_generator.op.pool == "gan_training"
    assert trained_generator.group_names_by_key[trained_generator.key] == "model"
