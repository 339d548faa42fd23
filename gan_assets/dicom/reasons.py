"""Reject codes and the one fixed sentence of each.

A reject reason is written to the manifest, to Dagster metadata (so the event log) and to logs.
It is therefore never built from exception text or header values (pydicom's messages quote
them): a row carries a code from this table and exactly this table's sentence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

REASONS: dict[str, str] = {
    "not_dicom": "not a DICOM file (no 'DICM' preamble and no recognisable dataset)",
    "unreadable": "header cannot be parsed (truncated or corrupt)",
    "io_error": "the file could not be read (permission denied, or a disk or network error); "
                "the landing-zone index reads it again on its next update",
    "no_usable_date": "no usable StudyDate/SeriesDate/AcquisitionDate/ContentDate (missing or not YYYYMMDD); "
                      "listed as unassigned in landing_zone_index, not used for training",
    "outside_partitions": "dated before the first partition month or after the last one; listed as unassigned "
                          "in landing_zone_index until its month is a partition",
    "no_pixel_data": "no pixel data (not an image object)",
    "no_sop_instance_uid": "no SOPInstanceUID, so no stable pseudonymous id can be made",
    "invalid_image_header": "image header inconsistent or out of range (Rows, Columns, frames, samples, bits)",
    "truncated": "pixel data shorter than the header says: the file was cut off",
    "burned_in_annotation": "BurnedInAnnotation is not exactly NO (pixels may show identifying text); "
                            "see exclude_burned_in and missing_burned_in",
    "modality_excluded": "modality not in allowed_modalities",
    "colour_rejected": "colour image rejected by colour_policy",
    "no_decoder": "no installed decoder for the transfer syntax (see transfer_syntax_name); "
                  "pip install 'gan-assets[codecs]' adds pylibjpeg and its plugins",
    "duplicate": "same SOPInstanceUID as another file of this month; the first one is used",
    "decode_failed": "pixel data could not be decoded",
    "inconsistent": "decoded pixels disagree with the header",
    "missing": "file disappeared from the landing zone (deleted, or a link to nothing)",
    "internal_error": "unexpected error while reading the file",
    "not_regular_file": "not a regular file (a FIFO, device, socket or folder link); not read",
    "outside_zone": "a link that leaves the landing zone; not followed",
    "bad_name": "the file name is not valid UTF-8; rename the file to ingest it",
    "too_large": "declared image or file size exceeds the ingest limits (preprocess_config max_* settings)",
    "too_small": "image side below preprocess_config.min_side; it would be upsampled into a training image",
    "timeout": "decoding took longer than preprocess_config.decode_seconds; the worker was replaced",
    "non_finite": "image holds NaN or infinite values (a bad rescale or window)",
    "changed": "file changed between the manifest and decoding (size, modification time or content); "
               "materialize landing_zone_index and the month again",
    "worker_died": "the worker process decoding this file died (most often out of memory)",
}


def reason_sentence(code: str) -> str:
    """The fixed sentence of a code (an unknown code reads as an internal error)."""
    return REASONS.get(code, REASONS["internal_error"])


def reject_code(row: Mapping[str, Any]) -> str:
    """The code a rejected row is counted under: its reason_code, else its sentence, else 'unspecified'."""
    return str(row.get("reason_code") or row.get("reason") or "unspecified")


def count_reasons(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Rejected rows (manifest rows, decode rejects, unassigned files) per code, sorted by code.

    The one count behind the assets' metadata, their logs and the monthly report, so the numbers
    a person compares across them cannot disagree.
    """
    return dict(sorted(Counter(reject_code(row) for row in rows).items()))


def reason_examples(rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The first sentence seen for each code, sorted by code (a sentence may carry per-file detail)."""
    examples: dict[str, str] = {}
    for row in rows:
        examples.setdefault(reject_code(row), str(row.get("reason", "")))
    return dict(sorted(examples.items()))


def describe_reasons(counts: Mapping[str, int]) -> str:
    """'3 truncated (pixel data shorter than the header says), 1 not_dicom (...)'."""
    return ", ".join(f"{n} {code} ({REASONS.get(code, code)})" for code, n in sorted(counts.items(), key=lambda kv: -kv[1]))

