"""Header scan of one file (no pixel data): month, image geometry, and accept/reject.

A file belongs to a month by the first usable date of StudyDate, SeriesDate,
AcquisitionDate, ContentDate. A file without one (or that is not DICOM at all) is never
guessed into a month: its row says ``month_source="arrival"`` (the month is its arrival, for
operators) and the landing-zone index lists it as unassigned, with its reason.

Header values reach the manifest only through closed vocabularies (``vocabulary``) and reject
reasons are fixed sentences (``reasons``); the geometry, limits and burned-in checks are the
decoder's own (``preprocess.check_image_header``), so scan and decode agree on a file's reason.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from gan_assets.dicom.landing_zone import FileChangedError, FileEntry, LandingZone
from gan_assets.dicom.limits import IngestLimits, bounded_int
from gan_assets.dicom.preprocess import (
    PreprocessOptions,
    RejectError,
    check_image_header,
    decoder_available,
    quiet_pydicom,
    read_dicom,
)
from gan_assets.dicom.pseudonym import file_ref, image_id
from gan_assets.dicom.reasons import REASONS, reason_sentence
from gan_assets.dicom.vocabulary import (
    burned_in_code,
    modality_code,
    photometric_code,
    sop_class_name,
    transfer_syntax_code,
)

DATE_TAGS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
ARRIVAL = "arrival"

MANIFEST_COLUMNS = (
    "id", "file_ref", "month", "month_source", "modality", "sop_class", "rows", "columns", "frames",
    "samples_per_pixel", "bits_allocated", "transfer_syntax", "transfer_syntax_name", "photometric",
    "burned_in", "file_bytes", "file_mtime_ns", "content_hash", "status", "reason_code", "reason",
)
INT_COLUMNS = ("rows", "columns", "frames", "samples_per_pixel", "bits_allocated", "file_bytes", "file_mtime_ns")
__all__ = ["REASONS", "MANIFEST_COLUMNS", "ScanOptions", "scan_file"]

_PIXEL_TAG_LE = struct.pack("<HH", 0x7FE0, 0x0010)
_PIXEL_TAG_BE = struct.pack(">HH", 0x7FE0, 0x0010)
# FloatPixelData and DoubleFloatPixelData: images too, decoded by pydicom's native handler.
_FLOAT_PIXEL_TAGS = tuple(struct.pack(e + "HH", 0x7FE0, element) for e in "<>" for element in (0x0008, 0x0009))
_LONG_VRS = {b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}


@dataclass(frozen=True)
class ScanOptions:
    """What makes a file acceptable at header level."""

    date_tags: tuple[str, ...] = DATE_TAGS
    exclude_burned_in: bool = True
    allowed_modalities: tuple[str, ...] = ()
    colour_policy: str = "grayscale"
    missing_burned_in: str = "allow"
    geometry: str = "pad"
    limits: IngestLimits = IngestLimits()

    def header_options(self) -> PreprocessOptions:
        """The decoder's options for the checks both stages share (geometry, limits, burned-in)."""
        return PreprocessOptions(colour_policy=self.colour_policy, geometry=self.geometry,
                                 exclude_burned_in=self.exclude_burned_in,
                                 missing_burned_in=self.missing_burned_in, limits=self.limits)


def parse_da(value: Any) -> dt.date | None:
    """A DICOM DA value (YYYYMMDD; the old YYYY.MM.DD too) as a date, or None if unusable."""
    text = str(value or "").strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def assign_month(ds: Any, date_tags: tuple[str, ...]) -> tuple[str, str] | None:
    """(YYYY-MM, tag used) from the first usable date tag, or None."""
    for tag in date_tags:
        date = parse_da(ds.get(tag))
        if date is not None:
            return f"{date.year:04d}-{date.month:02d}", tag
    return None


def _int(ds: Any, keyword: str, default: int = 0) -> int:
    """A bounded header integer for the manifest (0 when missing, malformed or out of range)."""
    value = ds.get(keyword)
    if value in (None, ""):
        return default
    number = bounded_int(value)
    return 0 if number is None else number


def _last_item_complete(handle: BinaryIO, start: int, file_size: int, endian: str) -> bool:
    """Walk the item headers of encapsulated pixel data (seeking, not reading fragments)."""
    offset = start
    item_tag = struct.pack(endian + "HH", 0xFFFE, 0xE000)
    while offset + 8 <= file_size:
        handle.seek(offset)
        head = handle.read(8)
        if head[:4] != item_tag:
            return head[:4] == struct.pack(endian + "HH", 0xFFFE, 0xE0DD)
        (length,) = struct.unpack(endian + "I", head[4:8])
        offset += 8 + length
    return False


def _pixel_element_check(handle: BinaryIO, ds: Any, file_size: int, rows: int, cols: int, frames: int,
                         samples: int, bits: int, native: bool, photometric: str,
                         can_read_tail: bool = True) -> str | None:
    """Inspect the pixel data element header right where the header read stopped.

    Catches truncated and inconsistent files without reading pixel data: the element's length
    must fit in the file, and native (uncompressed) data must be as long as Rows x Columns x
    frames x samples x bits need.
    """
    position = handle.tell()
    head = handle.read(12)
    if len(head) < 8 or head[:4] not in (_PIXEL_TAG_LE, _PIXEL_TAG_BE):
        return None  # FloatPixelData or an unusual layout: leave it to the decoder
    implicit, little = getattr(ds, "original_encoding", (False, True))
    endian = "<" if little else ">"
    # pydicom reads an implicit-VR dataset under an explicit-VR header (it checks each element);
    # so must this check: no VR where one should be means implicit.
    if not implicit and head[4:6] not in _LONG_VRS and not head[4:6].isalpha():
        implicit = True
    if implicit:
        (length,), header_len = struct.unpack(endian + "I", head[4:8]), 8
    elif head[4:6] in _LONG_VRS:
        if len(head) < 12:
            return "truncated"
        (length,), header_len = struct.unpack(endian + "I", head[8:12]), 12
    else:
        (length,), header_len = struct.unpack(endian + "H", head[6:8]), 8
    available = file_size - position - header_len
    if length == 0xFFFFFFFF:  # encapsulated (compressed): fragments are checked at decode
        if available <= 8:
            return "truncated"
        if can_read_tail:
            # Pixel data is almost always the last element, so an intact file ends with the
            # sequence delimiter; otherwise leave the verdict to the decoder (trailing elements).
            handle.seek(file_size - 8)
            tail = handle.read(8)
            delimiter = struct.pack(endian + "HHI", 0xFFFE, 0xE0DD, 0)
            if len(tail) == 8 and tail != delimiter and delimiter[:4] not in tail:
                last_item = _last_item_complete(handle, position + header_len, file_size, endian)
                if not last_item:
                    return "truncated"
        return None
    if available < length:
        return "truncated"
    if native and photometric not in ("YBR_FULL_422",):
        expected = (rows * cols * frames * samples * bits + 7) // 8
        if length < expected:
            return "invalid_image_header"
    return None


def _base_row(entry: FileEntry, key: bytes) -> dict[str, Any]:
    arrival = f"{entry.modified.year:04d}-{entry.modified.month:02d}"
    row: dict[str, Any] = {c: "" for c in MANIFEST_COLUMNS}
    ref = file_ref(entry.relative_path, key)
    row.update(id=ref, file_ref=ref, month=arrival, month_source=ARRIVAL, rows=0, columns=0, frames=0,
               samples_per_pixel=0, bits_allocated=0, file_bytes=entry.size, file_mtime_ns=entry.mtime_ns)
    return row


def rejected_row(entry: FileEntry, key: bytes, code: str) -> dict[str, Any]:
    """A manifest row for a file that could not be scanned at all (fixed reason sentence)."""
    row = _base_row(entry, key)
    row.update(status="rejected", reason_code=code, reason=reason_sentence(code))
    return row


def scan_file(zone: LandingZone, entry: FileEntry, key: bytes, options: ScanOptions) -> dict[str, Any]:
    """One manifest row for one file (reads the header only; never raises for bad input)."""
    row = _base_row(entry, key)

    def reject(code: str, detail: str = "") -> dict[str, Any]:
        row.update(status="rejected", reason_code=code, reason=reason_sentence(code))
        return row

    if entry.problem:
        return reject(entry.problem)
    if entry.size > options.limits.max_file_bytes:
        return reject("too_large")
    with quiet_pydicom():
        try:
            handle = zone.open_header(entry)
        except FileNotFoundError:
            return reject("missing")
        except FileChangedError:
            return reject("changed")
        except OSError:  # permission denied, a disk or network error: transient, read again later
            return reject("io_error")
        with handle:
            try:
                ds, stream, inflated = read_dicom(handle, stop_before_pixels=True, limits=options.limits,
                                                  read_keywords=tuple(options.date_tags))
            except RejectError as err:
                if zone.spec.is_s3 and err.code in ("unreadable", "truncated") and entry.size > handle.seek(0, 2):
                    # The header is longer than the ranged read: read the whole object once.
                    handle.close()
                    handle = zone.open_full(entry)
                    try:
                        ds, stream, inflated = read_dicom(handle, stop_before_pixels=True, limits=options.limits,
                                                  read_keywords=tuple(options.date_tags))
                    except RejectError as err2:
                        return reject(err2.code)
                else:
                    return reject(err.code)
            # A header-only read leaves the stream at the pixel data tag.
            stop = stream.tell()
            size = stream.seek(0, 2) if inflated else entry.size
            return _classify(ds, stream, stop, size, entry, options, row, reject, zone.spec.is_s3 or inflated, key)


def _classify(ds: Any, handle: BinaryIO, stop: int, stream_size: int, entry: FileEntry, options: ScanOptions,
              row: dict[str, Any], reject: Any, no_tail_read: bool, key: bytes) -> dict[str, Any]:
    file_meta = getattr(ds, "file_meta", None)
    raw_syntax = file_meta.get("TransferSyntaxUID", "") if file_meta is not None else ""
    transfer_syntax, ts_name = transfer_syntax_code(raw_syntax)
    photometric = photometric_code(ds.get("PhotometricInterpretation"))
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    frames, samples, bits = _int(ds, "NumberOfFrames", 1), _int(ds, "SamplesPerPixel", 1), _int(ds, "BitsAllocated")
    sop_class = sop_class_name(ds.get("SOPClassUID"))
    modality = modality_code(ds.get("Modality"))
    row.update(modality=modality, sop_class=sop_class, rows=rows, columns=cols, frames=frames,
               samples_per_pixel=samples, bits_allocated=bits, transfer_syntax=transfer_syntax,
               transfer_syntax_name=ts_name, photometric=photometric,
               burned_in=burned_in_code(ds.get("BurnedInAnnotation")))

    month = assign_month(ds, options.date_tags)
    if month is None:
        return reject("no_usable_date")
    row["month"], row["month_source"] = month
    sop_uid = str(ds.get("SOPInstanceUID", "") or (file_meta.get("MediaStorageSOPInstanceUID", "") if file_meta is not None else "")).strip()
    if not sop_uid:
        return reject("no_sop_instance_uid")
    row["id"] = image_id(sop_uid, key)
    handle.seek(stop)
    if not _has_pixel_tag(handle):
        if rows > 0 or "Image Storage" in sop_class:
            # An image object whose file ends before its pixel data was cut off in transfer.
            return reject("truncated")
        return reject("no_pixel_data")
    # The decoder's own checks (bounded geometry, limits, burned-in, colour), on the header.
    ds_view = _HeaderWithPixels(ds)
    try:
        check_image_header(ds_view, options.header_options(), file_bytes=entry.size)
    except RejectError as err:
        return reject(err.code)
    if options.allowed_modalities and modality not in options.allowed_modalities:
        return reject("modality_excluded")
    if not raw_syntax:
        return reject("invalid_image_header")
    if not decoder_available(transfer_syntax):
        return reject("no_decoder")
    from pydicom.uid import UID

    native = not UID(transfer_syntax).is_compressed
    problem = _pixel_element_check(handle, ds, stream_size, rows, cols, frames, samples, bits, native,
                                   str(ds.get("PhotometricInterpretation", "") or ""), can_read_tail=not no_tail_read)
    if problem is not None:
        return reject(problem)
    row.update(status="ok", reason_code="", reason="")
    return row


class _HeaderWithPixels:
    """A header-only dataset that answers 'is there pixel data' as the file does (it stopped there)."""

    def __init__(self, ds: Any) -> None:
        self._ds = ds

    def __contains__(self, keyword: str) -> bool:
        return keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") or keyword in self._ds

    def get(self, keyword: str, default: Any = None) -> Any:
        return self._ds.get(keyword, default)


def _has_pixel_tag(handle: BinaryIO) -> bool:
    position = handle.tell()
    head = handle.read(4)
    handle.seek(position)
    return head in (_PIXEL_TAG_LE, _PIXEL_TAG_BE) or head in _FLOAT_PIXEL_TAGS
