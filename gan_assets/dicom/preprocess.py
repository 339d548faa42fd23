"""Decode one DICOM file and turn it into square float images in [-1, 1], in DICOM order.

1. decode with pydicom's own pixel handlers (numpy, Pillow, pylibjpeg, gdcm when installed);
2. modality LUT (RescaleSlope/Intercept, functional groups, or a Modality LUT Sequence);
3. VOI window (the file's, a named preset, or robust percentiles), mapped to [-1, 1];
4. MONOCHROME1 inverted so that bright always means dense;
5. multi-frame policy (middle, first or every frame);
6. colour (RGB/YBR/palette) converted to grayscale or rejected;
7. centre crop or pad to square, then an anti-aliased resize to the target size.

Every function here is plain numpy/pydicom/Pillow; failures raise :class:`RejectError`
with a reason code and a sentence a person understands (never an identifying value).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pydicom.pixels  # noqa: F401 - imported eagerly so pool workers inherit it (see batch.py)
from PIL import Image

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
VOI_POLICIES = ("header", "preset", "percentile")
MULTIFRAME_POLICIES = ("middle", "first", "all")
COLOUR_POLICIES = ("grayscale", "reject")
GEOMETRIES = ("crop", "pad")
COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420",
                       "YBR_PARTIAL_422", "PALETTE COLOR")
# ITU-R BT.601 luma weights: the conventional RGB -> gray conversion.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class RejectError(Exception):
    """A file that cannot become a training image; ``code`` groups reasons for counting."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class PreprocessOptions:
    """Plain mirror of the ``preprocess_config`` resource plus the target image size."""

    image_size: int = 64
    voi_policy: str = "header"
    voi_preset: str = "mediastinum"
    percentile_low: float = 0.5
    percentile_high: float = 99.5
    multiframe_policy: str = "middle"
    colour_policy: str = "grayscale"
    geometry: str = "pad"

    def __post_init__(self) -> None:
        checks = (("voi_policy", VOI_POLICIES), ("voi_preset", tuple(VOI_PRESETS)),
                  ("multiframe_policy", MULTIFRAME_POLICIES), ("colour_policy", COLOUR_POLICIES),
                  ("geometry", GEOMETRIES))
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
    pyd_logger.setLevel(logging.CRITICAL)
    config.settings.reading_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode = old_mode
        pyd_logger.setLevel(old_level)


# ---- step 2: modality LUT -----------------------------------------------------------------
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
    slope = float(source.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(source.get("RescaleIntercept", 0.0) or 0.0)
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


# ---- step 3: VOI --------------------------------------------------------------------------
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
    if not np.isfinite(center) or not np.isfinite(width) or width < 1.0:
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


# ---- step 6: colour -----------------------------------------------------------------------
def to_grayscale(pixels: np.ndarray, ds: Any) -> np.ndarray:
    """RGB (pydicom converts YBR to RGB) or palette colour -> luma as float32."""
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)
    if pixels.shape[-1] != 3:
        raise RejectError("invalid_image_header", f"colour image with {pixels.shape[-1]} samples per pixel, expected 3")
    return pixels.astype(np.float32) @ _LUMA


# ---- step 7: geometry ---------------------------------------------------------------------
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
    i.e. anti-aliasing, filter) down to at least twice the target, then Lanczos finishes:
    about 3x faster than Lanczos alone on 512 -> 64. Lanczos overshoot is clipped.
    """
    if image.shape == (size, size):
        return image.astype(np.float32, copy=False)
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))  # float32 -> mode "F"
    out = np.asarray(pil.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0), dtype=np.float32)
    return np.clip(out, -1.0, 1.0)


# ---- the whole chain ----------------------------------------------------------------------
def _frame_indices(n_frames: int, policy: str) -> list[int]:
    if n_frames <= 1:
        return [0]
    if policy == "first":
        return [0]
    if policy == "middle":
        return [n_frames // 2]
    return list(range(n_frames))


def _decode(ds: Any, frames: list[int], n_frames: int) -> list[np.ndarray]:
    from pydicom.pixels import pixel_array

    if n_frames <= 1:
        return [ds.pixel_array]
    if len(frames) == n_frames:
        array = ds.pixel_array
        return [array[i] for i in frames]
    # Decode only the frames the policy keeps (pydicom decodes a single frame on request).
    return [pixel_array(ds, index=i) for i in frames]


def _decoder_hint(transfer_syntax: str) -> str | None:
    """None when a decoder is available, else a sentence naming what to install."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    uid = UID(transfer_syntax)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"no pixel decoder exists in pydicom for transfer syntax {uid.name} ({uid})"
    if decoder.is_available:
        return None
    missing = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
    return (f"no installed decoder for transfer syntax {uid.name} ({uid}); install one of: {missing} "
            "(pip install 'gan-assets[codecs]' adds pylibjpeg and its plugins)")


def decoder_hint(transfer_syntax: str) -> str | None:
    """Public wrapper of the decoder check used by the header scan."""
    try:
        return _decoder_hint(transfer_syntax)
    except (ValueError, KeyError) as err:
        return f"unknown transfer syntax {transfer_syntax!r} ({err})"


def preprocess_dataset(ds: Any, options: PreprocessOptions) -> Preprocessed:
    """Steps 1-7 on a dataset read with its pixel data; raises RejectError with a reason."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise RejectError("no_pixel_data", "the file has no pixel data (not an image object)")
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    colour = photometric in COLOUR_PHOTOMETRICS or int(ds.get("SamplesPerPixel", 1) or 1) > 1
    if colour and options.colour_policy == "reject":
        raise RejectError("colour_rejected", f"colour image ({photometric}) and colour_policy is 'reject'")
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise RejectError("invalid_image_header", "NumberOfFrames is not an integer") from None
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        raise RejectError("invalid_image_header", f"Rows x Columns is {rows} x {cols}")
    frames = _frame_indices(n_frames, options.multiframe_policy)
    file_meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(file_meta.get("TransferSyntaxUID", "")) if file_meta is not None else ""
    try:
        decoded = _decode(ds, frames, n_frames)
    except Exception as err:  # every decoder failure becomes a reject; the month goes on
        hint = decoder_hint(transfer_syntax) if transfer_syntax else None
        if hint is not None:
            raise RejectError("no_decoder", hint) from None
        text = str(err)
        if "less than expected" in text or "shorter" in text or "truncat" in text.lower():
            raise RejectError("truncated", f"pixel data is shorter than Rows x Columns x frames needs ({type(err).__name__})") from None
        detail = " ".join(text.split())[:200]
        raise RejectError("decode_failed", f"pixel data could not be decoded ({type(err).__name__}: {detail})") from None

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
        if not np.all(np.isfinite(values)):
            raise RejectError("decode_failed", "decoded pixel values are not finite")
        image = apply_window(values, *window, in_place=True)  # values is our own float32 copy
        if inverted:
            image = np.negative(image)  # MONOCHROME1: low values are bright; flip so bright = dense
        image = resize_square(crop_or_pad_square(image, options.geometry), options.image_size)
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


def read_dataset(source: str | bytes | BinaryIO) -> Any:
    """dcmread a path, bytes or binary file with pixel data; unreadable input -> RejectError."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    handle: Any = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = dcmread(handle)
        # pydicom returns an empty dataset, with only a warning, for a file cut off inside its
        # compressed pixel data; that is a truncated file, not an image-less one.
        if any("End of file reached before delimiter" in str(w.message) for w in caught) or len(ds) == 0:
            raise RejectError("truncated", "the file ends inside its encapsulated (compressed) pixel data: it was cut off")
        return ds
    except InvalidDicomError:
        raise RejectError("not_dicom", "not a DICOM Part 10 file (no 'DICM' preamble or file meta)") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, NotImplementedError) as err:
        raise RejectError("unreadable", f"the DICOM header cannot be parsed ({type(err).__name__}); the file may be truncated") from None


def preprocess_file(source: str | bytes | BinaryIO, options: PreprocessOptions) -> Preprocessed:
    """Read (once, with pixel data) and preprocess one file."""
    with quiet_pydicom():
        ds = read_dataset(source)
        return preprocess_dataset(ds, options)
