"""Decode one DICOM file and turn it into square float images in [-1, 1], in DICOM order.

1. decode with pydicom's own pixel handlers (numpy, Pillow, pylibjpeg, gdcm when installed);
2. modality LUT (RescaleSlope/Intercept, functional groups, or a Modality LUT Sequence);
3. VOI window (the file's, a named preset, or robust percentiles), mapped to [-1, 1];
4. MONOCHROME1 inverted so that bright always means dense;
5. multi-frame policy (middle, first or every frame);
6. colour (RGB/YBR/palette) converted to grayscale or rejected;
7. centre crop or pad to square, then an anti-aliased resize to the target size.

Every function here is plain numpy/pydicom/Pillow; failures raise :class:`RejectError`
with a reason code whose sentence is fixed (``reasons.REASONS``), never exception text.
Before any pixel is decoded the declared geometry is checked against :class:`IngestLimits`,
BurnedInAnnotation is checked again (the scan may be stale), and a deflated dataset is
inflated with a bound.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, get_args

import numpy as np
import pydicom.pixels  # noqa: F401 - imported eagerly so pool workers inherit it (see batch.py)
from PIL import Image

from gan_assets.dicom.config import ColourPolicy, Geometry, MultiframePolicy, VoiPolicy
from gan_assets.dicom.limits import IngestLimits, bounded_int, geometry_problem
from gan_assets.dicom.reasons import reason_sentence
from gan_assets.dicom.vocabulary import (
    MISSING_BURNED_IN_POLICIES,
    burned_in_code,
    burned_in_excluded,
    photometric_code,
    sop_class_name,
    transfer_syntax_code,
)

# Named CT windows (center, width) in HU; the usual radiology presets.
VOI_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "abdomen": (60.0, 400.0),
    "liver": (60.0, 160.0),
    "brain": (40.0, 80.0),
    "bone": (400.0, 1800.0),
}
VOI_POLICIES: tuple[str, ...] = get_args(VoiPolicy)
MULTIFRAME_POLICIES: tuple[str, ...] = get_args(MultiframePolicy)
COLOUR_POLICIES: tuple[str, ...] = get_args(ColourPolicy)
GEOMETRIES: tuple[str, ...] = get_args(Geometry)
COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420",
                       "YBR_PARTIAL_422", "PALETTE COLOR")
# Larger than any stored value can map to (32-bit integers, HU, SUV) yet far from float32's limit.
MAX_WINDOW_VALUE = 1e12
# ITU-R BT.601 luma weights: the conventional RGB -> gray conversion.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class RejectError(Exception):
    """A file that cannot become a training image; ``code`` groups reasons for counting.

    ``reason`` is always the code's fixed sentence; ``detail`` (never written anywhere) is only
    for a developer reading a traceback.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.reason = reason_sentence(code)
        self.detail = detail


@dataclass(frozen=True)
class PreprocessOptions:
    """What decoding one file needs: the target image size and the decoding part of
    :class:`~gan_assets.dicom.config.PreprocessSettings` (which builds it), validated again here
    because worker processes and tests construct it directly."""

    image_size: int = 64
    voi_policy: str = "header"
    voi_preset: str = "mediastinum"
    percentile_low: float = 0.5
    percentile_high: float = 99.5
    multiframe_policy: str = "middle"
    colour_policy: str = "grayscale"
    geometry: str = "pad"
    exclude_burned_in: bool = True
    missing_burned_in: str = "allow"
    limits: IngestLimits = IngestLimits()

    def __post_init__(self) -> None:
        checks = (("voi_policy", VOI_POLICIES), ("voi_preset", tuple(VOI_PRESETS)),
                  ("multiframe_policy", MULTIFRAME_POLICIES), ("colour_policy", COLOUR_POLICIES),
                  ("geometry", GEOMETRIES), ("missing_burned_in", MISSING_BURNED_IN_POLICIES))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"preprocess option {name}={getattr(self, name)!r} is not one of {allowed}")
        if not 8 <= self.image_size <= 1024:
            raise ValueError(f"image_size={self.image_size} is outside 8..1024")
        if not 0.0 <= self.percentile_low < self.percentile_high <= 100.0:
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentile_low}, {self.percentile_high}")


@dataclass
class Preprocessed:
    """The images of one file and how they were made (no identifying values)."""

    images: np.ndarray  # float32 [k, S, S] in [-1, 1]
    frames: list[int]
    voi_source: str
    window: tuple[float, float]  # (low, high) value range mapped to [-1, 1] (first image)
    inverted: bool
    colour_converted: bool
    source_shape: tuple[int, int]
    notes: list[str] = field(default_factory=list)


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value warnings: they quote header values, which may identify people."""
    import logging

    from pydicom import config

    pyd_logger = logging.getLogger("pydicom")
    old_level, old_mode = pyd_logger.level, config.settings.reading_validation_mode
    # setLevel empties every logger's level cache: inside a month already made quiet (nested
    # per file), leave the level alone.
    relevel = old_level < logging.CRITICAL
    if relevel:
        pyd_logger.setLevel(logging.CRITICAL)
    config.settings.reading_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode = old_mode
        if relevel:
            pyd_logger.setLevel(old_level)


def _functional_item(ds: Any, frame: int, sequence: str) -> Any | None:
    """The item of a functional-group macro for one frame (per-frame beats shared), if any."""
    for group_keyword, pick in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(group_keyword)
        if groups and len(groups) > pick:
            macro = groups[pick].get(sequence)
            if macro:
                return macro[0]
    return None


def rescale_for_frame(ds: Any, frame: int = 0) -> tuple[float, float] | None:
    """(slope, intercept) for a frame: top level, else enhanced functional groups; None if absent."""
    source = ds if "RescaleSlope" in ds or "RescaleIntercept" in ds else _functional_item(
        ds, frame, "PixelValueTransformationSequence")
    if source is None:
        return None
    try:
        slope = float(_first(source.get("RescaleSlope")) or 1.0) if source.get("RescaleSlope") not in (None, "") else 1.0
        intercept = float(_first(source.get("RescaleIntercept"))) if source.get("RescaleIntercept") not in (None, "") else 0.0
    except (TypeError, ValueError, IndexError):
        raise RejectError("invalid_image_header", "RescaleSlope/RescaleIntercept is not a number") from None
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise RejectError("non_finite", "RescaleSlope or RescaleIntercept is not finite")
    return slope, intercept


def modality_lut(stored: np.ndarray, ds: Any, frame: int = 0) -> np.ndarray:
    """Stored values -> modality values (e.g. HU) as float32."""
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    rescale = rescale_for_frame(ds, frame)
    values = stored.astype(np.float32)
    if rescale is not None and rescale != (1.0, 0.0):
        slope, intercept = rescale
        values *= np.float32(slope)
        values += np.float32(intercept)
    return values


def window_bounds(center: float, width: float) -> tuple[float, float]:
    """The value range a DICOM linear window (PS3.3 C.11.2.1.2.1) maps onto the full output."""
    width = max(float(width), 1.0)
    low = center - 0.5 - (width - 1.0) / 2.0
    return low, low + (width - 1.0)


def apply_window(values: np.ndarray, low: float, high: float, *, in_place: bool = False) -> np.ndarray:
    """Linear map of [low, high] onto [-1, 1], clipped outside (float32).

    ``in_place`` reuses ``values`` (a float32 array the caller owns): one 512 x 512 buffer
    instead of three temporaries per image.
    """
    if high <= low:  # a width-1 window is a threshold
        return np.where(values > low, np.float32(1.0), np.float32(-1.0)).astype(np.float32)
    out = values if in_place and values.dtype == np.float32 else values.astype(np.float32)
    out -= np.float32(low)
    out *= np.float32(2.0 / (high - low))
    out -= np.float32(1.0)
    np.clip(out, -1.0, 1.0, out=out)
    return out


def _first(value: Any) -> float:
    if value is None:
        raise ValueError("missing")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def header_window(ds: Any, frame: int = 0) -> tuple[float, float] | None:
    """(center, width) from the file (top level or Frame VOI LUT functional group), if usable."""
    source = ds if "WindowCenter" in ds else _functional_item(ds, frame, "FrameVOILUTSequence")
    if source is None:
        return None
    try:
        center, width = _first(source.get("WindowCenter")), _first(source.get("WindowWidth"))
    except (TypeError, ValueError, IndexError):
        return None
    # A window far outside any stored value range (WindowWidth=1e308) overflows float32 to
    # inf and NaN: it is not a usable window, so the robust percentile fallback applies.
    if not np.isfinite(center) or not np.isfinite(width) or width < 1.0:
        return None
    if abs(center) > MAX_WINDOW_VALUE or width > MAX_WINDOW_VALUE:
        return None
    return center, width


def choose_window(values: np.ndarray, ds: Any, options: PreprocessOptions, frame: int = 0) -> tuple[tuple[float, float], str]:
    """((low, high), source) by the configured VOI policy with a recorded fallback."""
    modality = str(ds.get("Modality", "") or "")
    if options.voi_policy == "preset":
        if modality == "CT":
            return window_bounds(*VOI_PRESETS[options.voi_preset]), f"preset:{options.voi_preset}"
        # Presets are in HU; other modalities fall back to the file's own window.
        window = header_window(ds, frame)
        if window is not None:
            return window_bounds(*window), "header (preset needs CT)"
    elif options.voi_policy == "header":
        window = header_window(ds, frame)
        if window is not None:
            return window_bounds(*window), "header"
    low, high = np.percentile(values, [options.percentile_low, options.percentile_high])
    source = "percentile" if options.voi_policy == "percentile" else "percentile (no window in file)"
    return (float(low), float(high)), source


def to_grayscale(pixels: np.ndarray, ds: Any) -> np.ndarray:
    """RGB (pydicom converts YBR to RGB) or palette colour -> luma as float32."""
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)
    if pixels.shape[-1] != 3:
        raise RejectError("invalid_image_header", f"colour image with {pixels.shape[-1]} samples per pixel, expected 3")
    return pixels.astype(np.float32) @ _LUMA


def crop_or_pad_square(image: np.ndarray, geometry: str, fill: float = -1.0) -> np.ndarray:
    """Centre-crop the longer side, or pad the shorter one with ``fill`` (black after VOI)."""
    rows, cols = image.shape
    if rows == cols:
        return image
    if geometry == "crop":
        side = min(rows, cols)
        top, left = (rows - side) // 2, (cols - side) // 2
        return image[top:top + side, left:left + side]
    side = max(rows, cols)
    out = np.full((side, side), fill, dtype=image.dtype)
    top, left = (side - rows) // 2, (side - cols) // 2
    out[top:top + rows, left:left + cols] = image
    return out


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased resize of a square float image to size x size (Pillow, 32-bit float mode).

    Pillow widens the Lanczos kernel by the downscale factor, so it low-pass filters before
    sampling; ``reducing_gap=2`` first box-averages by an integer factor (itself an area,
    i.e. anti-aliasing, filter) down to at least twice the target, then Lanczos finishes, which
    is faster than Lanczos alone on large downscales. Lanczos overshoot is clipped.
    """
    if image.shape == (size, size):
        return image.astype(np.float32, copy=False)
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))  # float32 -> mode "F"
    out = np.asarray(pil.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0), dtype=np.float32)
    return np.clip(out, -1.0, 1.0)


def _frame_indices(n_frames: int, policy: str) -> list[int]:
    if n_frames <= 1:
        return [0]
    if policy == "first":
        return [0]
    if policy == "middle":
        return [n_frames // 2]
    return list(range(n_frames))


def _decode(ds: Any, frames: list[int], n_frames: int) -> list[np.ndarray]:
    # pydicom.pixels.pixel_array, not ``ds.pixel_array``: the same decode without keying and
    # caching the array on the dataset (~60 us a file, benchmarks/bench_ingest.py).
    from pydicom.pixels import pixel_array

    if n_frames <= 1:
        return [pixel_array(ds)]
    if len(frames) == n_frames:
        array = pixel_array(ds)
        return [array[i] for i in frames]
    # Decode only the frames the policy keeps (pydicom decodes a single frame on request).
    return [pixel_array(ds, index=i) for i in frames]


def decoder_available(transfer_syntax: str) -> bool:
    """Whether pydicom has a working decoder for a transfer syntax from the closed vocabulary.

    Header text never reaches ``UID(...)``: an unknown syntax maps to ``other``, which has none.
    """
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    code, _ = transfer_syntax_code(transfer_syntax)
    if code in ("", "other"):
        return False
    try:
        return bool(get_decoder(UID(code)).is_available)
    except (NotImplementedError, ValueError, KeyError):
        return False


def preprocess_dataset(ds: Any, options: PreprocessOptions) -> Preprocessed:
    """Steps 1-7 on a dataset read with its pixel data; raises RejectError with a reason."""
    try:
        return _preprocess_dataset(ds, options)
    except (RejectError, MemoryError):
        raise
    except Exception as err:  # LUT, palette or header oddities of one file: that file's reject
        raise RejectError("decode_failed", type(err).__name__) from None


def _preprocess_dataset(ds: Any, options: PreprocessOptions) -> Preprocessed:
    geometry = check_image_header(ds, options, file_bytes=None)
    rows, cols, n_frames = geometry.rows, geometry.cols, geometry.frames
    photometric = geometry.photometric
    colour = geometry.colour
    frames = _frame_indices(n_frames, options.multiframe_policy)
    file_meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(file_meta.get("TransferSyntaxUID", "")) if file_meta is not None else ""
    try:
        decoded = _decode(ds, frames, n_frames)
    except RejectError:
        raise
    except Exception as err:  # every decoder failure becomes a reject; the month goes on
        if transfer_syntax and not decoder_available(transfer_syntax):
            raise RejectError("no_decoder") from None
        text = str(err)
        if "less than expected" in text or "shorter" in text or "truncat" in text.lower():
            raise RejectError("truncated", type(err).__name__) from None
        raise RejectError("decode_failed", type(err).__name__) from None

    images: list[np.ndarray] = []
    first_window: tuple[float, float] = (0.0, 0.0)
    voi_source = ""
    inverted = photometric == "MONOCHROME1"
    for position, (frame, stored) in enumerate(zip(frames, decoded)):
        stored = np.asarray(stored)
        # Palette colour decodes to indices (rows x cols); the colour LUT comes in to_grayscale.
        expected = (rows, cols, 3) if colour and photometric != "PALETTE COLOR" else (rows, cols)
        if stored.shape != expected:
            raise RejectError("inconsistent", f"decoded frame has shape {stored.shape}, header says {expected}")
        if colour:
            values = to_grayscale(stored, ds)
            # Palette LUT entries may be 16-bit even for 8-bit indices: take the LUT's depth.
            bits = 16 if photometric == "PALETTE COLOR" and values.max(initial=0) > 255 else int(ds.get("BitsStored", 8) or 8)
            window, source = (0.0, float(2 ** bits - 1)), "colour full range"
        else:
            values = modality_lut(stored, ds, frame)
            window, source = choose_window(values, ds, options, frame)
        if not np.all(np.isfinite(values)) or not all(np.isfinite(w) for w in window):
            raise RejectError("non_finite")
        image = apply_window(values, *window, in_place=True)  # values is our own float32 copy
        if inverted:
            image = np.negative(image)  # MONOCHROME1: low values are bright; flip so bright = dense
        image = resize_square(crop_or_pad_square(image, options.geometry), options.image_size)
        if not np.all(np.isfinite(image)):
            raise RejectError("non_finite")
        images.append(image)
        if position == 0:
            first_window, voi_source = window, source
    return Preprocessed(
        images=np.stack(images).astype(np.float32, copy=False),
        frames=frames,
        voi_source=voi_source,
        window=first_window,
        inverted=inverted,
        colour_converted=colour,
        source_shape=(rows, cols),
    )


_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
# The first element of a dataset written without preamble: file meta (0002) or identification (0008).
_PREAMBLELESS_GROUPS = (0x0002, 0x0008)


def _stop_at_pixels(tag: Any, vr: Any, length: Any) -> bool:
    return int(tag) in _PIXEL_TAGS


def _file_size(handle: BinaryIO) -> int:
    position = handle.tell()
    size = handle.seek(0, 2)
    handle.seek(position)
    return size


class _BoundedReader:
    """A file object whose ``read(n)`` never asks for more than the file holds.

    A corrupted length field makes pydicom call ``read(0x7FFFFFF0)``; a buffered file allocates
    that much before finding the end of the file (1.2 GB for one 3 KB file). ``BytesIO`` does not.
    """

    def __init__(self, raw: BinaryIO, size: int) -> None:
        self._raw, self._size = raw, size
        self.name = ""

    def read(self, n: int | None = -1) -> bytes:
        remaining = max(self._size - self._raw.tell(), 0)
        return self._raw.read(remaining if n is None or n < 0 or n > remaining else n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()


def _needs_force(head: bytes) -> bool:
    """Whether a file without 'DICM' still starts like a dataset pydicom reads with force=True."""
    if len(head) < 8:
        raise RejectError("not_dicom")
    if head[128:132] == b"DICM":
        return False
    (group_le,), (group_be,) = struct.unpack("<H", head[:2]), struct.unpack(">H", head[:2])
    if group_le in _PREAMBLELESS_GROUPS or group_be in _PREAMBLELESS_GROUPS:
        return True
    raise RejectError("not_dicom")


def _inflate(handle: BinaryIO, limit: int) -> bytes:
    """Inflate a deflated dataset (PS3.5 A.5) to at most ``limit`` bytes, else ``too_large``."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    while True:
        chunk = handle.read(1 << 20)
        if not chunk:
            break
        out += inflater.decompress(chunk, limit + 1 - len(out))
        if len(out) > limit or inflater.unconsumed_tail:
            raise RejectError("too_large", "deflated dataset inflates beyond max_decoded_bytes")
    try:
        out += inflater.flush()
    except zlib.error:
        raise RejectError("unreadable") from None
    if len(out) > limit:
        raise RejectError("too_large")
    return bytes(out)


# What ingest reads from a header, converted inside read_dicom (see there): the whole image pixel
# group, these identification elements and file meta elements; scan adds its date tags.
_CONVERTED_GROUP = 0x0028
_CONVERTED_KEYWORDS = ("SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "Modality")
_CONVERTED_META_KEYWORDS = ("TransferSyntaxUID", "MediaStorageSOPInstanceUID")


def read_dicom(source: str | bytes | BinaryIO, *, stop_before_pixels: bool = False,
               limits: IngestLimits = IngestLimits(),
               read_keywords: tuple[str, ...] = ()) -> tuple[Any, BinaryIO, bool]:
    """(dataset, the stream it was read from, inflated?) as pydicom reads it, within the limits.

    The one reader of the header scan and the decoder, so both give a file the same reason:
    a file larger than ``max_file_bytes`` is ``too_large`` before reading; a file without the
    'DICM' preamble is read with ``force=True`` when it starts like a dataset; a deflated
    dataset is inflated with a bound (pydicom would inflate it whole). After a header-only
    read the stream stands at the pixel data element. ``read_keywords`` names header elements the
    caller will read besides the image pixel group and SOP/modality identification (the scan's
    date tags): they are converted here too.
    """
    from pydicom import dcmread
    from pydicom.dataset import FileDataset
    from pydicom.errors import InvalidDicomError
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.filereader import read_dataset as pydicom_read_dataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    handle: Any = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    opened_here = isinstance(source, str)
    if opened_here:
        handle = open(source, "rb")
    try:
        size = _file_size(handle)
        if size > limits.max_file_bytes:
            raise RejectError("too_large")
        if not isinstance(handle, io.BytesIO):
            handle = _BoundedReader(handle, size)
        handle.seek(0)
        force = _needs_force(handle.read(132))
        handle.seek(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            preamble = read_preamble(handle, force)
            file_meta = _read_file_meta_info(handle)
            if file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
                stream: Any = DicomBytesIO(_inflate(handle, limits.max_decoded_bytes))
                inflated = True
                dataset = pydicom_read_dataset(stream, False, True,
                                               stop_when=_stop_at_pixels if stop_before_pixels else None)
                ds = FileDataset("", dataset, preamble, file_meta, False, True)
                ds.set_original_encoding(False, True, dataset._character_set)
            else:
                handle.seek(0)
                ds, stream = dcmread(handle, force=force, stop_before_pixels=stop_before_pixels), handle
                inflated = False
        # pydicom returns an empty dataset, with only a warning, for a file cut off inside its
        # compressed pixel data; that is a truncated file, not an image-less one.
        if any("End of file reached before delimiter" in str(w.message) for w in caught) or len(ds) == 0:
            raise RejectError("truncated")
        # pydicom converts element values on first access; convert the ones ingest reads here,
        # inside this try, so a corrupt value (an unknown VR, a bad number) is this file's
        # 'unreadable' at scan and at decode alike, not an error later in whatever code touches
        # it first. Elements ingest never reads (descriptions, names, private tags) stay raw:
        # converting them was most of this function's cost (benchmarks/bench_ingest.py).
        meta = getattr(ds, "file_meta", None)
        for tag in _keyword_tags(_CONVERTED_META_KEYWORDS) if meta is not None else ():
            if tag in meta:
                meta[tag]
        for tag in list(ds.keys()):
            if tag.group == _CONVERTED_GROUP:
                ds[tag]
        for tag in _keyword_tags(_CONVERTED_KEYWORDS + tuple(read_keywords)):
            if tag in ds:
                ds[tag]
        if force and "SOPClassUID" not in ds and not any(int(t) in _PIXEL_TAGS for t in ds.keys()):
            raise RejectError("not_dicom")
        _infer_transfer_syntax(ds)
        return ds, stream, inflated
    except RejectError:
        raise
    except InvalidDicomError:
        raise RejectError("not_dicom") from None
    except MemoryError:
        raise RejectError("too_large") from None
    except Exception as err:  # any parser failure is this file's reject, never the month's
        raise RejectError("unreadable", type(err).__name__) from None
    finally:
        if opened_here:
            handle.close()


@functools.lru_cache(maxsize=64)
def _keyword_tags(keywords: tuple[str, ...]) -> tuple[int, ...]:
    """The tags of known keywords (an unknown keyword names no element and is skipped)."""
    from pydicom.datadict import tag_for_keyword

    return tuple(tag for tag in map(tag_for_keyword, keywords) if tag is not None)


def _infer_transfer_syntax(ds: Any) -> None:
    """A dataset without a TransferSyntaxUID (no file meta: an old or raw file) gets the one it was
    read with, as pydicom determined it from the bytes; pydicom then decodes native pixel data.
    Encapsulated (compressed) data cannot be inferred and stays undecodable."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    syntax = {(True, True): ImplicitVRLittleEndian, (False, True): ExplicitVRLittleEndian,
              (False, False): ExplicitVRBigEndian}.get(tuple(getattr(ds, "original_encoding", (None, None))))
    if syntax is None:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax


def read_dataset(source: str | bytes | BinaryIO, limits: IngestLimits = IngestLimits()) -> Any:
    """dcmread a path, bytes or binary file with pixel data; unreadable input -> RejectError."""
    return read_dicom(source, limits=limits)[0]


@dataclass(frozen=True)
class ImageHeader:
    """The bounded geometry of an image header (checked against the limits)."""

    rows: int
    cols: int
    frames: int
    samples: int
    bits: int
    photometric: str
    colour: bool


def check_image_header(ds: Any, options: PreprocessOptions, *, file_bytes: int | None) -> ImageHeader:
    """Bounded geometry, limits and burned-in policy of a dataset, before any pixel is decoded."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        # An image object whose file ends before its pixel data was cut off in transfer.
        image_like = ds.get("Rows") not in (None, "") or "Image Storage" in sop_class_name(ds.get("SOPClassUID"))
        raise RejectError("truncated" if image_like else "no_pixel_data")
    burned = burned_in_code(ds.get("BurnedInAnnotation"))
    if burned_in_excluded(burned, exclude_burned_in=options.exclude_burned_in, missing_policy=options.missing_burned_in):
        raise RejectError("burned_in_annotation")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip()
    header = read_geometry(ds)
    if header is None or photometric_code(photometric) == "other":
        raise RejectError("invalid_image_header")
    rows, cols, frames, samples, bits = header
    problem = geometry_problem(rows, cols, frames, samples, bits, geometry=options.geometry,
                               limits=options.limits, file_bytes=file_bytes)
    if problem is not None:
        raise RejectError(problem)
    colour = photometric in COLOUR_PHOTOMETRICS or samples > 1
    if colour and options.colour_policy == "reject":
        raise RejectError("colour_rejected")
    return ImageHeader(rows, cols, frames, samples, bits, photometric, colour)


def read_geometry(ds: Any) -> tuple[int, int, int, int, int] | None:
    """(rows, columns, frames, samples, bits allocated), each bounded; None if any is unusable."""
    rows, cols = bounded_int(ds.get("Rows"), 1, 65535), bounded_int(ds.get("Columns"), 1, 65535)
    frames_value = ds.get("NumberOfFrames")
    frames = 1 if frames_value in (None, "") else bounded_int(frames_value, 1)
    samples = bounded_int(ds.get("SamplesPerPixel", 1), 1, 4)
    bits = bounded_int(ds.get("BitsAllocated"), 1, 64)
    if rows is None or cols is None or frames is None or samples not in (1, 3) or bits not in (1, 8, 16, 32, 64):
        return None
    return rows, cols, frames, samples, bits


def preprocess_file(source: str | bytes | BinaryIO, options: PreprocessOptions) -> Preprocessed:
    """Read (once, with pixel data) and preprocess one file."""
    with quiet_pydicom():
        ds = read_dataset(source, options.limits)
        return preprocess_dataset(ds, options)
