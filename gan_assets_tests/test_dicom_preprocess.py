"""Decoding and preprocessing on real files: pydicom's bundled test data and files we write."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from gan_assets.demo.phantom import SliceSpec, ct_dataset
from gan_assets.dicom.limits import IngestLimits
from gan_assets.dicom.preprocess import (
    PreprocessOptions,
    RejectError,
    apply_window,
    modality_lut,
    preprocess_file,
    resize_square,
    window_bounds,
)

# pydicom's test images include some of a few pixels a side (rtdose 10 x 10, JPEGLSNearLossless
# 50 x 10): these tests are about decoding, so the too_small limit is off here.
ANY_SIZE = IngestLimits(min_side=1)
OPTS = PreprocessOptions(image_size=32, limits=ANY_SIZE)


def _testfile(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:  # pragma: no cover - pydicom ships these files
        pytest.skip(f"pydicom test file {name} not installed")
    return str(path)


def _write(tmp_path: Path, pixels: np.ndarray, name: str = "x.dcm", **fields: Any) -> str:
    """A real CT file (written by pydicom) holding ``pixels`` with the given header fields."""
    ds = ct_dataset(SliceSpec(0, 1, dt.date(2026, 1, 5), 1, pixels.shape[0], False, False))
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.BitsStored, ds.HighBit = 16, 15
    for key, value in fields.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return str(path)


@pytest.mark.parametrize("name", [
    "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_padded.dcm",
])
def test_lossless_transfer_syntaxes_give_the_same_image(name: str) -> None:
    reference = preprocess_file(_testfile("MR_small.dcm"), OPTS)
    other = preprocess_file(_testfile(name), OPTS)
    assert other.images.shape == (1, 32, 32)
    np.testing.assert_allclose(other.images, reference.images, atol=1e-5)
    assert other.voi_source == "header"  # MR_small carries WindowCenter/Width


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPGExtended.dcm", "693_J2KI.dcm", "image_dfl.dcm",
                                  "JPEGLSNearLossless_16.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_compressed_and_deflated_files_decode(name: str) -> None:
    out = preprocess_file(_testfile(name), OPTS)
    assert out.images.shape == (1, 32, 32) and out.images.dtype == np.float32
    assert -1.0 <= out.images.min() < out.images.max() <= 1.0


def test_known_hu_survives_the_modality_lut(tmp_path: Path) -> None:
    stored = np.full((8, 8), 1064, np.uint16)
    stored[0, 0], stored[1, 1] = 24, 2024  # -1000 (air) and +1000 (bone) HU
    path = _write(tmp_path, stored, RescaleSlope="1", RescaleIntercept="-1024")
    ds = pydicom.dcmread(path)
    hu = modality_lut(ds.pixel_array, ds)
    assert hu[2, 2] == 40.0 and hu[0, 0] == -1000.0 and hu[1, 1] == 1000.0
    # CT_small: stored values plus its intercept of -1024.
    ct = pydicom.dcmread(_testfile("CT_small.dcm"))
    assert float(ct.RescaleIntercept) == -1024.0
    np.testing.assert_array_equal(modality_lut(ct.pixel_array, ct), ct.pixel_array.astype(np.float32) - 1024.0)


def test_signed_pixels_and_slope(tmp_path: Path) -> None:
    stored = np.array([[-1000, 0], [500, -2000]], np.int16).repeat(4, 0).repeat(4, 1)
    path = _write(tmp_path, stored, RescaleSlope="2", RescaleIntercept="10")
    ds = pydicom.dcmread(path)
    hu = modality_lut(ds.pixel_array, ds)
    assert hu[0, 0] == -1990.0 and hu[0, 4] == 10.0 and hu[4, 0] == 1010.0 and hu[4, 4] == -3990.0


def test_window_maps_its_bounds_to_minus_one_and_one(tmp_path: Path) -> None:
    low, high = window_bounds(40.0, 400.0)
    assert (low, high) == (-160.0, 239.0)  # PS3.3 C.11.2.1.2.1: c - 0.5 -/+ (w - 1) / 2
    values = np.array([low - 100, low, (low + high) / 2, high, high + 100], np.float32)
    np.testing.assert_allclose(apply_window(values, low, high), [-1, -1, 0, 1, 1], atol=1e-6)
    # End to end: a file whose HU sit exactly on the bounds of its own window (integer bounds).
    stored = np.full((32, 32), 1024, np.uint16)
    stored[:16] = 1024 - 100  # -100 HU: lower bound of center 50.5, width 301
    stored[16:] = 1024 + 200  # +200 HU: the upper bound
    path = _write(tmp_path, stored, WindowCenter="50.5", WindowWidth="301", RescaleIntercept="-1024")
    out = preprocess_file(path, OPTS)
    assert out.window == (-100.0, 200.0) and out.voi_source == "header"
    assert out.images[0, :16].max() == -1.0 and out.images[0, 16:].min() == 1.0


def test_voi_presets_and_percentile_fallback(tmp_path: Path) -> None:
    stored = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 2048)
    path = _write(tmp_path, stored, WindowCenter=None, WindowWidth=None, RescaleIntercept="-1024")
    header = preprocess_file(path, OPTS)
    assert header.voi_source == "percentile (no window in file)"
    preset = preprocess_file(path, PreprocessOptions(image_size=32, voi_policy="preset", voi_preset="lung"))
    assert preset.voi_source == "preset:lung" and preset.window == window_bounds(-600.0, 1500.0)
    mr = preprocess_file(_testfile("MR_small.dcm"), PreprocessOptions(image_size=32, voi_policy="preset"))
    assert mr.voi_source == "header (preset needs CT)"  # HU presets never apply to MR
    with pytest.raises(ValueError, match="voi_preset"):
        PreprocessOptions(voi_preset="spleen")


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = np.tile(np.linspace(0, 2000, 32, dtype=np.uint16), (32, 1))
    m2 = preprocess_file(_write(tmp_path, stored, "m2.dcm", PhotometricInterpretation="MONOCHROME2"), OPTS)
    m1 = preprocess_file(_write(tmp_path, stored, "m1.dcm", PhotometricInterpretation="MONOCHROME1"), OPTS)
    assert m1.inverted and not m2.inverted
    np.testing.assert_allclose(m1.images, -m2.images, atol=1e-6)
    # MONOCHROME1: low stored values are displayed bright, so column 0 is bright after ingest.
    assert m1.images[0, :, 0].mean() > 0.9 and m1.images[0, :, -1].mean() < -0.9


def test_multiframe_policies() -> None:
    path = _testfile("rtdose.dcm")  # 15 frames
    ds = pydicom.dcmread(path)
    middle = preprocess_file(path, OPTS)
    assert middle.frames == [7] and middle.images.shape == (1, 32, 32)
    every = preprocess_file(path, PreprocessOptions(image_size=32, multiframe_policy="all", limits=ANY_SIZE))
    assert every.frames == list(range(15)) and every.images.shape == (15, 32, 32)
    assert int(ds.NumberOfFrames) == 15
    first = preprocess_file(path, PreprocessOptions(image_size=32, multiframe_policy="first", limits=ANY_SIZE))
    assert first.frames == [0]
    colour = preprocess_file(_testfile("SC_rgb_rle_2frame.dcm"), OPTS)
    assert colour.frames == [1] and colour.colour_converted


@pytest.mark.parametrize("name", ["SC_rgb.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_ybr_full_422_uncompressed.dcm",
                                  "examples_palette.dcm", "ExplVR_BigEnd.dcm"])
def test_colour_to_grayscale_or_rejected(name: str) -> None:
    if name == "SC_rgb.dcm" and get_testdata_file(name, download=False) is None:
        name = "SC_rgb_small_odd.dcm"
    out = preprocess_file(_testfile(name), OPTS)
    assert out.colour_converted and out.images.shape == (1, 32, 32)
    with pytest.raises(RejectError) as err:
        preprocess_file(_testfile(name), PreprocessOptions(image_size=32, colour_policy="reject", limits=ANY_SIZE))
    assert err.value.code == "colour_rejected"


def test_rgb_luma_is_bt601() -> None:
    ds = pydicom.dcmread(_testfile("SC_rgb_rle.dcm"))
    rgb = ds.pixel_array.astype(np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    out = preprocess_file(_testfile("SC_rgb_rle.dcm"), PreprocessOptions(image_size=100))
    np.testing.assert_allclose(out.images[0], luma / 255.0 * 2 - 1, atol=1e-5)


def test_crop_or_pad_to_square() -> None:
    path = _testfile("examples_overlay.dcm")  # 300 rows x 484 columns
    padded = preprocess_file(path, PreprocessOptions(image_size=64, geometry="pad"))
    cropped = preprocess_file(path, PreprocessOptions(image_size=64, geometry="crop"))
    assert padded.source_shape == (300, 484)
    # Padding adds black bands above and below; the crop keeps image content edge to edge.
    assert padded.images[0, :10].max() == -1.0 and padded.images[0, -10:].max() == -1.0
    assert cropped.images[0, 20:44, :].std() > 0.05 and not np.allclose(padded.images, cropped.images)


def test_resize_keeps_a_flat_image_flat() -> None:
    for size, value in ((512, 0.3), (100, -0.7), (20, 1.0)):
        out = resize_square(np.full((size, size), value, np.float32), 32)
        assert out.shape == (32, 32)
        np.testing.assert_allclose(out, value, atol=1e-5)


@pytest.mark.parametrize("period, source", [(2, 512), (3, 512), (2, 300)])
def test_resize_does_not_alias_fine_stripes(period: int, source: int) -> None:
    stripes = np.where((np.arange(source) % period) == 0, 1.0, -1.0).astype(np.float32)
    image = np.tile(stripes, (source, 1))
    mean = float(image.mean())
    ours = resize_square(image, 32)
    # Anti-aliased: stripes far above the new Nyquist frequency average out to their mean.
    assert np.abs(ours - mean).max() < 0.1
    # The defect this guards against: plain subsampling turns the same stripes into a strong
    # false pattern (or a false flat image at an extreme value).
    step = source / 32
    naive = image[np.ix_((np.arange(32) * step).astype(int), (np.arange(32) * step).astype(int))]
    assert np.abs(naive - mean).max() > 0.5


def test_corrupt_inputs_are_rejected_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(RejectError) as err:
        preprocess_file(_testfile("MR_truncated.dcm"), OPTS)
    assert err.value.code == "truncated"
    data = Path(_testfile("MR_small_RLE.dcm")).read_bytes()
    cut = tmp_path / "rle_cut.dcm"
    cut.write_bytes(data[: len(data) - 3000])  # a cut-off compressed file
    with pytest.raises(RejectError) as err:
        preprocess_file(str(cut), OPTS)
    assert err.value.code == "truncated"  # pydicom alone would return an empty dataset here
    with pytest.raises(RejectError) as err:
        preprocess_file(b"definitely not a DICOM file" * 10, OPTS)
    assert err.value.code == "not_dicom"
    with pytest.raises(RejectError) as err:
        preprocess_file(_testfile("rtplan.dcm"), OPTS)
    assert err.value.code == "no_pixel_data"
