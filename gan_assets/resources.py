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
    lr_g: float = Field(default=_D.lr_g, description="Adam learning rate of the generator; the retrain loop lowers it first.")
    lr_d: float = Field(default=_D.lr_d, description="Adam learning rate of the discriminator; the retrain loop lowers it first.")
    beta1: float = Field(default=_D.beta1, description="Adam beta1 (0.5 as in the reference DCGAN).")
    beta2: float = Field(default=_D.beta2, description="Adam beta2.")
    loss: str = Field(default=_D.loss, description="Adversarial loss: 'bce' (reference DCGAN) or 'hinge'.")
    spectral_norm: bool = Field(default=_D.spectral_norm, description="Spectral normalisation on the discriminator's layers (stabilises small datasets).")
    diffaugment: str = Field(default=_D.diffaugment, description="DiffAugment policies applied to real and fake alike: '', 'translation', 'cutout' or 'translation,cutout'.")
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
# ---- end ingest ---------------------------------------------------------------------------

# ---- evaluation (issue: evaluation) -------------------------------------------------------
# ---- end evaluation -----------------------------------------------------------------------

# ---- sinks: CloudWatch, notifications (issue: samples/report) ------------------------------
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
    """Slack incoming-webhook compatible notifier; off when the webhook URL is unset."""

    webhook_url: str | None = Field(
        default=None,
        description="Webhook URL (set through an env var, e.g. GAN_ASSETS_WEBHOOK_URL); None = off.",
    )
    ui_base_url: str = Field(default="http://127.0.0.1:3000", description="Base URL of the Dagster UI, for run links.")
    timeout_seconds: float = Field(default=5.0, description="HTTP timeout; a slow notifier never stalls the pipeline.")

    def notify(self, text: str) -> bool:
        """Send one message; never raises (a failure is logged and returns False)."""
        if not self.webhook_url:
            return False
        from gan_assets.report.sinks import post_webhook

        return post_webhook(self.webhook_url, text, timeout_seconds=self.timeout_seconds)

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_base_url.rstrip('/')}/runs/{run_id}"
# ---- end sinks ------------------------------------------------------------------------------
