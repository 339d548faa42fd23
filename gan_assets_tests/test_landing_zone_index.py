"""The landing-zone index: each file read once, months noticed when their files change, nothing dropped.

Every zone here is real DICOM written by pydicom (phantom CT slices), locally or on moto's S3
server. "Reads only new files" is proven by watching the files the code opens (a wrapper around
``LandingZone`` reads), not only by the counters the index reports about itself.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pyarrow as pa
import pydicom
import pytest
from dagster._core.definitions.data_version import DATA_VERSION_TAG, StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from pydicom.dataset import Dataset

from gan_assets.assets.ingest import dicom_manifest, dicom_source, landing_zone_index, preprocessed_images
from gan_assets.demo.phantom import SliceSpec, ct_dataset
from gan_assets.dicom.batch import preprocess_month, scan_row
from gan_assets.dicom.index import (
    EMPTY_MONTH,
    OUTSIDE_PARTITIONS,
    month_fingerprints,
    month_rows,
    months_to_report,
    observed_months,
    unassigned_rows,
    update_index,
    with_observed,
)
from gan_assets.dicom.landing_zone import FileChangedError, FileEntry, LandingZone, SourceSpec
from gan_assets.dicom.preprocess import PreprocessOptions
from gan_assets.dicom.pseudonym import file_ref, image_id
from gan_assets.dicom.scan import ScanOptions
from gan_assets.resources import PSEUDONYM_KEY_ENV, DicomSource, PreprocessConfig
from gan_assets.storage import S3Settings, decode
from gan_assets_tests.factories import (
    MOTO_CREDENTIALS,
    PATH_MARKER,
    TEST_MAX_DECODED,
    assert_no_needles,
    capture_logs_and_output,
    dicom_bytes,
    hostile_cases,
    hostile_ct,
    ingest_assets,
    ingest_resources,
    planted_needles,
    run_haystacks,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

KEY = b"landing-zone-index-test-key"
MONTHS = {"2026-01", "2026-02", "2026-03", "2026-04"}


def _slice(day: dt.date, patient: int, instance: int = 1, size: int = 32) -> Dataset:
    return ct_dataset(SliceSpec(11, patient, day, instance, size, False, False))


def _write(root: Path, rel: str, data: bytes, when: dt.datetime | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if when is not None:
        stamp = when.timestamp()
        os.utime(path, (stamp, stamp))
    return path


class ReadLog:
    """Relative paths of the files the landing zone actually opened (local or S3), in order."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def take(self) -> list[str]:
        out, self.paths = self.paths, []
        return out


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> ReadLog:
    """Every open of a zone file: local opens all go through ``_open_local``; S3 header and
    content reads through ``open_header`` / ``read_header`` / ``read_bytes`` / ``read_verified``."""
    log = ReadLog()
    for name in ("_open_local", "open_header", "read_header", "read_bytes", "read_verified"):
        real = getattr(LandingZone, name)

        def wrapper(self: LandingZone, entry: FileEntry, _real: Any = real, _name: str = name) -> Any:
            if _name == "_open_local" or self.spec.is_s3:
                log.paths.append(entry.relative_path)
            return _real(self, entry)

        monkeypatch.setattr(LandingZone, name, wrapper)
    return log


def _month_zone(root: Path) -> dict[str, Path]:
    """Two files in February, two in March (dated by their headers)."""
    files = {
        "feb/a.dcm": _slice(dt.date(2026, 2, 3), 1),
        "feb/b.dcm": _slice(dt.date(2026, 2, 4), 2),
        "mar/a.dcm": _slice(dt.date(2026, 3, 3), 3),
        "mar/b.dcm": _slice(dt.date(2026, 3, 4), 4),
    }
    return {rel: _write(root, rel, dicom_bytes(ds)) for rel, ds in files.items()}


def _bump_mtime(path: Path, seconds: int = 5) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_update_reads_only_new_or_changed_files(tmp_path: Path, reads: ReadLog) -> None:
    paths = _month_zone(tmp_path)
    spec, options = SourceSpec(str(tmp_path)), ScanOptions()

    first = update_index(spec, None, options, key=KEY, workers=1)
    assert first.rebuilt and first.files_read == 4 and first.files_listed == 4
    assert set(reads.take()) == set(paths)  # every file opened
    prints = month_fingerprints(first.table)
    assert sorted(prints) == ["2026-02", "2026-03"]

    again = update_index(spec, first.table, options, key=KEY, workers=1)
    assert reads.take() == []  # not one file opened
    assert (again.files_read, again.unchanged, again.deleted, again.rebuilt) == (0, 4, 0, False)
    assert again.table.to_pylist() == first.table.to_pylist()
    assert again.months_touched == []

    # A new March file: it alone is read, and only March's fingerprint moves.
    _write(tmp_path, "mar/c.dcm", dicom_bytes(_slice(dt.date(2026, 3, 5), 5)))
    added = update_index(spec, again.table, options, key=KEY, workers=1)
    assert set(reads.take()) == {"mar/c.dcm"}
    assert (added.new, added.changed, added.deleted, added.unchanged) == (1, 0, 0, 4)
    after_add = month_fingerprints(added.table)
    assert after_add["2026-02"] == prints["2026-02"] and after_add["2026-03"] != prints["2026-03"]
    assert added.months_touched == ["2026-03"]
    assert len(month_rows(added.table, "2026-03")) == 3

    # A February file rewritten with another image (new content, new modification time).
    _write(tmp_path, "feb/a.dcm", dicom_bytes(_slice(dt.date(2026, 2, 3), 6)))
    _bump_mtime(paths["feb/a.dcm"])
    rewritten = update_index(spec, added.table, options, key=KEY, workers=1)
    assert set(reads.take()) == {"feb/a.dcm"}
    assert (rewritten.new, rewritten.changed, rewritten.deleted) == (0, 1, 0)
    after_rewrite = month_fingerprints(rewritten.table)
    assert after_rewrite["2026-02"] != after_add["2026-02"] and after_rewrite["2026-03"] == after_add["2026-03"]
    new_id = image_id(_slice(dt.date(2026, 2, 3), 6).SOPInstanceUID, KEY)
    assert new_id in {row["id"] for row in month_rows(rewritten.table, "2026-02")}

    # A March file deleted: no read, one row gone, March's fingerprint moves.
    paths["mar/b.dcm"].unlink()
    deleted = update_index(spec, rewritten.table, options, key=KEY, workers=1)
    assert reads.take() == []
    assert (deleted.files_read, deleted.deleted, deleted.unchanged) == (0, 1, 4)
    assert file_ref("mar/b.dcm", KEY) not in set(deleted.table.column("file_ref").to_pylist())
    after_delete = month_fingerprints(deleted.table)
    assert after_delete["2026-03"] != after_rewrite["2026-03"] and after_delete["2026-02"] == after_rewrite["2026-02"]
    assert deleted.months_touched == ["2026-03"]


def test_fingerprint_is_order_free_and_content_bound(tmp_path: Path) -> None:
    """Two zones with the same files give the same fingerprints (an independent rebuild agrees with
    the incremental result); the same names with other bytes do not."""
    _month_zone(tmp_path / "one")
    incremental = update_index(SourceSpec(str(tmp_path / "one")), None, ScanOptions(), key=KEY, workers=1).table
    _write(tmp_path / "one", "mar/c.dcm", dicom_bytes(_slice(dt.date(2026, 3, 5), 5)))
    incremental = update_index(SourceSpec(str(tmp_path / "one")), incremental, ScanOptions(), key=KEY, workers=1).table

    _month_zone(tmp_path / "two")
    _write(tmp_path / "two", "mar/c.dcm", dicom_bytes(_slice(dt.date(2026, 3, 5), 5)))
    fresh = update_index(SourceSpec(str(tmp_path / "two")), None, ScanOptions(), key=KEY, workers=1).table
    # mtimes differ between the zones; the fingerprint is of references and content only.
    assert month_fingerprints(incremental) == month_fingerprints(fresh)

    _write(tmp_path / "two", "mar/c.dcm", dicom_bytes(_slice(dt.date(2026, 3, 5), 7)))
    other = update_index(SourceSpec(str(tmp_path / "two")), None, ScanOptions(), key=KEY, workers=1).table
    assert month_fingerprints(other)["2026-03"] != month_fingerprints(fresh)["2026-03"]
    assert month_fingerprints(other)["2026-02"] == month_fingerprints(fresh)["2026-02"]


def test_a_month_emptied_after_it_was_observed_is_reported_empty(tmp_path: Path) -> None:
    _month_zone(tmp_path)
    april = _write(tmp_path, "apr/a.dcm", dicom_bytes(_slice(dt.date(2026, 4, 2), 8)))
    spec = SourceSpec(str(tmp_path))
    table = update_index(spec, None, ScanOptions(), key=KEY, workers=1).table
    reported = months_to_report(table, MONTHS)
    assert sorted(reported) == ["2026-02", "2026-03", "2026-04"]  # January has no file: nothing to say
    assert reported == month_fingerprints(table, MONTHS)
    table = with_observed(table, reported)
    assert months_to_report(table, MONTHS) == {}

    april.unlink()
    update = update_index(spec, table, ScanOptions(), key=KEY, workers=1)
    assert observed_months(update.table) == reported  # what was reported travels with the index
    assert months_to_report(update.table, MONTHS) == {"2026-04": EMPTY_MONTH}
    settled = with_observed(update.table, {**observed_months(update.table), "2026-04": EMPTY_MONTH})
    assert months_to_report(settled, MONTHS) == {}  # reported once, not on every update


@pytest.mark.parametrize("change", ["scan_options", "pseudonym_key"])
def test_another_scan_policy_rebuilds_the_whole_index(tmp_path: Path, reads: ReadLog, change: str) -> None:
    paths = _month_zone(tmp_path)
    spec = SourceSpec(str(tmp_path))
    table = update_index(spec, None, ScanOptions(), key=KEY, workers=1).table
    reads.take()
    options, key = (ScanOptions(exclude_burned_in=False), KEY) if change == "scan_options" else (ScanOptions(), b"another key")
    update = update_index(spec, table, options, key=key, workers=1)
    assert update.rebuilt and update.files_read == 4 and update.unchanged == 0 and update.deleted == 0
    assert set(reads.take()) == set(paths)
    # Same policy as the new table: no rebuild.
    assert not update_index(spec, update.table, options, key=key, workers=1).rebuilt


def test_entries_that_cannot_be_read_do_not_count_as_changed_on_every_update(tmp_path: Path, reads: ReadLog) -> None:
    _write(tmp_path, "a.dcm", dicom_bytes(_slice(dt.date(2026, 2, 3), 1)))
    os.symlink(tmp_path / "nowhere.dcm", tmp_path / "dangling.dcm")
    os.mkfifo(tmp_path / "fifo.dcm")
    spec = SourceSpec(str(tmp_path))
    first = update_index(spec, None, ScanOptions(), key=KEY, workers=1)
    assert first.files_listed == 3 and len(unassigned_rows(first.table, MONTHS)) == 2
    reads.take()
    again = update_index(spec, first.table, ScanOptions(), key=KEY, workers=1)
    assert reads.take() == []  # nothing is opened
    assert (again.files_read, again.changed, again.unchanged, again.months_touched) == (0, 0, 3, [])


def test_a_transient_read_error_is_retried_on_the_next_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _month_zone(tmp_path)
    spec = SourceSpec(str(tmp_path))
    real_open = LandingZone._open_local  # every local open goes through it

    def denied(self: LandingZone, entry: FileEntry) -> Any:
        if entry.relative_path == "feb/a.dcm":
            raise PermissionError(13, "Permission denied")  # fixed later by chmod: the mtime does not move
        return real_open(self, entry)

    with monkeypatch.context() as patch:
        patch.setattr(LandingZone, "_open_local", denied)
        table = update_index(spec, None, ScanOptions(), key=KEY, workers=1).table
    # A read error is not the file's fault: its own code, and it is read again next time.
    assert {row["reason_code"] for row in unassigned_rows(table, MONTHS)} == {"io_error"}
    update = update_index(spec, table, ScanOptions(), key=KEY, workers=1)
    assert update.files_read == 1
    assert [row["status"] for row in month_rows(update.table, "2026-02")] == ["ok", "ok"]


def test_an_undated_file_touches_no_month(tmp_path: Path) -> None:
    _month_zone(tmp_path)
    spec = SourceSpec(str(tmp_path))
    table = update_index(spec, None, ScanOptions(), key=KEY, workers=1).table
    undated = _slice(dt.date(2026, 2, 3), 12)
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        delattr(undated, keyword)
    _write(tmp_path, "undated.dcm", dicom_bytes(undated), dt.datetime(2026, 3, 15, tzinfo=dt.timezone.utc))
    update = update_index(spec, table, ScanOptions(), key=KEY, workers=1)
    assert update.new == 1 and month_fingerprints(update.table) == month_fingerprints(table)
    assert update.months_touched == []


def test_undated_unreadable_and_out_of_range_files_are_unassigned_with_a_reason(tmp_path: Path) -> None:
    feb_arrival = dt.datetime(2026, 2, 15, 12, tzinfo=dt.timezone.utc)
    undated = _slice(dt.date(2026, 2, 3), 1)
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        delattr(undated, keyword)
    files = {
        "good.dcm": dicom_bytes(_slice(dt.date(2026, 2, 3), 2)),
        "undated.dcm": dicom_bytes(undated),
        "notes.txt.dcm": b"not a DICOM file at all\n" * 10,
        "old.dcm": dicom_bytes(_slice(dt.date(2019, 6, 1), 3)),
        "future.dcm": dicom_bytes(_slice(dt.date(2099, 1, 1), 4)),
    }
    # All arrive in February: an undated file must not be filed under its arrival month.
    for rel, data in files.items():
        _write(tmp_path, rel, data, feb_arrival)
    table = update_index(SourceSpec(str(tmp_path)), None, ScanOptions(), key=KEY, workers=1).table

    unassigned = {row["file_ref"]: (row["month"], row["reason_code"]) for row in unassigned_rows(table, MONTHS)}
    by_ref = {file_ref(rel, KEY): rel for rel in files}
    assert {by_ref[ref]: value for ref, value in unassigned.items()} == {
        "undated.dcm": ("", "no_usable_date"),
        "notes.txt.dcm": ("", "not_dicom"),
        "old.dcm": ("2019-06", OUTSIDE_PARTITIONS),
        "future.dcm": ("2099-01", OUTSIDE_PARTITIONS),
    }
    assert all(len(row["reason"]) > 20 for row in unassigned_rows(table, MONTHS))
    assert [row["file_ref"] for row in month_rows(table, "2026-02")] == [file_ref("good.dcm", KEY)]

    # Every file is in exactly one place: some partition month's rows, or unassigned.
    placed = Counter(row["file_ref"] for month in MONTHS for row in month_rows(table, month))
    placed.update(list(unassigned))
    assert placed == Counter(by_ref.keys())

    # Once 2019-06 is a partition the old file is a manifest row of it, no longer unassigned.
    widened = MONTHS | {"2019-06"}
    assert [row["file_ref"] for row in month_rows(table, "2019-06")] == [file_ref("old.dcm", KEY)]
    assert month_rows(table, "2019-06")[0]["status"] == "ok"
    assert file_ref("old.dcm", KEY) not in {row["file_ref"] for row in unassigned_rows(table, widened)}
    assert len(unassigned_rows(table, widened)) == 3


def test_same_size_same_mtime_replacement_is_caught_at_decode(tmp_path: Path) -> None:
    """The listing cannot see a file rewritten with bytes of the same size and its old mtime put
    back (a known limit: the index trusts size and mtime, it does not re-hash every file on every
    update). Decode hashes what it reads and rejects the file as ``changed``."""
    for i in range(3):
        _write(tmp_path, f"f{i}.dcm", dicom_bytes(_slice(dt.date(2026, 2, 3 + i), 20 + i)))
    spec = SourceSpec(str(tmp_path))
    table = update_index(spec, None, ScanOptions(), key=KEY, workers=1).table
    rows = month_rows(table, "2026-02")
    assert [row["status"] for row in rows] == ["ok"] * 3 and all(row["content_hash"] for row in rows)

    # Same SOPInstanceUID (so the image-id check cannot tell), other pixels, same size, same mtime.
    target = tmp_path / "f0.dcm"
    old = os.stat(target)
    ds = pydicom.dcmread(target)
    pixels = bytearray(ds.PixelData)
    pixels[: len(pixels) // 2] = bytes(len(pixels) // 2)
    ds.PixelData = bytes(pixels)
    target.write_bytes(dicom_bytes(ds))
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert os.stat(target).st_size == old.st_size and os.stat(target).st_mtime_ns == old.st_mtime_ns

    # The known limit: the listing sees nothing.
    update = update_index(spec, table, ScanOptions(), key=KEY, workers=1)
    assert (update.files_read, update.changed) == (0, 0)

    options = PreprocessOptions(image_size=16)
    result = preprocess_month(spec, rows, options, key=KEY, workers=1)
    old_id = next(row["id"] for row in rows if row["file_ref"] == file_ref("f0.dcm", KEY))
    assert {r["file_ref"]: r["reason_code"] for r in result.rejected} == {file_ref("f0.dcm", KEY): "changed"}
    assert old_id not in result.ids and len(result.ids) == 2
    # The content fingerprint is what decides: without it the replaced file would be used.
    blind = [{**row, "content_hash": ""} for row in rows]
    assert old_id in preprocess_month(spec, blind, options, key=KEY, workers=1).ids


def _s3_spec(bucket: str, endpoint: str, prefix: str = "zone") -> SourceSpec:
    return SourceSpec(f"s3://{bucket}/{prefix}", S3Settings(endpoint_url=endpoint, region_name="us-east-1",
                                                           access_key_id="testing", secret_access_key="testing"))


def _same_size_other_bytes(data: bytes) -> bytes:
    out = bytearray(data)
    out[-64:] = bytes(b ^ 0x5A for b in out[-64:])  # pixel bytes at the end of the file
    return bytes(out)


def test_s3_index_is_incremental_and_sees_overwrites_by_etag(s3_bucket: str, s3_client: Any, moto_endpoint: str,
                                                             reads: ReadLog, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _s3_spec(s3_bucket, moto_endpoint)
    objects = {f"feb/{i}.dcm": dicom_bytes(_slice(dt.date(2026, 2, 3 + i), 30 + i)) for i in range(3)}
    for rel, data in objects.items():
        s3_client.put_object(Bucket=s3_bucket, Key=f"zone/{rel}", Body=data)

    first = update_index(spec, None, ScanOptions(), key=KEY, workers=1)
    assert first.files_read == 3 and set(reads.take()) == set(objects)
    rows = month_rows(first.table, "2026-02")
    assert [row["status"] for row in rows] == ["ok"] * 3 and all(row["content_hash"] for row in rows)
    again = update_index(spec, first.table, ScanOptions(), key=KEY, workers=1)
    assert again.files_read == 0 and reads.take() == [] and again.table.to_pylist() == first.table.to_pylist()

    # Overwrite feb/0 with other bytes of the same size. LastModified has one-second resolution on
    # S3, so an overwrite within the same second keeps it: the listing's LastModified is held at
    # the indexed value here, and only the ETag can tell.
    s3_client.put_object(Bucket=s3_bucket, Key="zone/feb/0.dcm", Body=_same_size_other_bytes(objects["feb/0.dcm"]))
    indexed_mtime = {row["file_ref"]: row["file_mtime_ns"] for row in first.table.to_pylist()}
    real_list = LandingZone.list_files

    def same_second_listing(self: LandingZone) -> list[FileEntry]:
        return [replace(e, mtime_ns=indexed_mtime.get(file_ref(e.relative_path, KEY), e.mtime_ns)) for e in real_list(self)]

    with monkeypatch.context() as patch:
        patch.setattr(LandingZone, "list_files", same_second_listing)
        overwritten = update_index(spec, again.table, ScanOptions(), key=KEY, workers=1)
    assert (overwritten.changed, overwritten.new, overwritten.unchanged) == (1, 0, 2)
    assert set(reads.take()) == {"feb/0.dcm"}
    assert month_fingerprints(overwritten.table)["2026-02"] != month_fingerprints(first.table)["2026-02"]


def test_s3_header_reads_are_of_the_listed_version(s3_bucket: str, s3_client: Any, moto_endpoint: str) -> None:
    """The index scans the version whose ETag it records: an object replaced after the listing is
    ``changed`` and one deleted is ``missing`` (both read again on the next update), never a
    header of other bytes filed under the listed ETag."""
    spec = _s3_spec(s3_bucket, moto_endpoint)
    objects = {f"feb/{i}.dcm": dicom_bytes(_slice(dt.date(2026, 2, 3 + i), 50 + i)) for i in range(3)}
    for rel, data in objects.items():
        s3_client.put_object(Bucket=s3_bucket, Key=f"zone/{rel}", Body=data)
    zone = LandingZone(spec)
    listed = {entry.relative_path: entry for entry in zone.list_files()}
    assert zone.read_header(listed["feb/0.dcm"]) == objects["feb/0.dcm"]

    s3_client.put_object(Bucket=s3_bucket, Key="zone/feb/1.dcm", Body=_same_size_other_bytes(objects["feb/1.dcm"]))
    s3_client.delete_object(Bucket=s3_bucket, Key="zone/feb/2.dcm")
    with pytest.raises(FileChangedError):
        zone.read_header(listed["feb/1.dcm"])
    with pytest.raises(FileNotFoundError):
        zone.read_header(listed["feb/2.dcm"])
    rows = {rel: scan_row(zone, entry, KEY, ScanOptions()) for rel, entry in listed.items()}
    assert {rel: row["reason_code"] for rel, row in rows.items()} == {
        "feb/0.dcm": "", "feb/1.dcm": "changed", "feb/2.dcm": "missing"}


def test_s3_object_replaced_after_the_manifest_is_rejected_by_if_match(s3_bucket: str, s3_client: Any,
                                                                       moto_endpoint: str) -> None:
    spec = _s3_spec(s3_bucket, moto_endpoint)
    objects = {f"feb/{i}.dcm": dicom_bytes(_slice(dt.date(2026, 2, 3 + i), 40 + i)) for i in range(3)}
    for rel, data in objects.items():
        s3_client.put_object(Bucket=s3_bucket, Key=f"zone/{rel}", Body=data)
    zone = LandingZone(spec)
    listed = zone.list_files()
    rows = month_rows(update_index(spec, None, ScanOptions(), key=KEY, workers=1).table, "2026-02")

    # Replaced between the listing and the GET: same key, same size, other bytes.
    s3_client.put_object(Bucket=s3_bucket, Key="zone/feb/1.dcm", Body=_same_size_other_bytes(objects["feb/1.dcm"]))
    stale = next(entry for entry in listed if entry.relative_path == "feb/1.dcm")
    with pytest.raises(FileChangedError):
        LandingZone(spec).read_verified(stale)
    fresh_entry = next(e for e in LandingZone(spec).list_files() if e.relative_path == "feb/1.dcm")
    data, digest = LandingZone(spec).read_verified(fresh_entry)
    assert data == _same_size_other_bytes(objects["feb/1.dcm"]) and digest == f"etag:{fresh_entry.etag}"

    # preprocess_month maps references through a listing taken before the overwrite (the
    # object is replaced between listing and GET): the conditional GET refuses it.
    class ListedBefore(LandingZone):
        def list_files(self) -> list[FileEntry]:
            return listed

    options = PreprocessOptions(image_size=16)
    result = preprocess_month(spec, rows, options, key=KEY, workers=1, zone=ListedBefore(spec))
    assert {r["file_ref"]: r["reason_code"] for r in result.rejected} == {file_ref("feb/1.dcm", KEY): "changed"}
    old_id = next(row["id"] for row in rows if row["file_ref"] == file_ref("feb/1.dcm", KEY))
    assert old_id not in result.ids and len(result.ids) == 2
    # The current listing (new ETag, or new LastModified) rejects it as well.
    assert [r["reason_code"] for r in preprocess_month(spec, rows, options, key=KEY, workers=1).rejected] == ["changed"]


def _load(artifacts: Path, rel: str) -> Any:
    path = artifacts / rel
    return decode(path.suffix[1:], path.read_bytes(), where=str(path))


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


@dataclass
class StaleStory:
    """Two months ingested; a new March file; March re-run; a February file rewritten. What
    Dagster's stale-status resolver said after each step, and what the index update recorded."""
    fresh_at_start: dict[tuple[str, str], StaleStatus]
    new_file_meta: dict[str, Any]
    index: pa.Table
    observations: list[Any]
    current_source_version: Any
    after_new_file: dict[tuple[str, str], StaleStatus]
    causes: list[tuple[Any, Any, Any]]
    after_rerun: dict[tuple[str, str], StaleStatus]
    rerun_manifest_rows: int
    rewrite_meta: dict[str, Any]
    after_rewrite: dict[tuple[str, str], StaleStatus]


def _statuses(instance: dg.DagsterInstance, graph: list[Any]) -> dict[tuple[str, str], StaleStatus]:
    """Every ingest asset's stale status for February and March, keyed by (asset, partition)."""
    resolver = get_stale_status_resolver(instance, graph)
    return {(asset.key.to_user_string(), partition): resolver.get_status(asset.key, partition)
            for asset in (dicom_manifest, preprocessed_images) for partition in ("2026-02-01", "2026-03-01")}


@pytest.fixture(scope="module")
def stale_story(tmp_path_factory: pytest.TempPathFactory) -> StaleStory:
    tmp_path = tmp_path_factory.mktemp("stale")
    with dg.instance_for_test() as instance, pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(PSEUDONYM_KEY_ENV, KEY.decode())
        zone, artifacts = tmp_path / "zone", tmp_path / "artifacts"
        _month_zone(zone)
        resources = ingest_resources(zone, artifacts)
        for partition in ("2026-02-01", "2026-03-01"):
            assert dg.materialize(ingest_assets(), partition_key=partition, instance=instance, resources=resources).success
        graph = [dg.AssetsDefinition(specs=[dicom_source]), landing_zone_index, dicom_manifest, preprocessed_images]
        fresh_at_start = _statuses(instance, graph)

        _write(zone, "mar/c.dcm", dicom_bytes(_slice(dt.date(2026, 3, 5), 5)))
        result = dg.materialize(ingest_assets(), selection=[landing_zone_index], instance=instance, resources=resources)
        assert result.success
        new_file_meta = {k: v.value for k, v in result.asset_materializations_for_node("landing_zone_index")[0].metadata.items()}
        index = _load(artifacts, "landing_zone_index.parquet")
        observations = [e.event_specific_data.asset_observation for e in result.get_asset_observation_events()]
        current = instance.get_latest_data_version_record(dicom_source.key, True, "2026-03-01")
        after_new_file = _statuses(instance, graph)
        causes = [(c.reason, c.dependency.asset_key, c.dependency.partition_key) for c in
                  get_stale_status_resolver(instance, graph).get_stale_causes(dicom_manifest.key, "2026-03-01")]

        # Re-running March settles it.
        assert dg.materialize(ingest_assets(), partition_key="2026-03-01", instance=instance, resources=resources).success
        after_rerun = _statuses(instance, graph)
        rerun_manifest_rows = len(_load(artifacts, "dicom_manifest/2026-03-01.parquet"))

        # A February file rewritten (other image, later mtime).
        _write(zone, "feb/a.dcm", dicom_bytes(_slice(dt.date(2026, 2, 3), 9)))
        _bump_mtime(zone / "feb/a.dcm")
        result = dg.materialize(ingest_assets(), selection=[landing_zone_index], instance=instance, resources=resources)
        rewrite_meta = {k: v.value for k, v in result.asset_materializations_for_node("landing_zone_index")[0].metadata.items()}
        after_rewrite = _statuses(instance, graph)
    # The key in the environment ends with the story.
    return StaleStory(fresh_at_start, new_file_meta, index, observations, current, after_new_file, causes,
                      after_rerun, rerun_manifest_rows, rewrite_meta, after_rewrite)


def test_both_months_start_fresh(stale_story: StaleStory) -> None:
    assert set(stale_story.fresh_at_start.values()) == {StaleStatus.FRESH}
    assert len(stale_story.fresh_at_start) == 4


def test_a_new_file_is_the_only_one_read_and_its_month_the_only_one_changed(stale_story: StaleStory) -> None:
    meta = stale_story.new_file_meta
    assert meta["files_read"] == 1 and meta["files_new"] == 1 and meta["files_unchanged"] == 4
    assert meta["months_changed"] == ["2026-03"]
    assert isinstance(stale_story.index, pa.Table) and stale_story.index.num_rows == 5


def test_the_index_observes_dicom_source_for_the_changed_month_only(stale_story: StaleStory) -> None:
    observations = stale_story.observations
    assert [(o.asset_key, o.partition) for o in observations] == [(dicom_source.key, "2026-03-01")]
    assert observations[0].tags[DATA_VERSION_TAG] == month_fingerprints(stale_story.index)["2026-03"]
    assert observations[0].metadata["files"].value == 3


def test_the_changed_month_is_stale_because_its_source_has_a_new_data_version(stale_story: StaleStory) -> None:
    current = stale_story.current_source_version
    assert current is not None and current.asset_observation.data_version == month_fingerprints(stale_story.index)["2026-03"]
    assert stale_story.after_new_file[("dicom_manifest", "2026-03-01")] == StaleStatus.STALE
    assert stale_story.causes == [("has a new dependency data version", dicom_source.key, "2026-03-01")]


def test_preprocessed_images_reads_the_files_too_and_shows_the_same_staleness(stale_story: StaleStory) -> None:
    # A direct dependency on dicom_source. Dagster 1.13 does not propagate staleness further down.
    assert stale_story.after_new_file[("preprocessed_images", "2026-03-01")] == StaleStatus.STALE


def test_the_unchanged_month_stays_fresh(stale_story: StaleStory) -> None:
    assert stale_story.after_new_file[("dicom_manifest", "2026-02-01")] == StaleStatus.FRESH
    assert stale_story.after_new_file[("preprocessed_images", "2026-02-01")] == StaleStatus.FRESH


def test_rerunning_the_stale_month_makes_it_fresh_with_the_new_file(stale_story: StaleStory) -> None:
    assert stale_story.after_rerun[("dicom_manifest", "2026-03-01")] == StaleStatus.FRESH
    assert stale_story.rerun_manifest_rows == 3


def test_a_rewritten_file_makes_its_month_alone_stale(stale_story: StaleStory) -> None:
    meta = stale_story.rewrite_meta
    assert (meta["files_read"], meta["files_changed"], meta["months_changed"]) == (1, 1, ["2026-02"])
    assert stale_story.after_rewrite[("dicom_manifest", "2026-02-01")] == StaleStatus.STALE
    assert stale_story.after_rewrite[("dicom_manifest", "2026-03-01")] == StaleStatus.FRESH


def test_manifest_refuses_an_index_built_with_another_policy(tmp_path: Path, instance: dg.DagsterInstance,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, KEY.decode())
    zone, artifacts = tmp_path / "zone", tmp_path / "artifacts"
    _month_zone(zone)
    resources = ingest_resources(zone, artifacts)
    assert dg.materialize(ingest_assets(), selection=[landing_zone_index], instance=instance, resources=resources).success

    other = {**resources, "preprocess_config": PreprocessConfig(workers=1, exclude_burned_in=False)}
    result = dg.materialize(ingest_assets(), selection=[dicom_manifest], partition_key="2026-02-01",
                            instance=instance, resources=other, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    text = str(failure.event_specific_data.error)
    assert "Failure" in text and "landing_zone_index" in text and "2026-02" in text
    # With the index's own policy the same month materializes.
    assert dg.materialize(ingest_assets(), selection=[dicom_manifest], partition_key="2026-02-01",
                          instance=instance, resources=resources).success


HOSTILE_S3 = ("frames_huge", "window_1e308", "deflate_bomb", "not_dicom", "burned_yes_no", "header_only", "float_nan")


@dataclass
class HostileS3Month:
    """A hostile month in a bucket, ingested once: what was planted, and all the run left behind."""
    expected: dict[str, str]
    needles: set[str]
    zone_head: str
    result: dg.ExecuteInProcessResult
    codes: dict[str, str]
    one_place_per_file: bool
    index: pa.Table
    bundle: Any
    haystacks: dict[str, str]
    captured: Any


@pytest.fixture(scope="module")
def hostile_s3_month(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str) -> Iterator[HostileS3Month]:
    from dagster_aws.s3 import S3Resource

    s3_client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS)
    s3_bucket = f"gan-test-{uuid.uuid4().hex[:12]}"  # as the s3_bucket fixture names one
    s3_client.create_bucket(Bucket=s3_bucket)
    folder = f"{PATH_MARKER}_DOE^JOHN_123456"
    expected: dict[str, str] = {}
    datasets: list[Dataset] = []
    cases = {name: (build, code) for name, build, code in hostile_cases()}
    for i in range(3):
        ds = hostile_ct(60 + i)
        datasets.append(ds)
        rel = f"{folder}/good_{i}.dcm"
        s3_client.put_object(Bucket=s3_bucket, Key=f"zone/{rel}", Body=dicom_bytes(ds))
        expected[rel] = ""
    for i, name in enumerate(HOSTILE_S3):
        build, code = cases[name]
        ds = hostile_ct(i + 1)
        datasets.append(ds)
        rel = f"{folder}/{PATH_MARKER}_{name}.dcm"
        s3_client.put_object(Bucket=s3_bucket, Key=f"zone/{rel}", Body=build(ds))
        expected[rel] = code
    needles = planted_needles(datasets, [Path(rel).stem for rel in expected] + [folder])
    head = s3_client.get_object(Bucket=s3_bucket, Key=f"zone/{folder}/good_0.dcm")["Body"].read().decode("latin-1")

    tmp_path = tmp_path_factory.mktemp("hostile_s3")
    s3_resource = S3Resource(endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS)
    artifacts = tmp_path / "artifacts"
    resources = {**ingest_resources(tmp_path / "unused", artifacts, max_decoded_bytes=TEST_MAX_DECODED),
                 "dicom_source": DicomSource(location=f"s3://{s3_bucket}/zone", s3=s3_resource,
                                             pseudonym_key=KEY.decode())}
    # moto's server runs in this process and logs every request line (with the key) through
    # werkzeug: that is the test's stand-in for S3, not ingest.
    levels = {"": logging.INFO, "gan_assets": logging.DEBUG, "werkzeug": logging.WARNING}
    with dg.instance_for_test() as instance, pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(PSEUDONYM_KEY_ENV, KEY.decode())
        with capture_logs_and_output(levels) as captured:
            result = dg.materialize(ingest_assets(), partition_key="2026-01-01", instance=instance,
                                    resources=resources, raise_on_error=False)
        haystacks = run_haystacks(instance, result, artifacts) if result.success else {}

    manifest = _load(artifacts, "dicom_manifest/2026-01-01.parquet")
    codes = {row["file_ref"]: ("" if row["status"] == "ok" else row["reason_code"]) for row in manifest.to_dict("records")}
    index = _load(artifacts, "landing_zone_index.parquet")
    unassigned = {row["file_ref"]: row["reason_code"] for row in unassigned_rows(index, {"2026-01"})}
    one_place_per_file = not set(codes) & set(unassigned)
    codes.update(unassigned)
    bundle = _load(artifacts, "preprocessed_images/2026-01-01.npz")
    for reject in bundle.attrs["rejected_at_decode"]:
        codes[reject["file_ref"]] = reject["reason_code"]
    yield HostileS3Month(expected, needles, head, result, codes, one_place_per_file, index, bundle, haystacks, captured)


def test_the_planted_values_can_be_found_in_the_s3_zone(hostile_s3_month: HostileS3Month) -> None:
    assert sum(needle in hostile_s3_month.zone_head for needle in hostile_s3_month.needles) >= 8


def test_a_hostile_s3_month_completes(hostile_s3_month: HostileS3Month) -> None:
    assert hostile_s3_month.result.success


def test_each_s3_file_has_one_index_row_and_one_place(hostile_s3_month: HostileS3Month) -> None:
    by_ref = {file_ref(rel, KEY): rel for rel in hostile_s3_month.expected}
    assert sorted(hostile_s3_month.index.column("file_ref").to_pylist()) == sorted(by_ref)
    assert hostile_s3_month.one_place_per_file  # the month's manifest, or unassigned


def test_each_hostile_s3_file_gets_its_expected_reason(hostile_s3_month: HostileS3Month) -> None:
    by_ref = {file_ref(rel, KEY): rel for rel in hostile_s3_month.expected}
    assert {by_ref[ref]: code for ref, code in hostile_s3_month.codes.items()} == hostile_s3_month.expected


def test_only_the_usable_s3_files_are_trained_on(hostile_s3_month: HostileS3Month) -> None:
    expected = hostile_s3_month.expected
    assert len(hostile_s3_month.bundle.arrays["ids"]) == sum(code == "" for code in expected.values())


def test_nothing_planted_leaks_from_a_hostile_s3_month(hostile_s3_month: HostileS3Month) -> None:
    captured = hostile_s3_month.captured
    assert_no_needles(hostile_s3_month.haystacks, hostile_s3_month.needles, captured.log_text, captured.output)


def test_decoding_reuses_the_index_listing_and_still_checks_each_file(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A run lists the zone once: the decode maps references through the index's listing, and a file
    deleted or replaced since is caught by its own open, not by a second listing."""
    _month_zone(tmp_path)
    spec = SourceSpec(str(tmp_path))
    table = update_index(spec, None, ScanOptions(), key=KEY, workers=1).table
    rows = month_rows(table, "2026-02")
    listings: list[int] = []
    real_list = LandingZone.list_files

    def counted(self: LandingZone) -> Any:
        listings.append(1)
        return real_list(self)

    monkeypatch.setattr(LandingZone, "list_files", counted)
    (tmp_path / "feb" / "b.dcm").unlink()  # gone after the listing
    result = preprocess_month(spec, rows, PreprocessOptions(image_size=16), key=KEY, workers=1)
    assert listings == []  # the listing of the index update was reused
    assert [r["reason_code"] for r in result.rejected] == ["missing"] and result.files_ok == len(rows) - 1
