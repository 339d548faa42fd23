"""Dagster resources: training settings, data sources, feature extractor, optional sinks.

Each resource is a thin, typed shell; the behaviour lives in the plain-Python cores.
Sections are owned by the stage that uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from gan_assets.dicom.config import PreprocessSettings
from gan_assets.io_managers import ReadsS3
from gan_assets.model.config import DEVICE_PATTERN, MAX_SEED, EvaluationConfig, GenerationConfig, TrainConfig

# The cores below import pydicom and torch; the resources name their types only.
if TYPE_CHECKING:
    from gan_assets.dicom.landing_zone import SourceSpec
    from gan_assets.metrics.domain_encoder import DomainEncoderSettings
    from gan_assets.metrics.extractors import FeatureExtractor
    from gan_assets.model.mutation import MutationPolicy
    from gan_assets.storage import TensorBundle


class GanConfig(dg.ConfigurableResource, TrainConfig):
    """Training hyperparameters: what the retrain sensor changes between attempts (fields: TrainConfig)."""

    def to_train_config(self) -> TrainConfig:
        """The plain validated config the training core uses."""
        return TrainConfig.model_validate(self.model_dump(include=set(TrainConfig.model_fields)))


class EvaluationBar(dg.ConfigurableResource, EvaluationConfig):
    """The bar fid_score judges each attempt by (fields: EvaluationConfig); the retrain sensor never sets it."""

    def to_evaluation_config(self) -> EvaluationConfig:
        """The plain validated bar the evaluation core uses."""
        return EvaluationConfig.model_validate(self.model_dump(include=set(EvaluationConfig.model_fields)))


class GenerationSettings(dg.ConfigurableResource, GenerationConfig):
    """What generated_samples writes (fields: GenerationConfig)."""

    def to_generation_config(self) -> GenerationConfig:
        """The plain validated settings of generated_samples."""
        return GenerationConfig.model_validate(self.model_dump(include=set(GenerationConfig.model_fields)))


class RetrainPolicy(dg.ConfigurableResource):
    """How the retrain sensor mutates a failed attempt's training config (gan_assets.model.mutation)."""

    mutation_policy: str = Field(default="", description="A JSON list of mutation rules, or the path of a .json file holding one (rule i makes attempt i + 2; e.g. [{\"scale\": {\"lr_g\": 0.5}}]); empty = the default ladder, ordered by measured benefit. Rules change training fields only.")

    def policy(self) -> MutationPolicy:
        """The parsed policy (raises MutationPolicyError naming the bad rule)."""
        from gan_assets.model.mutation import parse_policy

        return parse_policy(self.mutation_policy)


PSEUDONYM_KEY_ENV = "GAN_ASSETS_PSEUDONYM_KEY"


class DicomSource(ReadsS3):
    """The DICOM landing zone (a local folder or an s3:// prefix) and how files map to months."""

    location: str = Field(description="Landing zone: a local folder, or s3://bucket/prefix (reached with the s3 resource's settings).")
    date_tags: list[str] = Field(
        default=["StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"],
        description="A file belongs to the month of the first valid date among these tags. A file with none is "
        "rejected ('no_usable_date') and listed under the month it arrived (file mtime / S3 LastModified).",
    )
    pseudonym_key: str = Field(
        default="",
        description=f"Secret HMAC key behind every pseudonymous id and file reference; give it as an "
        f"environment variable (the deployments read {PSEUDONYM_KEY_ENV}), never as text in run config. "
        "Empty = the documented local default key, for synthetic demo data only. Keep the key: a new one "
        "gives new, unlinkable ids.",
    )

    def key(self) -> bytes:
        """The HMAC key the ingest cores use."""
        from gan_assets.dicom.pseudonym import pseudonym_key

        # Dagster resolves an EnvVar when it initializes the resource for a run or a tick; an
        # instance used outside them still holds the variable's name, which must never be the key.
        secret = self.pseudonym_key
        return pseudonym_key(secret.get_value() or "" if isinstance(secret, dg.EnvVar) else secret)

    def source_spec(self) -> SourceSpec:
        from gan_assets.dicom.landing_zone import SourceSpec

        return SourceSpec(location=self.location, s3=self.s3_settings())


LANDING_ZONE_ENV = "GAN_ASSETS_LANDING_ZONE"


def s3_from_env() -> S3Resource:
    """The deployment's one S3Resource (artifact storage and landing zone): ``GAN_ASSETS_S3_ENDPOINT_URL``
    and ``AWS_REGION``; credentials from the standard AWS chain."""
    import os

    return S3Resource(endpoint_url=os.environ.get("GAN_ASSETS_S3_ENDPOINT_URL") or None,
                      region_name=aws_region_from_env())


def dicom_source_from_env(location: str | None = None, s3: S3Resource | None = None) -> DicomSource:
    """The landing zone the deployment's environment names (the demo writes to the same place).

    ``GAN_ASSETS_LANDING_ZONE`` (default ./data/landing_zone), reached with the artifact
    storage's S3 settings (``s3``, else :func:`s3_from_env`) for s3:// zones, and the pseudonym
    key from ``GAN_ASSETS_PSEUDONYM_KEY`` (as an EnvVar: the secret stays out of the run config
    Dagster stores).
    """
    import os

    return DicomSource(
        location=location or os.environ.get(LANDING_ZONE_ENV) or os.path.abspath("data/landing_zone"),
        s3=s3 or s3_from_env(),
        pseudonym_key=dg.EnvVar(PSEUDONYM_KEY_ENV) if os.environ.get(PSEUDONYM_KEY_ENV) else "",
    )


def training_run_tags_from_env() -> dict[str, str]:
    """GAN_ASSETS_TRAINING_RUN_TAGS: JSON object of extra run tags of the training jobs (e.g. ECS GPU
    tags, deploy/README.md); read when jobs.py defines the jobs."""
    import json
    import os

    raw = os.environ.get("GAN_ASSETS_TRAINING_RUN_TAGS", "").strip()
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"GAN_ASSETS_TRAINING_RUN_TAGS is not valid JSON ({err})") from err
    if not isinstance(tags, dict):
        raise ValueError("GAN_ASSETS_TRAINING_RUN_TAGS must be a JSON object of run tags")
    # Run tags are strings; ECS launcher tags such as ecs/run_task_kwargs hold JSON objects.
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()}


def aws_region_from_env() -> str | None:
    """The deployment's AWS region (``AWS_REGION``, else ``AWS_DEFAULT_REGION``), or None."""
    import os

    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


class PreprocessConfig(dg.ConfigurableResource, PreprocessSettings):
    """How DICOM pixels become training images (fields: PreprocessSettings; the size comes from gan_config.image_size)."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.options(64)


class FidExtractor(dg.ConfigurableResource):
    """The feature network behind FID/KID: an offline seeded random conv net, a domain encoder trained on the archive, or a TorchScript file."""

    kind: Literal["domain", "random_conv", "torchscript"] = Field(default="domain", description="'domain' (default: a small encoder trained self-supervised on the archive's earlier real images by the fid_feature_extractor asset: it learns orientation and polarity, so upside-down, inverted, blurred or noise images score far from real ones; its weights hash is in every score's fingerprint; benchmarks/bench_gate.py measures why it is the default), 'random_conv' (a fixed, seeded random-weight conv net at native resolution; no training, but blind to orientation and polarity) or 'torchscript' (a feature network file, e.g. the Inception net published FIDs use).")
    torchscript_path: str = Field(default="", description="Local path of the TorchScript feature network (kind='torchscript'); downloaded once by you, never at run time.")
    input_size: int = Field(default=0, ge=0, le=1024, description="Side in pixels the network is fed: 0 = native image size (random_conv); e.g. 299 for Inception (torchscript). At most 1024: larger inputs only cost memory.")
    resize_filter: Literal["bilinear", "bicubic", "nearest", "area"] = Field(default="bilinear", description="Resize filter when input_size differs from the images: 'bilinear', 'bicubic', 'nearest' or 'area' (torch interpolate).")
    input_range: Literal["-1..1", "0..1", "0..255"] = Field(default="0..255", description="Value range the TorchScript network expects: '-1..1', '0..1' or '0..255' (random_conv always sees -1..1).")
    feature_dim: int = Field(default=512, ge=8, le=4096, description="Feature dimension of the random conv net (multiple of 8); months with fewer images are flagged small_sample. At most 4096: the covariance behind FID grows with its square.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of the random conv net's weights: same seed, same weights, comparable scores. In [0, 2**32).")
    batch_size: int = Field(default=256, ge=1, le=4096, description="Images per forward pass of the feature network. At most 4096: the whole batch is held in memory at input_size.")
    device: str = Field(default="cpu", pattern=DEVICE_PATTERN, description="'cpu', 'cuda', 'cuda:N' or 'auto' for feature extraction.")
    kid_subsets: int = Field(default=100, ge=1, le=10_000, description="Random subsets averaged for KID mean/std. At most 10,000: KID's cost grows in proportion.")
    kid_subset_size: int = Field(default=1000, ge=2, le=100_000, description="Images per KID subset (capped at the smaller set's size). At least 2: an unbiased MMD needs pairs.")
    domain_steps: int = Field(default=300, ge=1, le=100_000, description="Training steps of the domain encoder (kind='domain'); its training time grows in proportion.")
    domain_max_side: int = Field(default=64, ge=16, le=512, description="Images larger than this are area-downsampled to it for the domain encoder (training and features); each doubling multiplies the training time several-fold, hence at most 512 (and at least 16, the encoder's smallest input).")
    domain_seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of the domain encoder's training: same seed and images, same weights.")

    def build(self) -> "FeatureExtractor":
        """The plain-Python extractor this configuration describes (raises ExtractorError naming a bad field)."""
        from gan_assets.metrics.extractors import ExtractorError, RandomConvExtractor, TorchScriptExtractor

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
    region_name: str = Field(default="us-east-1", description="AWS region the metrics go to (the deployments set it from AWS_REGION / AWS_DEFAULT_REGION).")
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
        description=f"Webhook URL (a secret: give it as an environment variable; the deployments read "
        f"{WEBHOOK_URL_ENV}); None = notifications off.",
    )
    ui_base_url: str | None = Field(
        default=None,
        description=f"Base URL of the Dagster UI for the links in messages (runs, assets); None = "
        f"http://127.0.0.1:3000 (what `make dev` serves). The deployments read {UI_BASE_URL_ENV}.",
    )
    timeout_seconds: float = Field(default=5.0, description="HTTP timeout; a slow notifier never stalls the pipeline.")

    def resolved_webhook_url(self) -> str | None:
        """The URL messages go to, or None when notifications are off."""
        # Resolved by Dagster when it initializes the resource; an instance used outside a run
        # or a tick still holds the EnvVar (the variable's name).
        url = self.webhook_url
        return (url.get_value() if isinstance(url, dg.EnvVar) else url) or None

    def notify(self, text: str) -> bool:
        """Send one message; never raises (a failure is logged and returns False)."""
        url = self.resolved_webhook_url()
        if not url:
            return False
        from gan_assets.report.sinks import post_webhook

        return post_webhook(url, text, timeout_seconds=self.timeout_seconds)

    def base_url(self) -> str:
        return (self.ui_base_url or "http://127.0.0.1:3000").rstrip("/")

    def run_url(self, run_id: str) -> str:
        """Link to one run in the Dagster UI."""
        return f"{self.base_url()}/runs/{run_id}"

    def asset_url(self, asset: str, partition: str | None = None) -> str:
        """Link to an asset's page (one partition of it) in the Dagster UI."""
        return f"{self.base_url()}/assets/{asset}" + (f"?partition={partition}" if partition else "")


def notifier_from_env() -> Notifier:
    """The deployment's notifier: the webhook URL as an EnvVar (a secret), the UI's address as text."""
    import os

    return Notifier(
        webhook_url=dg.EnvVar(WEBHOOK_URL_ENV) if os.environ.get(WEBHOOK_URL_ENV) else None,
        ui_base_url=os.environ.get(UI_BASE_URL_ENV) or None,
    )
