"""dicom_manifest and preprocessed_images materialized for one month on a small demo zone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from gan_assets.demo.data import BAD_KINDS, UNASSIGNED_KINDS, generate_landing_zone
from gan_assets.dicom.batch import preprocess_month, scan_month
from gan_assets.dicom.index import INDEX_SCHEMA, zone_summary
from gan_assets.dicom.landing_zone import SourceSpec
from gan_assets.dicom.preprocess import PreprocessOptions
from gan_assets.dicom.reasons import REASONS
from gan_assets.dicom.scan import MANIFEST_COLUMNS, ScanOptions
from gan_assets.report.document import data_counts
from gan_assets.storage import ArrayBundle, decode
from gan_assets.storage.images import unpack_images
from gan_assets_tests.factories import ingest_assets, ingest_resources

FILES_PER_MONTH = 10
ASSETS = ingest_assets()
DATED_BAD = {kind: code for kind, code in BAD_KINDS.items() if kind not in UNASSIGNED_KINDS}


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("landing_zone")
    generate_landing_zone(root, seed=0, files_per_month=FILES_PER_MONTH, sizes=(256,), workers=1)
    return root


def _resources(zone: Path, artifacts: Path, **preprocess: Any) -> dict[str, Any]:
    return ingest_resources(zone, artifacts, **preprocess)


def _load(artifacts: Path, rel: str) -> Any:
    path = artifacts / rel
    return decode(path.suffix[1:], path.read_bytes(), where=str(path))


def test_one_month_end_to_end(zone: Path, artifacts_dir: Path) -> None:
    result = dg.materialize(ASSETS, partition_key="2026-02-01", resources=_resources(zone, artifacts_dir))
    assert result.success
    manifest = _load(artifacts_dir, "dicom_manifest/2026-02-01.parquet")
    assert isinstance(manifest, pd.DataFrame) and tuple(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == FILES_PER_MONTH + len(DATED_BAD)
    assert (manifest["status"] == "ok").sum() == FILES_PER_MONTH
    rejected = manifest[manifest["status"] == "rejected"]
    assert sorted(rejected["reason_code"]) == sorted(DATED_BAD.values())
    assert (rejected["reason"].str.len() > 10).all()  # a sentence, not a code

    bundle = _load(artifacts_dir, "preprocessed_images/2026-02-01.npz")
    assert isinstance(bundle, ArrayBundle)
    images, ids = bundle["images"], bundle["ids"]
    assert images.dtype == np.uint8 and images.shape == (FILES_PER_MONTH, 32, 32)
    assert ids.dtype.kind == "U" and len(set(ids.tolist())) == FILES_PER_MONTH
    assert set(ids.tolist()) == set(manifest.loc[manifest["status"] == "ok", "id"])
    floats = unpack_images(images)
    assert floats.min() == -1.0 and floats.max() > 0.5  # air is black, bone bright
    attrs = bundle.attrs
    assert attrs["image_size"] == 32 and attrs["partition"] == "2026-02-01" and attrs["encoding"] == "uint8"
    assert attrs["voi"]["policy"] == "header" and attrs["voi"]["used"] == {"header": FILES_PER_MONTH}
    # Counted in = counted out.
    assert attrs["files_used"] + sum(attrs["rejected_by_reason"].values()) == attrs["files_seen"] == len(manifest)
    # The report counts rejects with the same rule: its numbers are the asset's.
    assert data_counts(manifest, attrs["rejected_at_decode"])["rejects_by_reason"] == attrs["rejected_by_reason"]

    meta = result.asset_materializations_for_node("preprocessed_images")[0].metadata
    assert meta["n_images"].value == FILES_PER_MONTH and meta["voi_policy"].value == "header"
    assert meta["preview"].value.startswith("![2026-02 preprocessed images](data:image/png;base64,")
    assert meta["images_per_second"].value > 0
    manifest_meta = result.asset_materializations_for_node("dicom_manifest")[0].metadata
    assert manifest_meta["files_seen"].value == len(manifest)
    assert manifest_meta["rejected_by_reason"].value == {v: 1 for v in DATED_BAD.values()}
    rejects = manifest_meta["rejects"]
    assert isinstance(rejects, dg.TableMetadataValue) and [c.name for c in rejects.schema.columns] == ["reason_code", "reason", "files"]
    assert {r.data["reason_code"]: r.data["files"] for r in rejects.records} == manifest_meta["rejected_by_reason"].value
    assert all(r.data["reason"] == REASONS[r.data["reason_code"]] for r in rejects.records)
    # The undated and non-DICOM files of every month are in the index's unassigned table.
    index_meta = result.asset_materializations_for_node("landing_zone_index")[0].metadata
    assert index_meta["unassigned_by_reason"].value == {"no_usable_date": 3, "not_dicom": 3}
    assert manifest_meta["landing_zone_unassigned"].value == 6
    index = _load(artifacts_dir, "landing_zone_index.parquet")
    assert zone_summary(index, {"2026-01", "2026-02", "2026-03"}) == {
        "files": 3 * (FILES_PER_MONTH + len(BAD_KINDS)), "unassigned": 6,
        "unassigned_by_reason": {"no_usable_date": 3, "not_dicom": 3}}
    # Only ids and codes: the stored index declares its schema, and it is the one in the code.
    assert index.schema.remove_metadata().equals(INDEX_SCHEMA.remove_metadata())
    assert manifest_meta["modalities"].value == {"CT": FILES_PER_MONTH}


def test_month_without_usable_images_fails_clearly(zone: Path, artifacts_dir: Path) -> None:
    empty = dg.materialize(ASSETS, partition_key="2026-05-01", resources=_resources(zone, artifacts_dir),
                           raise_on_error=False)
    assert not empty.success
    failure = [e for e in empty.all_events if e.is_step_failure][0]
    text = str(failure.event_specific_data.error)
    assert "2026-05: no usable images" in text and "0 file(s) seen" in text

    only_mr = dg.materialize(ASSETS, partition_key="2026-03-01", raise_on_error=False,
                             resources=_resources(zone, artifacts_dir, allowed_modalities=["MR"]))
    assert not only_mr.success
    text = str([e for e in only_mr.all_events if e.is_step_failure][0].event_specific_data.error)
    assert f"{FILES_PER_MONTH + len(DATED_BAD)} file(s) seen" in text
    # Every CT file (the 10 good ones and the truncated one) is excluded by modality first.
    assert f"{FILES_PER_MONTH + 1} modality_excluded" in text and "1 no_pixel_data" in text


def test_process_pool_gives_the_same_result_in_the_same_order(zone: Path) -> None:
    spec, options = SourceSpec(str(zone)), PreprocessOptions(image_size=32)
    serial_scan = scan_month(spec, "2026-01", ScanOptions(), key=b"k", workers=1)
    pooled_scan = scan_month(spec, "2026-01", ScanOptions(), key=b"k", workers=2, pool_threshold=1)
    assert pooled_scan.rows == serial_scan.rows
    serial = preprocess_month(spec, serial_scan.rows, options, key=b"k", workers=1)
    pooled = preprocess_month(spec, serial_scan.rows, options, key=b"k", workers=2, pool_threshold=1)
    assert pooled.ids == serial.ids and len(pooled.ids) == FILES_PER_MONTH
    np.testing.assert_array_equal(pooled.images, serial.images)
