"""Dagster resources: training settings, data sources, feature extractor, optional sinks.

Each resource is a thin, typed shell; the behaviour lives in the plain-Python cores.
Sections are owned by the stage that uses them.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from gan_assets.model.config import DEFAULTS, TrainConfig

_D = DEFAULTS


class GanConfig(dg.ConfigurableResource):
    """Every training, evaluation and generation hyperparameter; run config overrides these."""

    image_size: int = Field(default=_D.image_size, description="Square image side in pixels: 32, 64, 128 or 256 (one network block per doubling).")
    latent_dim: int = Field(default=_D.latent_dim, description="Size of the generator's input noise vector (nz).")
    generator_width: int = Field(default=_D.generator_width, description="Generator feature-map width (ngf).")
    discriminator_width: int = Field(default=_D.discriminator_width, description="Discriminator feature-map width (ndf).")
    batch_size: int = Field(default=_D.batch_size, description="Images per training step (global batch when num_workers > 1).")
    steps: int = Field(default=_D.steps, description="Training budget in optimiser steps.")
    lr_g: float = Field(default=_D.lr_g, description="Adam learning rate of the generator (the reference DCGAN's 2e-4).")
    lr_d: float = Field(default=_D.lr_d, description="Adam learning rate of the discriminator (the reference DCGAN's 2e-4).")
    beta1: float = Field(default=_D.beta1, description="Adam beta1 (0.5 as in the reference DCGAN).")
    beta2: float = Field(default=_D.beta2, description="Adam beta2.")
    loss: str = Field(default=_D.loss, description="Adversarial loss: 'bce' (reference DCGAN) or 'hinge'.")
    spectral_norm: bool = Field(default=_D.spectral_norm, description="Spectral normalisation on the discriminator's layers (a stabiliser; off by default: with the default budget it measured worse, see benchmarks/bench_ladder.py).")
    diffaugment: str = Field(default=_D.diffaugment, description="DiffAugment policies applied to real and fake alike: '', 'translation', 'cutout' or 'translation,cutout' (the default: a month is a few hundred images, and augmentation keeps D from memorizing them).")
    ema: bool = Field(default=_D.ema, description="Keep an exponential moving average of the generator; evaluation and generation use it.")
    ema_decay: float = Field(default=_D.ema_decay, description="Decay of the generator EMA.")
    seed: int = Field(default=_D.seed, description="Seed for weights, noise and batches: a CPU run is reproducible.")
    device: str = Field(default=_D.device, description="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.")
    log_every: int = Field(default=_D.log_every, description="Log progress (losses, img/s, ETA) every N steps.")
    num_workers: int = Field(default=_D.num_workers, description="Data-parallel training processes (torch.distributed); 1 trains in-process.")
    fid_threshold: float = Field(default=_D.fid_threshold, description="Absolute FID a model must reach (threshold_mode='absolute').")
    threshold_mode: str = Field(default=_D.threshold_mode, description="'absolute' (fid <= fid_threshold) or 'relative' (fid <= relative_factor x real-vs-real floor).")
    relative_factor: float = Field(default=_D.relative_factor, description="Multiple of the real-vs-real FID floor allowed in 'relative' mode.")
    max_attempts: int = Field(default=_D.max_attempts, description="Training attempts per month before the month is rejected.")
    fid_num_fake: int = Field(default=_D.fid_num_fake, description="Generated images scored by FID; 0 = as many as the month's real images.")
    memorization_threshold: float = Field(default=_D.memorization_threshold, description="Normalised feature distance under which a sample counts as a near-copy of a training image.")
    num_samples: int = Field(default=_D.num_samples, description="Synthetic images written by generated_samples.")
    sample_seed: int = Field(default=_D.sample_seed, description="Seed of the noise behind generated_samples (recorded in metadata).")
    write_sample_dicoms: bool = Field(default=_D.write_sample_dicoms, description="Also write each synthetic image as a Secondary Capture DICOM marked SYNTHETIC.")

    def to_train_config(self) -> TrainConfig:
        """The validated plain config the cores use (raises ConfigError naming a bad field)."""
        return TrainConfig.from_dict(self.model_dump())

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.to_train_config()


# ---- ingest (issue: DICOM ingest) -------------------------------------------------------
from typing import TYPE_CHECKING  # noqa: E402 - kept inside the ingest section

if TYPE_CHECKING:
    from gan_assets.dicom.landing_zone import SourceSpec
    from gan_assets.dicom.preprocess import PreprocessOptions
    from gan_assets.dicom.scan import ScanOptions


class DicomSource(dg.ConfigurableResource):
    """The DICOM landing zone (a local folder or an s3:// prefix) and how files map to months."""

    location: str = Field(description="Landing zone: a local folder, or s3://bucket/prefix (credentials from the standard AWS chain).")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint for MinIO or a local server; None = AWS.")
    region_name: str | None = Field(default=None, description="AWS region of the bucket; None = the AWS default chain.")
    date_tags: list[str] = Field(
        default=["StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"],
        description="A file belongs to the month of the first valid date among these tags. A file with none is "
        "rejected ('no_usable_date') and listed under the month it arrived (file mtime / S3 LastModified).",
    )

    def source_spec(self) -> SourceSpec:
        from gan_assets.dicom.landing_zone import SourceSpec

        return SourceSpec(location=self.location, endpoint_url=self.endpoint_url, region_name=self.region_name)


class PreprocessConfig(dg.ConfigurableResource):
    """How DICOM pixels become training images (the target size comes from gan_config.image_size)."""

    voi_policy: str = Field(default="header", description="VOI window: 'header' (the file's WindowCenter/Width; robust percentiles when absent), 'preset' (voi_preset, CT only; other modalities use their header window) or 'percentile'.")
    voi_preset: str = Field(default="mediastinum", description="Named CT window for voi_policy='preset': lung, mediastinum, soft_tissue, abdomen, liver, brain or bone.")
    percentile_low: float = Field(default=0.5, description="Lower percentile of the robust window (voi_policy='percentile' or fallback).")
    percentile_high: float = Field(default=99.5, description="Upper percentile of the robust window.")
    multiframe_policy: str = Field(default="middle", description="Multi-frame files: 'middle' (one image, the middle frame; only it is decoded), 'first', or 'all' (every frame becomes an image, ids get a -fNNNN suffix).")
    colour_policy: str = Field(default="grayscale", description="RGB/YBR/palette images: 'grayscale' (ITU-R BT.601 luma, counted in metadata) or 'reject' (a rejected manifest row).")
    geometry: str = Field(default="pad", description="Make images square before resizing: 'pad' (centre, black borders; nothing is lost) or 'crop' (centre crop of the longer side).")
    exclude_burned_in: bool = Field(default=True, description="Reject files with BurnedInAnnotation=YES: their pixels may show names or IDs.")
    allowed_modalities: list[str] = Field(default=[], description="Only these modalities (e.g. ['CT']); empty = all.")
    workers: int = Field(default=0, description="Processes that read and decode files; 0 = one per available CPU. Small months run in-process.")
    tune_malloc: bool = Field(default=True, description="Raise glibc's mmap/trim thresholds in ingest processes (decode measured 1.2-3.5x faster).")
    preview_images: int = Field(default=16, description="Preprocessed images shown in the materialization's preview grid.")

    def options(self, image_size: int) -> PreprocessOptions:
        """The validated plain options the preprocessing core uses (ValueError names a bad field)."""
        from gan_assets.dicom.preprocess import PreprocessOptions

        return PreprocessOptions(
            image_size=image_size, voi_policy=self.voi_policy, voi_preset=self.voi_preset,
            percentile_low=self.percentile_low, percentile_high=self.percentile_high,
            multiframe_policy=self.multiframe_policy, colour_policy=self.colour_policy, geometry=self.geometry,
        )

    def scan_options(self, date_tags: list[str]) -> ScanOptions:
        from gan_assets.dicom.scan import ScanOptions

        return ScanOptions(date_tags=tuple(date_tags), exclude_burned_in=self.exclude_burned_in,
                           allowed_modalities=tuple(m.upper() for m in self.allowed_modalities),
                           colour_policy=self.colour_policy)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.options(64)
# ---- end ingest ---------------------------------------------------------------------------

# ---- evaluation (issue: evaluation) -------------------------------------------------------
import typing as _typing  # noqa: E402  (section-local: the extractor module imports torch)

if _typing.TYPE_CHECKING:
    from gan_assets.metrics.extractors import FeatureExtractor


class FidExtractor(dg.ConfigurableResource):
    """The feature network behind FID/KID: an offline seeded random conv net, or a TorchScript file."""

    kind: str = Field(default="random_conv", description="'random_conv' (offline default: fixed, seeded random-weight conv net at native resolution; no download) or 'torchscript' (a feature network file, e.g. the Inception net published FIDs use).")
    torchscript_path: str = Field(default="", description="Local path of the TorchScript feature network (kind='torchscript'); downloaded once by you, never at run time.")
    input_size: int = Field(default=0, description="Side in pixels the network is fed: 0 = native image size (random_conv); e.g. 299 for Inception (torchscript).")
    resize_filter: str = Field(default="bilinear", description="Resize filter when input_size differs from the images: 'bilinear', 'bicubic', 'nearest' or 'area' (torch interpolate).")
    input_range: str = Field(default="0..255", description="Value range the TorchScript network expects: '-1..1', '0..1' or '0..255' (random_conv always sees -1..1).")
    feature_dim: int = Field(default=512, description="Feature dimension of the random conv net (multiple of 8); months with fewer images are flagged small_sample.")
    seed: int = Field(default=0, description="Seed of the random conv net's weights: same seed, same weights, comparable scores.")
    batch_size: int = Field(default=256, description="Images per forward pass of the feature network.")
    device: str = Field(default="cpu", description="'cpu', 'cuda', 'cuda:N' or 'auto' for feature extraction.")
    kid_subsets: int = Field(default=100, description="Random subsets averaged for KID mean/std.")
    kid_subset_size: int = Field(default=1000, description="Images per KID subset (capped at the smaller set's size).")

    def build(self) -> "FeatureExtractor":
        """The plain-Python extractor this configuration describes (raises ExtractorError naming a bad field)."""
        from gan_assets.metrics.extractors import ExtractorError, RandomConvExtractor, TorchScriptExtractor

        if self.kid_subsets < 1 or self.kid_subset_size < 2:
            raise ExtractorError("fid_extractor.kid_subsets must be >= 1 and kid_subset_size >= 2")
        if self.kind == "random_conv":
            return RandomConvExtractor(
                feature_dim=self.feature_dim, seed=self.seed, batch_size=self.batch_size,
                device=self.device, input_size=self.input_size, resize_filter=self.resize_filter,
            )
        if self.kind == "torchscript":
            return TorchScriptExtractor(
                path=self.torchscript_path, input_size=self.input_size or 299, resize_filter=self.resize_filter,
                input_range=self.input_range, batch_size=self.batch_size, device=self.device,
            )
        raise ExtractorError(f"fid_extractor.kind={self.kind!r} is invalid: choose 'random_conv' or 'torchscript'")

# ---- end evaluation -----------------------------------------------------------------------

# ---- sinks: CloudWatch, notifications (issue: samples/report) ------------------------------
WEBHOOK_URL_ENV = "GAN_ASSETS_WEBHOOK_URL"


class CloudWatchMetrics(dg.ConfigurableResource):
    """Optional CloudWatch sink for FIDScore and KID (off unless enabled)."""

    enabled: bool = Field(default=False, description="Put FIDScore/KID metrics to CloudWatch.")
    namespace: str = Field(default="GanAssets", description="CloudWatch metric namespace.")
    region_name: str = Field(default="us-east-1", description="AWS region of the CloudWatch endpoint.")
    endpoint_url: str | None = Field(default=None, description="Custom endpoint (e.g. a local test server); None = AWS.")

    def put_fid_metrics(self, partition_key: str, model: str, fid: float, kid: float) -> bool:
        """Put FIDScore and KID for one month and model; returns False (logged) on any failure."""
        if not self.enabled:
            return False
        from gan_assets.report.sinks import put_fid_metrics

        return put_fid_metrics(
            namespace=self.namespace, region_name=self.region_name, endpoint_url=self.endpoint_url,
            partition_key=partition_key, model=model, fid=fid, kid=kid,
        )


class Notifier(dg.ConfigurableResource):
    """Slack incoming-webhook compatible notifier; off when no webhook URL is set."""

    webhook_url: str | None = Field(
        default=None,
        description=f"Webhook URL; None = read the env var named by webhook_url_env ({WEBHOOK_URL_ENV}); "
        "off when both are unset.",
    )
    webhook_url_env: str = Field(
        default=WEBHOOK_URL_ENV,
        description="Env var read at send time when webhook_url is None (keeps the secret URL out of run config).",
    )
    ui_base_url: str = Field(default="http://127.0.0.1:3000", description="Base URL of the Dagster UI, for run links.")
    timeout_seconds: float = Field(default=5.0, description="HTTP timeout; a slow notifier never stalls the pipeline.")

    def resolved_webhook_url(self) -> str | None:
        """The URL messages go to, or None when notifications are off."""
        import os

        return self.webhook_url or os.environ.get(self.webhook_url_env) or None

    def notify(self, text: str) -> bool:
        """Send one message; never raises (a failure is logged and returns False)."""
        url = self.resolved_webhook_url()
        if not url:
            return False
        from gan_assets.report.sinks import post_webhook

        return post_webhook(url, text, timeout_seconds=self.timeout_seconds)

    def run_url(self, run_id: str) -> str:
        """Link to one run in the Dagster UI."""
        return f"{self.ui_base_url.rstrip('/')}/runs/{run_id}"
# ---- end sinks ------------------------------------------------------------------------------
