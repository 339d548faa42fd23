"""generated_samples: materialized on one month from seeded upstream artifacts; synthetic DICOM."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import SecondaryCaptureImageStorage

from gan_assets.assets.generation import generated_samples
from gan_assets.dicom.secondary_capture import SyntheticSeries, secondary_capture_bytes
from gan_assets.io_managers import ArtifactStorage
from gan_assets.metrics.controls import NEGATIVE_CONTROLS
from gan_assets.metrics.evaluation import ControlScore, FidScore, GateVerdict, MemorizationVerdict
from gan_assets.model.artifact import generator_from_bundle, sample_images
from gan_assets.model.config import GenerationConfig
from gan_assets.model.dcgan import build_generator
from gan_assets.partitions import monthly_partitions
from gan_assets.report.document import most_common_modality
from gan_assets.storage import ArrayBundle, ObjectStore, TensorBundle, decode, encode, store_from_uri
from gan_assets.storage.images import encoding_attrs, pack_images
from gan_assets.model.history import PromotedModel, list_attempts, promote, save_attempt
from gan_assets.storage.digest import state_dict_sha256
from gan_assets_tests.conftest import seed_zone_index, tiny_config_resources, tiny_train_config

UPSTREAM = ("dicom_manifest", "preprocessed_images", "trained_generator", "fid_score")
# PHI-looking values of the "source" month: none may reach a synthetic file.
SOURCE_IDS = ("pid-7f3a9c", "pid-0b12de", "pid-99aa01", "pid-5c5c5c")


def upstream_specs() -> list[dg.AssetSpec]:
    """Stand-ins for the upstream assets: loaded through the IO manager from seeded objects."""
    return [dg.AssetSpec(key, partitions_def=monthly_partitions) for key in UPSTREAM] + [dg.AssetSpec("landing_zone_index")]


def fid_score_value(partition: str, *, fid: float = 41.5, kid: float = 0.0123, passed: bool = True,
                    attempt: int = 1, max_attempts: int = 3, status: str | None = None,
                    config_diff: dict[str, Any] | None = None) -> dict[str, Any]:
    """A stored fid_score as the evaluation core writes it (FidScore.to_dict()), with chosen figures."""
    config = tiny_train_config().to_dict()
    threshold = 100.0
    controls = tuple(
        [ControlScore(name, "negative", 150.0 + 10 * i, 0.2, False) for i, name in enumerate(NEGATIVE_CONTROLS)]
        + [ControlScore("held_out_real", "positive", 12.5, 0.001, True)]
    )
    score = FidScore(
        fid=fid, kid_mean=kid, kid_std=0.002, kid_subsets=10, kid_subset_size=8, floor_fid=12.25, floor_kid=0.001,
        floor_kid_std=0.0005, floor_half_size=12, threshold=threshold, threshold_rule="absolute",
        status=status or ("passed" if passed else "failed"), attempt=attempt, max_attempts=max_attempts,
        n_real=24, n_reference=12, n_fake=12, feature_dim=64, small_sample=True, controls=controls,
        gate=GateVerdict(threshold=threshold, threshold_rule="absolute", rule="absolute: fid_threshold = 100",
                         discriminative=True, separation=12.0, min_separation=2.0),
        memorization=MemorizationVerdict(0.0, 0.01, False, {  # the shape memorization_report returns
            "threshold": 0.05, "n_generated": 12, "n_training": 24, "training_partitions": [partition],
            "feature_space": {"near_copies": 0, "near_copy_fraction": 0.0, "min_distance": 0.31},
            "pixel_space": {"near_copies": 0, "near_copy_fraction": 0.0, "min_distance": 0.42},
            "closest": [{"generated": 3, "training_id": "img007", "distance": 0.31}],
        }),
        fingerprint={"extractor": "offline-default", "feature_dim": 64, "id": "fp-test", "n_real": 12},
        extractor="offline-default", partition=partition, config=config, config_diff=config_diff or {},
    )
    return score.to_dict()


def seed_month(root: Path | ObjectStore, partition: str, *, modality: str = "MR",
               fid_score: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """Write the four upstream artifacts of one month as the IO manager would store them."""
    store = root if isinstance(root, ObjectStore) else store_from_uri(str(root))
    rng = np.random.default_rng(seed)
    n = 24
    # Smooth blobs rather than white noise: a recognisable "real" grid in the report.
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    real = np.stack([np.sin(3 * xx * (i % 5 + 1) + yy * (i % 3)) * 0.8 + rng.normal(0, 0.05, (32, 32))
                     for i in range(n)])
    preprocessed = ArrayBundle(
        arrays={"images": pack_images(real), "ids": np.array([f"img{i:03d}" for i in range(n)], dtype=np.str_)},
        attrs={**encoding_attrs(), "image_size": 32, "partition": partition},
    )
    torch.manual_seed(seed)
    config = tiny_train_config()
    generator = build_generator(config)
    trained = TensorBundle(
        tensors=generator.state_dict(),
        attrs={
            "config": config.to_dict(), "attempt": (fid_score or {}).get("attempt", 1),
            "data_fingerprint": {"partitions": {partition: n}, "n_images": n},
            "loss_history": {"step": [2, 4], "loss_d": [1.38, 1.21], "loss_g": [0.71, 0.93]},
            "timings": {"train_seconds": 0.5, "images_per_second": 64.0}, "device": "cpu",
        },
    )
    manifest = pd.DataFrame({
        "id": list(SOURCE_IDS),
        "modality": [modality, modality, "CT", modality],
        "rows": [32] * 4, "columns": [32] * 4, "frames": [1] * 4,
        "transfer_syntax": ["1.2.840.10008.1.2.1"] * 4, "photometric": ["MONOCHROME2"] * 4,
        "status": ["ok", "ok", "ok", "rejected"],
        "reason": ["", "", "", "unsupported photometric interpretation"],
    })
    values = {
        "preprocessed_images": preprocessed,
        "trained_generator": trained,
        "dicom_manifest": manifest,
        "fid_score": fid_score if fid_score is not None else fid_score_value(partition),
    }
    for asset, value in values.items():
        ext, data = encode(value)
        store.put(f"{asset}/{partition}.{ext}", data)
    seed_zone_index(store)
    # The model history as trained_generator and a passing fid_score leave it.
    attempt = int(trained.attrs["attempt"])
    key = save_attempt(store, partition, attempt, "seededrun", trained)
    if values["fid_score"].get("passed"):
        promote(store, PromotedModel(
            partition=partition, attempt=attempt, training_run_id="seededrun", scoring_run_id="seededrun",
            weights_key=key, weights_sha256=state_dict_sha256(trained.tensors), data_sha256="seeded-window",
            code_version="seeded", fid=values["fid_score"].get("fid"), kid_mean=values["fid_score"].get("kid_mean")))
    return values


def resources(root: Path, **generation: Any) -> dict[str, Any]:
    return {
        "io_manager": ArtifactStorage(root=str(root)),
        "artifact_store": ArtifactStorage(root=str(root)),
        **tiny_config_resources(generation=generation),
    }


def materialize_samples(root: Path, partition: str, instance: dg.DagsterInstance | None = None,
                        raise_on_error: bool = True, **generation: Any) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*upstream_specs(), generated_samples], partition_key=partition, resources=resources(root, **generation),
        instance=instance, raise_on_error=raise_on_error,
    )


def load(root: Path, key: str) -> Any:
    store = store_from_uri(str(root))
    return decode(key.rsplit(".", 1)[1], store.get(key))


def test_generated_samples_are_stored_and_load_back(artifacts_dir: Path) -> None:
    partition = "2026-03-01"
    seeded = seed_month(artifacts_dir, partition)
    result = materialize_samples(artifacts_dir, partition)

    bundle = load(artifacts_dir, f"generated_samples/{partition}.npz")
    images = bundle["images"]
    assert images.dtype == np.uint8 and images.shape == (8, 32, 32)
    assert bundle.attrs["seed"] == GenerationConfig().sample_seed and bundle.attrs["count"] == 8
    assert bundle.attrs["decode"] == "x = u / 127.5 - 1" and bundle.attrs["source_partition"] == partition
    assert bundle.attrs["generator_attempt"] == 1
    # The stored batch is the seeded generator's output for sample_seed (wiring: weights + seed).
    expected = pack_images(sample_images(generator_from_bundle(seeded["trained_generator"]), 8, seed=1234))
    assert np.array_equal(images, expected) and images.std() > 0

    grid = Image.open(io.BytesIO((artifacts_dir / "generated_samples" / f"{partition}.png").read_bytes()))
    # 8 images -> 3 columns x 3 rows of 32 px with 2 px padding.
    assert grid.size == (3 * 34 + 2, 3 * 34 + 2)
    assert np.array_equal(np.asarray(grid)[2:34, 2:34], images[0])

    metadata = result.asset_materializations_for_node("generated_samples")[0].metadata
    assert metadata["count"].value == 8 and metadata["seed"].value == 1234
    assert "data:image/png;base64," in metadata["preview"].value
    assert metadata["dicom_files"].value == 0
    assert not list((artifacts_dir / "generated_samples").glob(f"{partition}/*.dcm"))

    # Same seed, same weights -> the same images: the seed in attrs reproduces the batch.
    materialize_samples(artifacts_dir, partition)
    again = load(artifacts_dir, f"generated_samples/{partition}.npz")["images"]
    assert np.array_equal(images, again)
    other_seed = materialize_samples(artifacts_dir, partition, sample_seed=99)
    assert other_seed.success
    assert not np.array_equal(images, load(artifacts_dir, f"generated_samples/{partition}.npz")["images"])


def test_samples_come_from_the_promoted_weights_checked_by_hash(artifacts_dir: Path) -> None:
    partition = "2026-05-01"
    seeded = seed_month(artifacts_dir, partition)  # attempt 1, promoted
    store = store_from_uri(str(artifacts_dir))
    # A later attempt overwrote trained_generator but never passed: it is kept, not delivered.
    torch.manual_seed(99)
    later = TensorBundle(tensors=build_generator(tiny_train_config()).state_dict(),
                         attrs={**seeded["trained_generator"].attrs, "attempt": 2})
    ext, data = encode(later)
    store.put(f"trained_generator/{partition}.{ext}", data)
    save_attempt(store, partition, 2, "laterrun", later)
    assert len(list_attempts(store, partition)) == 2
    materialize_samples(artifacts_dir, partition)
    images = load(artifacts_dir, f"generated_samples/{partition}.npz")["images"]
    promoted = pack_images(sample_images(generator_from_bundle(seeded["trained_generator"]), 8, seed=1234))
    assert np.array_equal(images, promoted)
    attrs = load(artifacts_dir, f"generated_samples/{partition}.npz").attrs
    assert attrs["promoted"]["attempt"] == 1
    assert attrs["promoted"]["weights_sha256"] == state_dict_sha256(seeded["trained_generator"].tensors)

    # Weights changed after promotion: refused, with the object and both hashes named.
    key = attrs["promoted"]["weights_key"]
    store.put(key, encode(later)[1])
    result = materialize_samples(artifacts_dir, partition, raise_on_error=False)
    assert not result.success
    text = str(result.get_step_failure_events()[0].step_failure_data.error)
    assert "differs from the promoted" in text and key in text


def test_synthetic_dicoms_parse_carry_the_marking_and_no_phi(artifacts_dir: Path) -> None:
    partition = "2026-04-01"
    seed_month(artifacts_dir, partition, modality="MR")
    materialize_samples(artifacts_dir, partition, write_sample_dicoms=True, num_samples=5)
    images = load(artifacts_dir, f"generated_samples/{partition}.npz")["images"]
    files = sorted((artifacts_dir / "generated_samples" / partition).glob("*.dcm"))
    assert [f.name for f in files] == [f"sample_{i:04d}.dcm" for i in range(1, 6)]

    real = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    phi_values = [str(real.PatientName), str(real.PatientID), *SOURCE_IDS]
    sop_uids, series_uids = set(), set()
    for index, path in enumerate(files):
        raw = path.read_bytes()
        ds = pydicom.dcmread(path)
        assert raw[128:132] == b"DICM"  # Part 10 file with preamble
        assert ds.SOPClassUID == SecondaryCaptureImageStorage == ds.file_meta.MediaStorageSOPClassUID
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert "SYNTHETIC" in ds.ImageComments and "SYNTHETIC" in ds.SeriesDescription
        assert ds.ConversionType == "SYN" and ds.BurnedInAnnotation == "NO"
        assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName) == "SYNTHETIC^GAN"
        assert ds.Modality == "MR"  # the month's most common accepted modality
        assert ds.InstanceNumber == index + 1
        assert np.array_equal(ds.pixel_array, images[index])
        for tag in ("PatientBirthDate", "PatientSex"):
            assert not ds.get(tag)
        for keyword in ("PatientAddress", "OtherPatientIDs", "InstitutionName", "PatientAge", "OperatorsName"):
            assert keyword not in ds
        for value in phi_values:
            assert value.encode() not in raw
        # New UIDs: none copied from the real file
        assert ds.StudyInstanceUID != real.StudyInstanceUID
        sop_uids.add(ds.SOPInstanceUID)
        series_uids.add(ds.SeriesInstanceUID)
    assert len(sop_uids) == 5 and len(series_uids) == 1

    # A later run with fewer samples leaves no stale files behind.
    materialize_samples(artifacts_dir, partition, write_sample_dicoms=True, num_samples=2)
    assert len(list((artifacts_dir / "generated_samples" / partition).glob("*.dcm"))) == 2


def test_samples_refused_when_the_score_did_not_pass(artifacts_dir: Path) -> None:
    partition = "2026-05-01"
    seed_month(artifacts_dir, partition, fid_score=fid_score_value(partition, fid=250.0, passed=False))
    result = materialize_samples(artifacts_dir, partition, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert "did not pass" in str(failure.step_failure_data.error) or "did not pass" in failure.message
    assert not (artifacts_dir / "generated_samples" / f"{partition}.npz").exists()


def test_most_common_modality() -> None:
    frame = pd.DataFrame({"modality": ["CT", "mr", "MR", "CT", "US"], "status": ["ok", "ok", "ok", "rejected", "ok"]})
    assert most_common_modality(frame, "OT") == "MR"  # CT's second file was rejected
    tie = pd.DataFrame({"modality": ["US", "CT"], "status": ["ok", "ok"]})
    assert most_common_modality(tie, "OT") == "CT"
    assert most_common_modality(frame.iloc[0:0], "OT") == "OT"
    assert most_common_modality(pd.DataFrame({"modality": ["CT"], "status": ["rejected"]}), "OT") == "OT"


def test_secondary_capture_rejects_bad_input() -> None:
    series = SyntheticSeries.new("CT", "2026-03")
    with pytest.raises(ValueError, match="uint8 H x W"):
        secondary_capture_bytes(np.zeros((4, 4), np.float32), series, 1)
    with pytest.raises(ValueError, match="instance_number"):
        secondary_capture_bytes(np.zeros((4, 4), np.uint8), series, 0)
    with pytest.raises(ValueError, match="modality"):
        SyntheticSeries.new("C T;", "2026-03")
