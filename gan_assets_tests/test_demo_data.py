"""Demo landing zone: real DICOM files, deterministic, three months, the promised bad files."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from gan_assets.demo import main as demo_main
from gan_assets.demo.data import BAD_KINDS, generate_landing_zone, landing_zone_has_files
from gan_assets.demo.phantom import PHI_MARKER, phi_values
from gan_assets.dicom.landing_zone import LandingZone, SourceSpec
from gan_assets.dicom.scan import ScanOptions, scan_file


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_zone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zone")
    generate_landing_zone(root, seed=3, files_per_month=11, sizes=(64, 128), workers=1)
    return root


def test_counts_months_and_sizes(small_zone: Path) -> None:
    files = [p for p in small_zone.rglob("*.dcm")]
    assert len(files) == 3 * (11 + len(BAD_KINDS))
    good = [pydicom.dcmread(p) for p in files if "unsorted" not in p.parts]
    assert len(good) == 33
    assert Counter(ds.StudyDate[:6] for ds in good) == {"202601": 11, "202602": 11, "202603": 11}
    assert {ds.Rows for ds in good} == {64, 128}
    assert {int(ds.PixelRepresentation) for ds in good} == {0, 1}  # unsigned+intercept and signed
    for ds in good:
        assert ds.Modality == "CT" and ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.BitsAllocated == 16 and "RescaleIntercept" in ds and "WindowCenter" in ds
        hu = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
        # Air outside the body and dense bone inside: a CT-like range of HU.
        assert hu.min() < -900 and hu.max() > 300
        # Every identifying value is made up and carries the marker (or is a UID/birth date).
        assert PHI_MARKER in str(ds.PatientName) and PHI_MARKER in ds.PatientID
        assert PHI_MARKER in ds.AccessionNumber and PHI_MARKER in ds.InstitutionName
        assert len(ds.PatientBirthDate) == 8 and ds.PatientBirthDate.startswith("19")
        assert len(phi_values(ds)) >= 10


def test_deterministic_for_a_seed(tmp_path: Path, small_zone: Path) -> None:
    again = tmp_path / "again"
    generate_landing_zone(again, seed=3, files_per_month=11, sizes=(64, 128), workers=1)
    assert _digests(again) == _digests(small_zone)
    other = tmp_path / "other"
    generate_landing_zone(other, seed=4, files_per_month=11, sizes=(64, 128), workers=1)
    assert _digests(other) != _digests(small_zone)


def test_bad_files_are_rejected_for_their_reason(small_zone: Path) -> None:
    zone = LandingZone(SourceSpec(str(small_zone)))
    rows = {e.relative_path: scan_file(zone, e, b"k", ScanOptions()) for e in zone.list_files()}
    for rel, row in rows.items():
        if rel.startswith("unsorted/"):
            kind = next(k for k in BAD_KINDS if rel.endswith(f"_{k}.dcm"))
            assert (row["status"], row["reason_code"]) == ("rejected", BAD_KINDS[kind]), rel
        else:
            assert row["status"] == "ok", (rel, row["reason"])
    # Files without a usable date are filed under their arrival month, never dropped.
    months = Counter(row["month"] for row in rows.values())
    assert months == {"2026-01": 16, "2026-02": 16, "2026-03": 16}


def test_cli_writes_and_if_missing_keeps(tmp_path: Path) -> None:
    out = tmp_path / "lz"
    assert demo_main(["data", "--out", str(out), "--files-per-month", "2", "--sizes", "32",
                      "--months", "2026-01", "--workers", "1"]) == 0
    assert landing_zone_has_files(out)
    before = _digests(out)
    marker = out / "unsorted" / "keep.txt"
    marker.write_text("x")
    assert demo_main(["data", "--out", str(out), "--seed", "9", "--if-missing"]) == 0
    after = _digests(out)
    after.pop("unsorted/keep.txt")
    assert after == before  # --if-missing left an existing zone alone
    with pytest.raises(ValueError, match="YYYY-MM"):
        generate_landing_zone(tmp_path / "bad", months=["2026-13"])
