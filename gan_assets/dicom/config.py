"""How DICOM files become training images: one validated schema for the ``preprocess_config`` resource.

A frozen pydantic model (choices as ``Literal``, numbers bounded, each bound's reason in its
description) that the Dagster resource inherits; it builds the plain objects the ingest cores
take: :class:`~gan_assets.dicom.preprocess.PreprocessOptions` (per-file decoding),
:class:`~gan_assets.dicom.limits.IngestLimits` and :class:`~gan_assets.dicom.scan.ScanOptions`.
Importing it loads neither pydicom nor numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from gan_assets.dicom.limits import IngestLimits
    from gan_assets.dicom.preprocess import PreprocessOptions
    from gan_assets.dicom.scan import ScanOptions

VoiPolicy = Literal["header", "preset", "percentile"]
VoiPreset = Literal["lung", "mediastinum", "soft_tissue", "abdomen", "liver", "brain", "bone"]
MultiframePolicy = Literal["middle", "first", "all"]
ColourPolicy = Literal["grayscale", "reject"]
Geometry = Literal["crop", "pad"]
MissingBurnedInPolicy = Literal["allow", "reject"]

GIB = 1 << 30


class PreprocessSettings(BaseModel):
    """Decoding choices and per-file limits of ingest (the target size comes from gan_config.image_size)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    voi_policy: VoiPolicy = Field(default="header", description="VOI window: 'header' (the file's WindowCenter/Width; robust percentiles when absent), 'preset' (voi_preset, CT only; other modalities use their header window) or 'percentile'.")
    voi_preset: VoiPreset = Field(default="mediastinum", description="Named CT window for voi_policy='preset'.")
    percentile_low: float = Field(default=0.5, ge=0.0, lt=100.0, description="Lower percentile of the robust window (voi_policy='percentile' or fallback); below percentile_high.")
    percentile_high: float = Field(default=99.5, gt=0.0, le=100.0, description="Upper percentile of the robust window; at most 100.")
    multiframe_policy: MultiframePolicy = Field(default="middle", description="Multi-frame files: 'middle' (one image, the middle frame; only it is decoded), 'first', or 'all' (every frame becomes an image, ids get a -fNNNN suffix).")
    colour_policy: ColourPolicy = Field(default="grayscale", description="RGB/YBR/palette images: 'grayscale' (ITU-R BT.601 luma, counted in metadata) or 'reject' (a rejected manifest row).")
    geometry: Geometry = Field(default="pad", description="Make images square before resizing: 'pad' (centre, black borders; nothing is lost) or 'crop' (centre crop of the longer side).")
    exclude_burned_in: bool = Field(default=True, description="Reject files whose BurnedInAnnotation is not exactly NO (YES, YES\\NO, any other value): their pixels may show names or IDs. Checked at scan and again at decode.")
    missing_burned_in: MissingBurnedInPolicy = Field(default="allow", description="Files without BurnedInAnnotation: 'allow' (default: the attribute is optional in most image IODs, so real CT/MR archives rarely carry it) or 'reject' (for sources such as ultrasound or secondary capture, where text in the pixels is common).")
    max_file_bytes: int = Field(default=GIB, ge=1, le=64 * GIB, description="Larger files are rejected ('too_large') before they are read. At most 64 GiB: a worker holds a whole file in memory.")
    max_decoded_bytes: int = Field(default=GIB, ge=1, le=64 * GIB, description="Declared Rows x Columns x frames x samples x bytes above this is rejected ('too_large') before decoding; also bounds deflate inflation. At most 64 GiB, for the same reason.")
    max_pixels_per_frame: int = Field(default=1 << 26, ge=1, le=1 << 32, description="Largest Rows x Columns (and, with geometry='pad', the padded square) accepted ('too_large' above). At most 2**32: a 65536-pixel square, past any radiograph.")
    min_side: int = Field(default=16, ge=1, le=4096, description="Images with a side below this are rejected ('too_small') instead of being upsampled.")
    max_frames: int = Field(default=10_000, ge=1, le=1_000_000, description="Files declaring more frames are rejected ('too_large'); bounds the per-frame loops.")
    decode_seconds: float = Field(default=60.0, gt=0.0, le=3600.0, allow_inf_nan=False, description="Per-file time limit; a worker past it is replaced and the file gets 'timeout'. At most an hour: an endless limit lets one crafted file stall the month.")
    allowed_modalities: list[str] = Field(default=[], description="Only these modalities (e.g. ['CT']); empty = all.")
    workers: int = Field(default=0, ge=0, le=256, description="Processes that read and decode files; 0 = one per available CPU. Small months run in-process. At most 256: each holds a decoded file in memory.")
    tune_malloc: bool = Field(default=True, description="Raise glibc's mmap/trim thresholds in ingest processes (decode measured faster; see benchmarks/bench_ingest.py).")
    preview_images: int = Field(default=16, ge=0, le=256, description="Preprocessed images shown in the materialization's preview grid (at most 256: the grid is embedded in the event).")

    @model_validator(mode="after")
    def _percentiles_in_order(self) -> PreprocessSettings:
        if not self.percentile_low < self.percentile_high:
            raise ValueError(f"percentile_low={self.percentile_low} must be below percentile_high={self.percentile_high}")
        return self

    def ingest_limits(self) -> IngestLimits:
        """The per-file limits (checked on the header, before any pixel is decoded)."""
        from gan_assets.dicom.limits import IngestLimits

        return IngestLimits(max_file_bytes=self.max_file_bytes, max_decoded_bytes=self.max_decoded_bytes,
                            max_pixels_per_frame=self.max_pixels_per_frame, min_side=self.min_side,
                            max_frames=self.max_frames, decode_seconds=self.decode_seconds)

    def options(self, image_size: int) -> PreprocessOptions:
        """The plain options the preprocessing core uses, for images of ``image_size`` pixels."""
        from gan_assets.dicom.preprocess import PreprocessOptions

        return PreprocessOptions(
            image_size=image_size, voi_policy=self.voi_policy, voi_preset=self.voi_preset,
            percentile_low=self.percentile_low, percentile_high=self.percentile_high,
            multiframe_policy=self.multiframe_policy, colour_policy=self.colour_policy, geometry=self.geometry,
            exclude_burned_in=self.exclude_burned_in, missing_burned_in=self.missing_burned_in,
            limits=self.ingest_limits(),
        )

    def scan_options(self, date_tags: list[str]) -> ScanOptions:
        """What makes a file acceptable at header level (the landing-zone index and the manifest)."""
        from gan_assets.dicom.scan import ScanOptions

        return ScanOptions(date_tags=tuple(date_tags), exclude_burned_in=self.exclude_burned_in,
                           allowed_modalities=tuple(m.upper() for m in self.allowed_modalities),
                           colour_policy=self.colour_policy, missing_burned_in=self.missing_burned_in,
                           geometry=self.geometry, limits=self.ingest_limits())
