"""Header scan and month batches: month assignment, reject reasons, S3 landing zone, pool order."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian

from gan_assets.demo.data import generate_landing_zone
from gan_assets.demo.phantom import SliceSpec, ct_dataset
from gan_assets.dicom.batch import preprocess_month, scan_month
from gan_assets.dicom.landing_zone import LandingZone, SourceSpec
from gan_assets.dicom.preprocess import PreprocessOptions
from gan_assets.dicom.pseudonym import file_ref, image_id
from gan_assets.dicom.scan import ScanOptions, parse_da, scan_file

KEY = b"test-key"


def _ct(tmp_path: Path, name: str, instance: int = 1, **fields: Any) -> Path:
    ds = ct_dataset(SliceSpec(0, 7, dt.date(2026, 2, 10), instance, 32, False, False))
    for keyword, value in fields.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _scan_dir(root: Path, options: ScanOptions = ScanOptions()) -> dict[str, dict[str, Any]]:
    zone = LandingZone(SourceSpec(str(root)))
    return {e.relative_path: scan_file(zone, e, KEY, options) for e in zone.list_files()}


def test_month_from_the_first_usable_date(tmp_path: Path) -> None:
    _ct(tmp_path, "study.dcm", 1)
    _ct(tmp_path, "series.dcm", 2, StudyDate=None, SeriesDate="20260315")
    _ct(tmp_path, "acq.dcm", 3, StudyDate="", SeriesDate=None, AcquisitionDate="20260405")
    _ct(tmp_path, "content.dcm", 4, StudyDate=None, SeriesDate=None, AcquisitionDate=None, ContentDate="20260501")
    _ct(tmp_path, "none.dcm", 5, StudyDate=None, SeriesDate=None, AcquisitionDate=None, ContentDate=None)
    rows = _scan_dir(tmp_path)
    assert (rows["study.dcm"]["month"], rows["study.dcm"]["month_source"]) == ("2026-02", "StudyDate")
    assert (rows["series.dcm"]["month"], rows["series.dcm"]["month_source"]) == ("2026-03", "SeriesDate")
    assert (rows["acq.dcm"]["month"], rows["acq.dcm"]["month_source"]) == ("2026-04", "AcquisitionDate")
    assert (rows["content.dcm"]["month"], rows["content.dcm"]["month_source"]) == ("2026-05", "ContentDate")
    none = rows["none.dcm"]
    assert (none["status"], none["reason_code"], none["month_source"]) == ("rejected", "no_usable_date", "arrival")
    assert parse_da("20261399") is None and parse_da("2026-01-01") is None and parse_da("1997.04.24") == dt.date(1997, 4, 24)


def test_rows_carry_geometry_and_pseudonyms(tmp_path: Path) -> None:
    path = _ct(tmp_path, "a/b.dcm")
    row = _scan_dir(tmp_path)["a/b.dcm"]
    import pydicom

    ds = pydicom.dcmread(path)
    assert row["id"] == image_id(ds.SOPInstanceUID, KEY) != image_id(ds.SOPInstanceUID, b"other")
    assert row["file_ref"] == file_ref("a/b.dcm", KEY)
    assert (row["modality"], row["rows"], row["columns"], row["frames"]) == ("CT", 32, 32, 1)
    assert row["transfer_syntax"] == ExplicitVRLittleEndian and row["photometric"] == "MONOCHROME2"
    assert row["status"] == "ok" and row["sop_class"] == "CT Image Storage"


def test_reject_reasons_on_real_files(tmp_path: Path) -> None:
    for name in ("MR_truncated.dcm", "no_meta.dcm", "rtplan.dcm", "MR_small.dcm", "SC_rgb_rle.dcm"):
        shutil.copy(get_testdata_file(name), tmp_path / name)
    data = Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes()
    (tmp_path / "rle_cut.dcm").write_bytes(data[: len(data) - 3000])
    (tmp_path / "header_cut.dcm").write_bytes(data[:700])
    _ct(tmp_path, "burned.dcm", 1, BurnedInAnnotation="YES")
    # MPEG-2 video: pydicom has no decoder at all; the reason must name the syntax.
    mpeg = _ct(tmp_path, "mpeg.dcm", 2)
    import pydicom

    ds = pydicom.dcmread(mpeg)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(mpeg, enforce_file_format=True)
    # Native pixel data shorter than Rows x Columns needs (an inconsistent header).
    _ct(tmp_path, "short.dcm", 3, Rows=64)
    rows = _scan_dir(tmp_path)
    codes = {name: (row["status"], row["reason_code"]) for name, row in rows.items()}
    assert codes["MR_small.dcm"] == ("ok", "")
    assert codes["SC_rgb_rle.dcm"] == ("ok", "")
    assert codes["MR_truncated.dcm"] == ("rejected", "truncated")
    assert codes["rle_cut.dcm"] == ("rejected", "truncated")
    assert codes["header_cut.dcm"][1] in {"unreadable", "truncated"}
    assert codes["no_meta.dcm"] == ("rejected", "not_dicom")
    assert codes["rtplan.dcm"] == ("rejected", "no_pixel_data")
    assert codes["burned.dcm"] == ("rejected", "burned_in_annotation")
    assert codes["mpeg.dcm"] == ("rejected", "no_decoder") and "MPEG2" in rows["mpeg.dcm"]["transfer_syntax_name"]
    assert codes["short.dcm"] == ("rejected", "invalid_image_header")
    kept = _scan_dir(tmp_path, ScanOptions(exclude_burned_in=False, allowed_modalities=("CT",), colour_policy="reject"))
    assert kept["burned.dcm"]["status"] == "ok"
    assert kept["MR_small.dcm"]["reason_code"] == "modality_excluded"


def test_scan_month_counts_duplicates_and_decode_rejects(tmp_path: Path) -> None:
    for i in range(3):
        _ct(tmp_path, f"s{i}.dcm", i + 1)
    shutil.copy(tmp_path / "s0.dcm", tmp_path / "s0_copy.dcm")  # same SOPInstanceUID
    # Passes the header checks, fails at decode: a JPEG 2000 stream of garbage.
    import pydicom

    ds = pydicom.dcmread(_ct(tmp_path, "garbage_j2k.dcm", 9))
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.90")
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x13" * 200])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "garbage_j2k.dcm", enforce_file_format=True)
    spec = SourceSpec(str(tmp_path))
    scan = scan_month(spec, "2026-02", ScanOptions(), key=KEY, workers=1)
    assert len(scan.rows) == 5 and scan.files_listed == 5
    assert sorted(r["reason_code"] for r in scan.rows) == ["", "", "", "", "duplicate"]
    result = preprocess_month(spec, scan.rows, PreprocessOptions(image_size=16), key=KEY, workers=1)
    assert result.images.shape == (3, 16, 16) and result.images.dtype == np.uint8
    assert [r["reason_code"] for r in result.rejected] == ["decode_failed"]
    assert result.files_in == 4 and result.files_ok == 3
    assert scan_month(spec, "2026-07", ScanOptions(), key=KEY, workers=1).rows == []


def test_s3_landing_zone(tmp_path: Path, s3_bucket: str, s3_client: Any, s3_settings: Any) -> None:
    root = tmp_path / "lz"
    generate_landing_zone(root, seed=1, files_per_month=4, months=["2026-01"], sizes=(32,), workers=1)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3_client.put_object(Bucket=s3_bucket, Key=f"incoming/{path.relative_to(root).as_posix()}", Body=path.read_bytes())
    spec = SourceSpec(f"s3://{s3_bucket}/incoming", s3_settings)
    local = scan_month(SourceSpec(str(root)), "2026-01", ScanOptions(), key=KEY, workers=1)
    # On S3 the arrival month is the upload time, so only files dated by their header match.
    remote = scan_month(spec, "2026-01", ScanOptions(), key=KEY, workers=1)
    dated = [r for r in local.rows if r["month_source"] != "arrival"]
    assert [(r["file_ref"], r["status"], r["reason_code"]) for r in remote.rows] == \
        [(r["file_ref"], r["status"], r["reason_code"]) for r in dated]
    ok = preprocess_month(spec, remote.rows, PreprocessOptions(image_size=16), key=KEY, workers=1)
    ok_local = preprocess_month(SourceSpec(str(root)), local.rows, PreprocessOptions(image_size=16), key=KEY, workers=1)
    assert len(ok.ids) == 4 and ok.ids == ok_local.ids
    np.testing.assert_array_equal(ok.images, ok_local.images)


def test_a_corrupt_element_rejects_a_file_only_where_ingest_reads_it(tmp_path: Path) -> None:
    """Scan and decode convert the same header elements: an element ingest reads (the window
    width) with a VR no reader knows makes the file ``unreadable`` at both; the same damage to
    one it never reads (the study description, the implementation class in the file meta) does
    not stop the file."""
    from gan_assets.dicom.preprocess import RejectError, preprocess_file

    def damaged(name: str, instance: int, element: bytes) -> Path:
        path = _ct(tmp_path, name, instance)
        data = path.read_bytes()
        assert data.count(element) == 1  # explicit VR little endian: the tag, then its VR
        path.write_bytes(data.replace(element, element[:4] + b"XX"))
        return path

    window = damaged("window.dcm", 1, bytes.fromhex("28005110") + b"DS")  # (0028,1051) WindowWidth
    described = damaged("described.dcm", 2, bytes.fromhex("08003010") + b"LO")  # (0008,1030) StudyDescription
    implementation = damaged("implementation.dcm", 3, bytes.fromhex("02001200") + b"UI")  # (0002,0012) in file meta
    rows = _scan_dir(tmp_path)
    assert (rows["window.dcm"]["status"], rows["window.dcm"]["reason_code"]) == ("rejected", "unreadable")
    assert (rows["described.dcm"]["status"], rows["described.dcm"]["reason_code"]) == ("ok", "")
    assert (rows["implementation.dcm"]["status"], rows["implementation.dcm"]["reason_code"]) == ("ok", "")
    options = PreprocessOptions(image_size=32)
    try:
        preprocess_file(str(window), options)
    except RejectError as err:
        assert err.code == "unreadable"
    else:
        raise AssertionError("a window width of an unknown VR was decoded")
    assert preprocess_file(str(described), options).images.shape == (1, 32, 32)
    assert preprocess_file(str(implementation), options).images.shape == (1, 32, 32)
