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
from gan_assets.model.artifact import generator_from_bundle, sample_images
from gan_assets.model.config import GenerationConfig
from gan_assets.model.dcgan import build_generator
from gan_assets.report.document import most_common_modality
from gan_assets.storage import TensorBundle, decode, encode, store_from_uri
from gan_assets.storage.images import pack_images
from gan_assets.model.history import list_attempts, save_attempt
from gan_assets.storage.digest import state_dict_sha256
from gan_assets_tests.factories import (
    SOURCE_IDS,
    delivery_resources,
    fid_score_value,
    seed_artifact,
    seed_month,
    tiny_train_config,
    upstream_specs,
)

def materialize_samples(root: Path, partition: str, instance: dg.DagsterInstance | None = None,
                        raise_on_error: bool = True, **generation: Any) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*upstream_specs(), generated_samples], partition_key=partition, resources=delivery_resources(root, **generation),
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
    seed_artifact(store, "trained_generator", partition, later)
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
