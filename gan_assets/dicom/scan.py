"""Header scan of one file (no pixel data): month, image geometry, and accept/reject.

A file belongs to a month by the first usable date of StudyDate, SeriesDate,
AcquisitionDate, ContentDate. A file without one (or that is not DICOM at all) is never
guessed into training: it is a rejected row, filed under the month it arrived in the landing
zone (file modification time / S3 LastModified) so that every file seen is counted once.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from gan_assets.dicom.landing_zone import FileEntry, LandingZone
from gan_assets.dicom.preprocess import COLOUR_PHOTOMETRICS, decoder_hint, quiet_pydicom
from gan_assets.dicom.pseudonym import file_ref, image_id

DATE_TAGS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
ARRIVAL = "arrival"

MANIFEST_COLUMNS = (
    "id", "file_ref", "month", "month_source", "modality", "sop_class", "rows", "columns", "frames",
    "samples_per_pixel", "bits_allocated", "transfer_syntax", "transfer_syntax_name", "photometric",
    "burned_in", "file_bytes", "status", "reason_code", "reason",
)
# Human-readable meaning of each reason code (used in metadata and failure messages).
REASONS = {
    "not_dicom": "not a DICOM Part 10 file",
    "unreadable": "header cannot be parsed (truncated or corrupt)",
    "no_usable_date": "no usable StudyDate/SeriesDate/AcquisitionDate/ContentDate",
    "no_pixel_data": "no pixel data",
    "no_sop_instance_uid": "no SOPInstanceUID",
    "invalid_image_header": "image header inconsistent",
    "truncated": "pixel data shorter than the header says",
    "burned_in_annotation": "BurnedInAnnotation = YES (pixels may show identifying text)",
    "modality_excluded": "modality not in allowed_modalities",
    "colour_rejected": "colour image rejected by colour_policy",
    "no_decoder": "no installed decoder for the transfer syntax",
    "duplicate": "same SOPInstanceUID as an earlier file",
    "decode_failed": "pixel data could not be decoded",
    "inconsistent": "decoded pixels disagree with the header",
    "missing": "file disappeared from the landing zone after the manifest was made",
    "internal_error": "unexpected error while reading the file",
}

_PIXEL_TAG_LE = struct.pack("<HH", 0x7FE0, 0x0010)
_PIXEL_TAG_BE = struct.pack(">HH", 0x7FE0, 0x0010)
_LONG_VRS = {b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}


@dataclass(frozen=True)
class ScanOptions:
    """What makes a file acceptable at header level."""

    date_tags: tuple[str, ...] = DATE_TAGS
    exclude_burned_in: bool = True
    allowed_modalities: tuple[str, ...] = ()
    colour_policy: str = "grayscale"


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
    try:
        value = ds.get(keyword, default)
        return int(value if value not in (None, "") else default)
    except (TypeError, ValueError):
        return -1


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
                         can_read_tail: bool = True) -> tuple[str, str] | None:
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
    if implicit:
        (length,), header_len = struct.unpack(endian + "I", head[4:8]), 8
    elif head[4:6] in _LONG_VRS:
        if len(head) < 12:
            return "truncated", "the file ends inside the pixel data element header"
        (length,), header_len = struct.unpack(endian + "I", head[8:12]), 12
    else:
        (length,), header_len = struct.unpack(endian + "H", head[6:8]), 8
    available = file_size - position - header_len
    if length == 0xFFFFFFFF:  # encapsulated (compressed): fragments are checked at decode
        if available <= 8:
            return "truncated", "the file ends right after the start of the compressed pixel data"
        if can_read_tail:
            # Pixel data is almost always the last element, so an intact file ends with the
            # sequence delimiter; otherwise leave the verdict to the decoder (trailing elements).
            handle.seek(file_size - 8)
            tail = handle.read(8)
            delimiter = struct.pack(endian + "HHI", 0xFFFE, 0xE0DD, 0)
            if len(tail) == 8 and tail != delimiter and delimiter[:4] not in tail:
                last_item = _last_item_complete(handle, position + header_len, file_size, endian)
                if not last_item:
                    return "truncated", "the compressed pixel data has no end (sequence delimiter missing): the file was cut off"
        return None
    if available < length:
        return "truncated", f"the pixel data element says {length} bytes but only {max(available, 0)} remain in the file"
    if native and photometric not in ("YBR_FULL_422",):
        expected = (rows * cols * frames * samples * bits + 7) // 8
        if length < expected:
            return "invalid_image_header", (
                f"pixel data holds {length} bytes, Rows x Columns x frames x samples x bits need {expected}")
    return None


def scan_file(zone: LandingZone, entry: FileEntry, key: bytes, options: ScanOptions) -> dict[str, Any]:
    """One manifest row for one file (reads the header only; never raises for bad input)."""
    arrival = f"{entry.modified.year:04d}-{entry.modified.month:02d}"
    row: dict[str, Any] = {c: "" for c in MANIFEST_COLUMNS}
    row.update(file_ref=file_ref(entry.relative_path, key), month=arrival, month_source=ARRIVAL,
               rows=0, columns=0, frames=0, samples_per_pixel=0, bits_allocated=0, file_bytes=entry.size)
    row["id"] = row["file_ref"]

    def reject(code: str, reason: str) -> dict[str, Any]:
        row.update(status="rejected", reason_code=code, reason=reason)
        return row

    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    with quiet_pydicom():
        try:
            handle = zone.open_header(entry)
        except FileNotFoundError:
            return reject("missing", REASONS["missing"])
        with handle:
            try:
                ds = dcmread(handle, stop_before_pixels=True)
            except InvalidDicomError:
                return reject("not_dicom", "not a DICOM Part 10 file (no 'DICM' preamble or file meta)")
            except Exception as err:  # any parser failure is a rejected row, never a failed month
                if zone.spec.is_s3 and entry.size > handle.seek(0, 2):
                    # The header is longer than the ranged read: read the whole object once.
                    handle.close()
                    handle = zone.open_full(entry)
                    try:
                        ds = dcmread(handle, stop_before_pixels=True)
                    except Exception as err2:
                        return reject("unreadable", f"the DICOM header cannot be parsed ({type(err2).__name__}); the file may be truncated")
                else:
                    return reject("unreadable", f"the DICOM header cannot be parsed ({type(err).__name__}); the file may be truncated")
            # dcmread(stop_before_pixels=True) leaves the file at the pixel data tag.
            return _classify(ds, handle, handle.tell(), entry, key, options, row, reject, zone.spec.is_s3)


def _classify(ds: Any, handle: BinaryIO, stop: int, entry: FileEntry, key: bytes, options: ScanOptions,
              row: dict[str, Any], reject: Any, zone_is_s3: bool) -> dict[str, Any]:
    from pydicom.uid import UID

    file_meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(file_meta.get("TransferSyntaxUID", "") if file_meta is not None else "")
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    frames, samples, bits = _int(ds, "NumberOfFrames", 1), _int(ds, "SamplesPerPixel", 1), _int(ds, "BitsAllocated")
    try:
        ts_name = UID(transfer_syntax).name if transfer_syntax else ""
        sop_class = UID(str(ds.get("SOPClassUID", ""))).name if ds.get("SOPClassUID") else ""
    except (ValueError, TypeError):
        ts_name, sop_class = "", ""
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    modality = str(ds.get("Modality", "") or "").strip().upper()
    row.update(modality=modality, sop_class=sop_class, rows=max(rows, 0), columns=max(cols, 0),
               frames=max(frames, 0), samples_per_pixel=max(samples, 0), bits_allocated=max(bits, 0),
               transfer_syntax=transfer_syntax, transfer_syntax_name=ts_name, photometric=photometric,
               burned_in=burned)

    month = assign_month(ds, options.date_tags)
    if month is None:
        return reject("no_usable_date", f"no usable date in {', '.join(options.date_tags)} (missing or not a valid "
                      "YYYYMMDD); filed under the month the file arrived, not used for training")
    row["month"], row["month_source"] = month
    sop_uid = str(ds.get("SOPInstanceUID", "") or (file_meta.get("MediaStorageSOPInstanceUID", "") if file_meta is not None else "")).strip()
    if not sop_uid:
        return reject("no_sop_instance_uid", "no SOPInstanceUID, so no stable pseudonymous id can be made")
    row["id"] = image_id(sop_uid, key)
    handle.seek(stop)
    if not _has_pixel_tag(handle):
        if rows > 0 or "Image Storage" in sop_class:
            # An image object whose file ends before its pixel data was cut off in transfer.
            return reject("truncated", f"the header describes an image ({sop_class or 'Rows/Columns present'}) "
                          "but the file ends before its pixel data: it was cut off")
        return reject("no_pixel_data", "the file has no pixel data (not an image object)")
    if rows < 1 or cols < 1 or frames < 1 or samples not in (1, 3) or bits not in (1, 8, 16, 32, 64):
        return reject("invalid_image_header", f"unusable image header: Rows={rows} Columns={cols} "
                      f"NumberOfFrames={frames} SamplesPerPixel={samples} BitsAllocated={bits}")
    if burned == "YES" and options.exclude_burned_in:
        return reject("burned_in_annotation", "BurnedInAnnotation is YES: the pixels may show identifying text "
                      "(set exclude_burned_in=False only for data known to be clean)")
    if options.allowed_modalities and modality not in options.allowed_modalities:
        return reject("modality_excluded", f"modality {modality or '(none)'} is not in allowed_modalities "
                      f"{list(options.allowed_modalities)}")
    colour = photometric in COLOUR_PHOTOMETRICS or samples > 1
    if colour and options.colour_policy == "reject":
        return reject("colour_rejected", f"colour image ({photometric}) and colour_policy is 'reject'")
    if not transfer_syntax:
        return reject("invalid_image_header", "the file meta has no TransferSyntaxUID")
    hint = decoder_hint(transfer_syntax)
    if hint is not None:
        return reject("no_decoder", hint)
    native = not UID(transfer_syntax).is_compressed
    problem = _pixel_element_check(handle, ds, entry.size, rows, cols, frames, samples, bits, native, photometric,
                                   can_read_tail=not zone_is_s3)
    if problem is not None:
        return reject(*problem)
    row.update(status="ok", reason_code="", reason="")
    return row


def _has_pixel_tag(handle: BinaryIO) -> bool:
    position = handle.tell()
    head = handle.read(4)
    handle.seek(position)
    return head in (_PIXEL_TAG_LE, _PIXEL_TAG_BE)
