"""A synthetic DICOM landing zone: real CT files written by pydicom, plus a few bad ones.

Layout (like a PACS export, with identifying folder names on purpose: ingest must never
copy paths into artifacts)::

    {out}/{PatientID}/{AccessionNumber}/CT{instance:04d}.dcm      good slices
    {out}/unsorted/{PatientID}_{kind}.dcm                          bad files, per month

Per month and per seed the content is deterministic. Each month gets ``files_per_month`` good
CT slices (studies of ``SLICES_PER_STUDY`` slices, alternating 256 x 256 and 512 x 512,
unsigned-with-intercept and signed stored values, soft-tissue or lung windows) and one each of
the bad kinds in :data:`BAD_KINDS`. File modification times are set to the study day (the
month a file "arrived"); a file without a usable date is nevertheless in no month's manifest:
the landing-zone index lists it as unassigned (``UNASSIGNED_KINDS``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import multiprocessing as mp
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import BasicTextSRStorage

from gan_assets.demo.phantom import SliceSpec, ct_dataset, make_identity
from gan_assets.dicom.landing_zone import LandingZone, SourceSpec

logger = logging.getLogger(__name__)

DEFAULT_MONTHS = ("2026-01", "2026-02", "2026-03")
DEFAULT_FILES_PER_MONTH = 100
DEFAULT_SIZES = (256, 512)
SLICES_PER_STUDY = 5
# Bad files written once per month; the reject reason ingest must give for each.
BAD_KINDS = {
    "truncated": "truncated",
    "not_dicom": "not_dicom",
    "no_pixel_data": "no_pixel_data",
    "no_usable_date": "no_usable_date",
    "burned_in": "burned_in_annotation",
}
# Bad kinds no header dates into a month: listed as unassigned in the landing-zone index.
UNASSIGNED_KINDS = ("not_dicom", "no_usable_date")


@dataclass(frozen=True)
class DemoSummary:
    """What a generation run wrote (counts only: no identifying values)."""

    out: str
    good_files: int
    bad_files: int
    months: tuple[str, ...]
    sizes: dict[int, int]

    @property
    def total_files(self) -> int:
        return self.good_files + self.bad_files


def _month_dates(month: str) -> tuple[dt.date, int]:
    year, mon = (int(part) for part in month.split("-")[:2])
    return dt.date(year, mon, 1), calendar.monthrange(year, mon)[1]


def _arrival_timestamp(day: dt.date) -> float:
    # Noon UTC on the day after the study: well inside the month for days 1..27.
    moment = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.timezone.utc)
    return moment.timestamp()


def _plan(seed: int, months: Sequence[str], files_per_month: int, sizes: Sequence[int]) -> list[tuple[str, SliceSpec, str]]:
    """(relative path, slice spec, kind) for every file, in a fixed order."""
    plan: list[tuple[str, SliceSpec, str]] = []
    patient_index = 0
    for month_index, month in enumerate(months):
        first, days = _month_dates(month)
        rng = np.random.default_rng([seed, month_index])
        n_studies = max(1, -(-files_per_month // SLICES_PER_STUDY))
        written = 0
        for study in range(n_studies):
            patient_index += 1
            day = first + dt.timedelta(days=int(rng.integers(0, min(days, 27))))
            size = sizes[study % len(sizes)]
            signed = bool(study % 3 == 2)
            lung = bool(rng.random() < 0.3)
            identity = make_identity(patient_index, np.random.default_rng([seed, patient_index]))
            for instance in range(1, SLICES_PER_STUDY + 1):
                if written == files_per_month:
                    break
                spec = SliceSpec(seed, patient_index, day, instance, size, signed, lung)
                rel = f"{identity.patient_id}/{identity.accession}/CT{instance:04d}.dcm"
                plan.append((rel, spec, "good"))
                written += 1
        for kind in BAD_KINDS:
            patient_index += 1
            day = first + dt.timedelta(days=int(rng.integers(0, min(days, 27))))
            identity = make_identity(patient_index, np.random.default_rng([seed, patient_index]))
            spec = SliceSpec(seed, patient_index, day, 1, min(sizes), False, False)
            plan.append((f"unsorted/{identity.patient_id}_{kind}.dcm", spec, kind))
    return plan


def _bad_bytes(kind: str, ds: Dataset, path: Path) -> bytes | None:
    """Write a bad variant of ``ds`` to ``path``; returns raw bytes when written by hand."""
    if kind == "not_dicom":
        return (b"Scanner export log (not a DICOM file)\n"
                b"status=partial transfer; retry scheduled\n") * 20
    if kind == "no_pixel_data":
        # A non-image object (a structured report) that landed with the images.
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
        ds.Modality = "SR"
        for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                        "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
            if keyword in ds:
                delattr(ds, keyword)
    elif kind == "no_usable_date":
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate"):
            delattr(ds, keyword)
        # Present but not a calendar date: ingest must reject it, not guess. Set without
        # pydicom's value validation, which would warn about exactly this.
        ds.add(DataElement(0x00080023, "DA", "20261399", validation_mode=config.IGNORE))
    elif kind == "burned_in":
        ds.BurnedInAnnotation = "YES"
    ds.save_as(path, enforce_file_format=True)
    if kind == "truncated":
        data = path.read_bytes()
        # Cut inside the pixel data: the header parses, the image is short.
        return data[: len(data) - (len(ds.PixelData) * 2) // 5]
    return None


def _write_one(out: str, rel: str, spec: SliceSpec, kind: str) -> tuple[int, str]:
    path = Path(out) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ct_dataset(spec)
    tmp = path.with_name(f".{path.name}.tmp")
    if kind == "good":
        ds.save_as(tmp, enforce_file_format=True)
    else:
        raw = _bad_bytes(kind, ds, tmp)
        if raw is not None:
            tmp.write_bytes(raw)
    stamp = _arrival_timestamp(spec.study_date)
    os.utime(tmp, (stamp, stamp))
    os.replace(tmp, path)  # a reader never sees half a file
    return spec.size, kind


def landing_zone_has_files(out: str | os.PathLike[str] | SourceSpec) -> bool:
    """Whether the zone (a folder, or the landing zone a SourceSpec names) holds any .dcm file."""
    if isinstance(out, SourceSpec):
        if out.is_s3:
            return any(entry.relative_path.endswith(".dcm") for entry in LandingZone(out).list_files())
        out = out.location
    root = Path(out)
    return root.is_dir() and any(p.is_file() for p in root.rglob("*.dcm"))


def publish_landing_zone(spec: SourceSpec, **options: Any) -> DemoSummary:
    """Write the demo zone where ``spec`` points: a folder directly, or an ``s3://`` prefix.

    For S3 the files are made in a temporary folder and uploaded through the landing zone's own
    client (the product's endpoint and region settings), under the same relative paths. S3 sets
    LastModified itself, so a file without a usable date arrives in the month of the upload.
    ``options`` are those of :func:`generate_landing_zone`.
    """
    if not spec.is_s3:
        return generate_landing_zone(spec.location, **options)
    zone = LandingZone(spec)
    with tempfile.TemporaryDirectory(prefix="gan-assets-demo-") as folder:
        summary = generate_landing_zone(folder, **options)
        root = Path(folder)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            zone.write_bytes(path.relative_to(root).as_posix(), path.read_bytes())
    logger.info("uploaded the demo landing zone to %s", spec.location)
    return DemoSummary(out=spec.location, good_files=summary.good_files, bad_files=summary.bad_files,
                       months=summary.months, sizes=summary.sizes)


def generate_landing_zone(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    files_per_month: int = DEFAULT_FILES_PER_MONTH,
    months: Sequence[str] = DEFAULT_MONTHS,
    sizes: Sequence[int] = DEFAULT_SIZES,
    workers: int = 0,
) -> DemoSummary:
    """Write the demo landing zone under ``out`` (deterministic for ``seed``); returns counts.

    Studies alternate between the matrix ``sizes``. ``workers`` processes write files in
    parallel (0 = one per CPU); the content does not depend on it. Existing files at the same
    paths are replaced.
    """
    if files_per_month < 1:
        raise ValueError(f"files_per_month must be >= 1, got {files_per_month}")
    for month in months:
        try:
            dt.date.fromisoformat(f"{month}-01")
        except ValueError as err:
            raise ValueError(f"month {month!r} is not YYYY-MM") from err
    if not sizes or any(not 16 <= int(size) <= 2048 for size in sizes):
        raise ValueError(f"sizes must be matrix sizes in 16..2048, got {list(sizes)}")
    root = Path(out).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    plan = _plan(seed, months, files_per_month, [int(size) for size in sizes])
    workers = workers or (os.cpu_count() or 1)
    size_counts: dict[int, int] = {}
    good = bad = 0
    if workers > 1 and len(plan) > 32:
        # forkserver: never fork a caller that may run threads (a Dagster process, a test server).
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("forkserver")) as pool:
            results = list(pool.map(_write_one, [str(root)] * len(plan), *zip(*plan), chunksize=8))
    else:
        results = [_write_one(str(root), rel, spec, kind) for rel, spec, kind in plan]
    for size, kind in results:
        if kind == "good":
            good += 1
            size_counts[size] = size_counts.get(size, 0) + 1
        else:
            bad += 1
    logger.info("demo landing zone: %d good and %d bad DICOM files over %s under %s",
                good, bad, ", ".join(months), root)
    return DemoSummary(out=str(root), good_files=good, bad_files=bad, months=tuple(months), sizes=size_counts)
