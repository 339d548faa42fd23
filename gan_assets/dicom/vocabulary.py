"""Closed vocabularies for header values that leave ingest (manifest, metadata, logs).

A header is written by whoever made the file: a corrupted length byte can slide a patient's
name into the Modality or SOPClassUID field. Nothing from a header is copied verbatim: each
value is looked up in a fixed set (the standard's codes, pydicom's UID dictionary) and
anything else becomes ``other`` (or ``""`` when absent). ``UID(text).name`` is never used on
header text: for an unknown string it returns the string itself.
"""

from __future__ import annotations

from typing import Any

OTHER = "other"

# DICOM PS3.3 C.7.3.1.1.1 defined terms (current and retired), plus SC/OT seen in the wild.
MODALITIES = frozenset({
    "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CD", "CF", "CP", "CR", "CS", "CT", "DD", "DF", "DG", "DM", "DOC",
    "DS", "DX", "EC", "ECG", "EPS", "ES", "FA", "FID", "FS", "GM", "HC", "HD", "IO", "IOL", "IVOCT", "IVUS",
    "KER", "KO", "LEN", "LP", "LS", "MA", "MG", "MR", "MS", "NM", "OAM", "OCT", "OP", "OPM", "OPR", "OPT",
    "OPV", "OSS", "OT", "PLAN", "POS", "PR", "PT", "PX", "REG", "RESP", "RF", "RG", "RTDOSE", "RTIMAGE",
    "RTPLAN", "RTRECORD", "RTSTRUCT", "RWV", "SC", "SEG", "SM", "SMR", "SR", "SRF", "ST", "STAIN", "TG",
    "US", "VA", "VF", "XA", "XC",
})
PHOTOMETRICS = frozenset({
    "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "YBR_FULL", "YBR_FULL_422",
    "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB",
})
MISSING_BURNED_IN_POLICIES = ("allow", "reject")


def _uid_names(kind: str) -> dict[str, str]:
    from pydicom.uid import UID_dictionary

    return {uid: entry[0] for uid, entry in UID_dictionary.items() if entry[1] == kind}


_TRANSFER_SYNTAXES: dict[str, str] | None = None
_SOP_CLASSES: dict[str, str] | None = None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return str(value).strip("\x00 ")


def modality_code(value: Any) -> str:
    """A known modality code, ``other``, or ``""`` when absent."""
    text = _text(value).upper()
    if not text:
        return ""
    return text if text in MODALITIES else OTHER


def photometric_code(value: Any) -> str:
    text = _text(value).upper()
    if not text:
        return ""
    return text if text in PHOTOMETRICS else OTHER


def transfer_syntax_code(value: Any) -> tuple[str, str]:
    """(UID, name) when the UID is a transfer syntax pydicom knows, else (``other``, ``other``)."""
    global _TRANSFER_SYNTAXES
    if _TRANSFER_SYNTAXES is None:
        _TRANSFER_SYNTAXES = _uid_names("Transfer Syntax")
    text = _text(value)
    if not text:
        return "", ""
    name = _TRANSFER_SYNTAXES.get(text)
    return (text, name) if name is not None else (OTHER, OTHER)


def sop_class_name(value: Any) -> str:
    """The standard name of a known SOP class, ``other``, or ``""`` when absent."""
    global _SOP_CLASSES
    if _SOP_CLASSES is None:
        _SOP_CLASSES = _uid_names("SOP Class")
    text = _text(value)
    if not text:
        return ""
    return _SOP_CLASSES.get(text, OTHER)


def burned_in_code(value: Any) -> str:
    """``NO`` only for exactly NO; ``YES``; ``missing``; anything else (``YES\\NO``, ``no``) ``other``."""
    if value is None or value == "":
        return "missing"
    if not isinstance(value, str):  # a multi-valued YES\NO arrives as a list
        return OTHER
    text = value.strip(" ")
    if text == "NO":
        return "NO"
    if text == "YES":
        return "YES"
    return OTHER if text else "missing"


def burned_in_excluded(code: str, *, exclude_burned_in: bool, missing_policy: str) -> bool:
    """Whether a file with this BurnedInAnnotation code is kept out of training.

    Only exactly ``NO`` is trusted. A missing value is allowed by default: the attribute is
    optional (Type 3) in most image IODs, so real CT/MR archives rarely carry it and rejecting
    it would reject them whole; set ``missing_burned_in='reject'`` for sources such as
    ultrasound or secondary capture, where text in the pixels is common.
    """
    if not exclude_burned_in or code == "NO":
        return False
    if code == "missing":
        return missing_policy == "reject"
    return True
