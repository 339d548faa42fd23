"""Dagster resources: training settings, data sources, feature extractor, optional sinks.

Each resource is a thin, typed shell; the behaviour lives in the plain-Python cores.
Sections are owned by the stage that uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from gan_assets.io_managers import ReadsS3
from gan_assets.model.config import DEFAULTS, TrainConfig

# The cores below import pydicom and torch; the resources name their types only.
if TYPE_CHECKING:
    from gan_assets.dicom.landing_zone import SourceSpec
    from gan_assets.dicom.limits import IngestLimits
    from gan_assets.dicom.preprocess import PreprocessOptions
    from gan_assets.dicom.scan import ScanOptions
    from gan_assets.metrics.domain_encoder import DomainEncoderSettings
    from gan_assets.metrics.extractors import FeatureExtractor
    from gan_assets.storage import TensorBundle

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
    fid_threshold: float = Field(default=_D.fid_threshold, description="Absolute FID a model must reach (threshold_rule='absolute'); meaningful only for one extractor on one kind of data.")
    threshold_mode: str = Field(default=_D.threshold_mode, description="Superseded by threshold_rule and ignored; kept so stored configs still load.")
    relative_factor: float = Field(default=_D.relative_factor, description="Multiple of the real-vs-real FID floor allowed (threshold_rule='relative_floor').")
    max_attempts: int = Field(default=_D.max_attempts, description="Training attempts per month before the month is rejected.")
    fid_num_fake: int = Field(default=_D.fid_num_fake, description="Superseded and ignored: the generator is scored with as many samples as each control (the held-out half of the month), so all candidates carry the same sample-size bias.")
    memorization_threshold: float = Field(default=_D.memorization_threshold, description="Normalised feature distance under which a sample counts as a near-copy of a training image.")
    threshold_rule: Literal["controls", "absolute", "relative_floor"] = Field(default=_D.threshold_rule, description="How the FID threshold is set: 'controls' (default: geometric mean of the held-out real images' FID and the best negative control's FID, every month), 'absolute' (fid_threshold) or 'relative_floor' (relative_factor x the real-vs-real floor).")
    min_separation: float = Field(default=_D.min_separation, ge=1.0, le=100.0, description="The gate is discriminative only if the best negative control's FID is at least this many times the held-out real images' FID (and every negative fails, the positive passes); otherwise the month is not_discriminative.")
    max_near_copy_fraction: float = Field(default=_D.max_near_copy_fraction, ge=0.0, le=1.0, description="Largest fraction of scored samples that may be near-copies of training images; above it the month fails as 'memorized' (a privacy failure).")
    num_samples: int = Field(default=_D.num_samples, description="Synthetic images written by generated_samples.")
    sample_seed: int = Field(default=_D.sample_seed, description="Seed of the noise behind generated_samples (recorded in metadata).")
    write_sample_dicoms: bool = Field(default=_D.write_sample_dicoms, description="Also write each synthetic image as a Secondary Capture DICOM marked SYNTHETIC.")

    def to_train_config(self) -> TrainConfig:
        """The validated plain config the cores use (raises ConfigError naming a bad field)."""
        return TrainConfig.from_dict(self.model_dump())

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.to_train_config()


class DicomSource(ReadsS3):
    """The DICOM landing zone (a local folder or an s3:// prefix) and how files map to months."""

    location: str = Field(description="Landing zone: a local folder, or s3://bucket/prefix (reached with the s3 resource's settings).")
    date_tags: list[str] = Field(
        default=["StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"],
        description="A file belongs to the month of the first valid date among these tags. A file with none is "
        "rejected ('no_usable_date') and listed under the month it arrived (file mtime / S3 LastModified).",
    )

    def source_spec(self) -> SourceSpec:
        from gan_assets.dicom.landing_zone import SourceSpec

        return SourceSpec(location=self.location, s3=self.s3_settings())


LANDING_ZONE_ENV = "GAN_ASSETS_LANDING_ZONE"


def s3_from_env() -> S3Resource:
    """The deployment's one S3Resource (artifact storage and landing zone): ``GAN_ASSETS_S3_ENDPOINT_URL``
    and ``AWS_REGION``; credentials from the standard AWS chain."""
    import os

    return S3Resource(endpoint_url=os.environ.get("GAN_ASSETS_S3_ENDPOINT_URL") or None,
                      region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None)


def dicom_source_from_env(location: str | None = None, s3: S3Resource | None = None) -> DicomSource:
    """The landing zone the deployment's environment names (the demo writes to the same place).

    ``GAN_ASSETS_LANDING_ZONE`` (default ./data/landing_zone), reached with the artifact
    storage's S3 settings (``s3``, else :func:`s3_from_env`) for s3:// zones.
    """
    import os

    return DicomSource(
        location=location or os.environ.get(LANDING_ZONE_ENV) or os.path.abspath("data/landing_zone"),
        s3=s3 or s3_from_env(),
    )


class PreprocessConfig(dg.ConfigurableResource):
    """How DICOM pixels become training images (the target size comes from gan_config.image_size)."""

    voi_policy: str = Field(default="header", description="VOI window: 'header' (the file's WindowCenter/Width; robust percentiles when absent), 'preset' (voi_preset, CT only; other modalities use their header window) or 'percentile'.")
    voi_preset: str = Field(default="mediastinum", description="Named CT window for voi_policy='preset': lung, mediastinum, soft_tissue, abdomen, liver, brain or bone.")
    percentile_low: float = Field(default=0.5, description="Lower percentile of the robust window (voi_policy='percentile' or fallback).")
    percentile_high: float = Field(default=99.5, description="Upper percentile of the robust window.")
    multiframe_policy: str = Field(default="middle", description="Multi-frame files: 'middle' (one image, the middle frame; only it is decoded), 'first', or 'all' (every frame becomes an image, ids get a -fNNNN suffix).")
    colour_policy: str = Field(default="grayscale", description="RGB/YBR/palette images: 'grayscale' (ITU-R BT.601 luma, counted in metadata) or 'reject' (a rejected manifest row).")
    geometry: str = Field(default="pad", description="Make images square before resizing: 'pad' (centre, black borders; nothing is lost) or 'crop' (centre crop of the longer side).")
    exclude_burned_in: bool = Field(default=True, description="Reject files whose BurnedInAnnotation is not exactly NO (YES, YES\\NO, any other value): their pixels may show names or IDs. Checked at scan and again at decode.")
    missing_burned_in: str = Field(default="allow", description="Files without BurnedInAnnotation: 'allow' (default: the attribute is optional in most image IODs, so real CT/MR archives rarely carry it) or 'reject' (for sources such as ultrasound or secondary capture, where text in the pixels is common).")
    max_file_bytes: int = Field(default=1 << 30, description="Larger files are rejected ('too_large') before they are read.")
    max_decoded_bytes: int = Field(default=1 << 30, description="Declared Rows x Columns x frames x samples x bytes above this is rejected ('too_large') before decoding; also bounds deflate inflation.")
    max_pixels_per_frame: int = Field(default=1 << 26, description="Largest Rows x Columns (and, with geometry='pad', the padded square) accepted ('too_large' above).")
    min_side: int = Field(default=16, description="Images with a side below this are rejected ('too_small') instead of being upsampled.")
    max_frames: int = Field(default=10_000, description="Files declaring more frames are rejected ('too_large').")
    decode_seconds: float = Field(default=60.0, description="Per-file time limit; a worker past it is replaced and the file gets 'timeout'.")
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
            exclude_burned_in=self.exclude_burned_in, missing_burned_in=self.missing_burned_in, limits=self.ingest_limits(),
        )

    def ingest_limits(self) -> IngestLimits:
        """The per-file limits (checked on the header, before any pixel is decoded)."""
        from gan_assets.dicom.limits import IngestLimits

        return IngestLimits(max_file_bytes=self.max_file_bytes, max_decoded_bytes=self.max_decoded_bytes,
                            max_pixels_per_frame=self.max_pixels_per_frame, min_side=self.min_side,
                            max_frames=self.max_frames, decode_seconds=self.decode_seconds)

    def scan_options(self, date_tags: list[str]) -> ScanOptions:
        from gan_assets.dicom.scan import ScanOptions

        return ScanOptions(date_tags=tuple(date_tags), exclude_burned_in=self.exclude_burned_in,
                           allowed_modalities=tuple(m.upper() for m in self.allowed_modalities),
                           colour_policy=self.colour_policy, missing_burned_in=self.missing_burned_in,
                           geometry=self.geometry, limits=self.ingest_limits())

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.options(64)

class FidExtractor(dg.ConfigurableResource):
    """The feature network behind FID/KID: an offline seeded random conv net, a domain encoder trained on the archive, or a TorchScript file."""

    kind: str = Field(default="domain", description="'domain' (default: a small encoder trained self-supervised on the archive's earlier real images by the fid_feature_extractor asset: it learns orientation and polarity, so upside-down, inverted, blurred or noise images score far from real ones; its weights hash is in every score's fingerprint; benchmarks/bench_gate.py measures why it is the default), 'random_conv' (a fixed, seeded random-weight conv net at native resolution; no training, but blind to orientation and polarity) or 'torchscript' (a feature network file, e.g. the Inception net published FIDs use).")
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
    domain_steps: int = Field(default=300, description="Training steps of the domain encoder (kind='domain'); its training time grows in proportion.")
    domain_max_side: int = Field(default=64, description="Images larger than this are area-downsampled to it for the domain encoder (training and features); each doubling multiplies the training time several-fold.")
    domain_seed: int = Field(default=0, description="Seed of the domain encoder's training: same seed and images, same weights.")

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
        if self.kind == "domain":
            raise ExtractorError(
                "fid_extractor.kind='domain' needs the trained weights: build it with "
                "build_domain(<the fid_feature_extractor bundle>) in an asset that takes that input"
            )
        raise ExtractorError(f"fid_extractor.kind={self.kind!r} is invalid: choose 'random_conv', 'domain' or 'torchscript'")

    def build_for(self, weights_bundle: "TensorBundle | None") -> "FeatureExtractor":
        """The extractor a score uses: from the fid_feature_extractor bundle when kind='domain', else build()."""
        if self.kind == "domain":
            if weights_bundle is None:
                from gan_assets.metrics.extractors import ExtractorError

                raise ExtractorError("fid_extractor.kind='domain' but no fid_feature_extractor bundle was given; "
                                     "materialize fid_feature_extractor for this month first")
            return self.build_domain(weights_bundle)
        return self.build()

    def domain_settings(self) -> "DomainEncoderSettings":
        """How fid_feature_extractor trains the domain encoder (kind='domain')."""
        from gan_assets.metrics.domain_encoder import DomainEncoderSettings

        return DomainEncoderSettings(steps=self.domain_steps, max_side=self.domain_max_side)

    def build_domain(self, weights_bundle: "TensorBundle") -> "FeatureExtractor":
        """The domain extractor from a stored fid_feature_extractor bundle (raises ExtractorError if unusable)."""
        from gan_assets.metrics.domain_encoder import weights_from_tensors
        from gan_assets.metrics.extractors import DomainExtractor, ExtractorError

        if self.kind != "domain":
            raise ExtractorError(f"fid_extractor.kind={self.kind!r}: build_domain is only for kind='domain'; use build()")
        try:
            weights = weights_from_tensors(weights_bundle.tensors, weights_bundle.attrs)
        except ValueError as err:
            raise ExtractorError(str(err)) from err
        return DomainExtractor(weights, batch_size=self.batch_size, device=self.device)


WEBHOOK_URL_ENV = "GAN_ASSETS_WEBHOOK_URL"
UI_BASE_URL_ENV = "GAN_ASSETS_UI_BASE_URL"


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
    ui_base_url: str | None = Field(
        default=None,
        description=f"Base URL of the Dagster UI for the links in messages (runs, assets); None = the env var "
        f"{UI_BASE_URL_ENV}, else http://127.0.0.1:3000 (what `make dev` serves).",
    )
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

    def base_url(self) -> str:
        import os

        return (self.ui_base_url or os.environ.get(UI_BASE_URL_ENV) or "http://127.0.0.1:3000").rstrip("/")

    def run_url(self, run_id: str) -> str:
        """Link to one run in the Dagster UI."""
        return f"{self.base_url()}/runs/{run_id}"

    def asset_url(self, asset: str, partition: str | None = None) -> str:
        """Link to an asset's page (one partition of it) in the Dagster UI."""
        return f"{self.base_url()}/assets/{asset}" + (f"?partition={partition}" if partition else "")
