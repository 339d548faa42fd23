"""No identifying DICOM value leaves ingest: not in stored objects, metadata or logs."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pydicom
import pytest

from gan_assets.demo.data import generate_landing_zone
from gan_assets.demo.phantom import PHI_MARKER, phi_values
from gan_assets.dicom.pseudonym import image_id, pseudonym_key
from gan_assets.resources import PSEUDONYM_KEY_ENV
from gan_assets.storage.stores import sha256_key
from gan_assets_tests.factories import assert_nothing_leaked, ingest_assets, ingest_resources, run_haystacks


def _phi_needles(zone: Path) -> set[str]:
    """Every identifying value planted in the zone, plus the folder and file names."""
    needles = {PHI_MARKER}
    for path in zone.rglob("*.dcm"):
        needles.update(part for part in path.relative_to(zone).parts[:-1] if part != "unsorted")
        needles.add(path.stem)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        needles.update(value for value in phi_values(ds) if len(value) >= 6)
    return needles


def test_no_phi_in_artifacts_metadata_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                             capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, "privacy-test-secret")
    zone, artifacts = tmp_path / "zone", tmp_path / "artifacts"
    generate_landing_zone(zone, seed=5, files_per_month=5, months=["2026-01"], sizes=(64,), workers=1)
    needles = _phi_needles(zone)
    assert len(needles) > 30
    # The scan can fail: it finds the planted values in the source files themselves.
    some_file = next(zone.rglob("CT0001.dcm"))
    assert any(n in t for t in [some_file.read_bytes().decode("latin-1")] for n in needles if n != PHI_MARKER)

    caplog.set_level(logging.DEBUG)
    with dg.instance_for_test() as instance:
        result = dg.materialize(ingest_assets(), partition_key="2026-01-01", instance=instance,
                                resources=ingest_resources(zone, artifacts))
        assert result.success
        haystacks = run_haystacks(instance, result, artifacts)
    stored = sorted(p for p in artifacts.rglob("*") if p.is_file())
    objects = {"landing_zone_index.parquet", "dicom_manifest/2026-01-01.parquet", "preprocessed_images/2026-01-01.npz"}
    assert {p.relative_to(artifacts).as_posix() for p in stored} == objects | {sha256_key(key) for key in objects}
    assert_nothing_leaked(haystacks, needles, caplog, capfd)


def test_ids_are_keyed_hashes_of_the_sop_instance_uid() -> None:
    uid = "1.2.826.0.1.3680043.8.498.12345"
    a = image_id(uid, pseudonym_key("secret-a"))
    b = image_id(uid, pseudonym_key("secret-b"))
    assert a != b and uid not in a and len(a) == 32 and int(a, 16) >= 0
    import hashlib
    import hmac

    assert b == hmac.new(b"secret-b", f"sop:{uid}".encode(), hashlib.sha256).hexdigest()[:32]
