"""Everything the gan-assets code location holds, listed explicitly.

Resources are picked per deployment by ``GAN_ASSETS_ENV``:
- ``local`` (default): artifacts under ``GAN_ASSETS_ARTIFACTS_DIR`` (./artifacts), landing zone
  under ``GAN_ASSETS_LANDING_ZONE`` (./data/landing_zone); no credentials, no network.
- ``s3``: artifacts in ``s3://$GAN_ASSETS_S3_BUCKET/$GAN_ASSETS_S3_PREFIX`` through
  dagster-aws's S3Resource (``GAN_ASSETS_S3_ENDPOINT_URL`` for MinIO or a local server;
  credentials from the standard AWS chain: env vars, profile or IAM role).

``GAN_ASSETS_CONFIG_OVERRIDES`` (JSON object of fields of gan_config, evaluation_config or
generation_config; each field goes to the one resource that has it) changes the defaults the
launchpad starts from, e.g. ``{"steps": 200, "max_attempts": 2}``; run config still overrides
them per run (the retrain sensor does, for gan_config only). ``GAN_ASSETS_FID_EXTRACTOR_OVERRIDES``
does the same for fid_extractor. An unknown field in either, or a value out of its bounds, is
an error when the code location loads.

Every environment variable the package reads is read here or in the resource constructors of
resources.py; the cores get values. Secrets (the pseudonym key) go in as ``dg.EnvVar``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import ValidationError

from gan_assets.assets import evaluation, generation, ingest, reporting, training
from gan_assets.io_managers import ArtifactStorage
from gan_assets.jobs import gan_pipeline, index_job, retrain_job
from gan_assets.resources import (
    CloudWatchMetrics,
    EvaluationBar,
    FidExtractor,
    GanConfig,
    GenerationSettings,
    PreprocessConfig,
    RetrainPolicy,
    aws_region_from_env,
    dicom_source_from_env,
    notifier_from_env,
    s3_from_env,
)
from gan_assets.schedules import monthly_pipeline_schedule
from gan_assets.sensors import (
    landing_zone_sensor,
    notify_on_delivery,
    notify_on_run_failure,
    retrain_on_fid_failure,
)

DEPLOYMENTS = ("local", "s3")


def overrides_from_env(variable: str, resource: str, fields: Iterable[str]) -> dict[str, Any]:
    """The JSON object of resource fields in ``variable``; an unknown field is an error, not ignored."""
    raw = os.environ.get(variable, "").strip()
    try:
        overrides = json.loads(raw) if raw else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{variable} is not valid JSON ({err}): {raw[:200]!r}") from err
    if not isinstance(overrides, dict):
        raise ValueError(f"{variable} must be a JSON object of {resource} fields")
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"{variable} names unknown {resource} field(s) {unknown}; known fields: {sorted(fields)}")
    return overrides


CONFIG_OVERRIDES_ENV = "GAN_ASSETS_CONFIG_OVERRIDES"
# The resources GAN_ASSETS_CONFIG_OVERRIDES sets, by key; no field name is in two of them.
CONFIG_RESOURCES: dict[str, type[dg.ConfigurableResource]] = {
    "gan_config": GanConfig, "evaluation_config": EvaluationBar, "generation_config": GenerationSettings,
}


def config_resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """gan_config, evaluation_config and generation_config: defaults, with GAN_ASSETS_CONFIG_OVERRIDES
    applied and validated (an unknown field or a value out of bounds fails here, naming it)."""
    owner = {name: key for key, cls in CONFIG_RESOURCES.items() for name in cls.model_fields}
    overrides = overrides_from_env(CONFIG_OVERRIDES_ENV, "gan_config/evaluation_config/generation_config", owner)
    try:
        return {key: cls(**{k: v for k, v in overrides.items() if owner[k] == key})
                for key, cls in CONFIG_RESOURCES.items()}
    except ValidationError as err:
        raise ValueError(f"{CONFIG_OVERRIDES_ENV} has a value out of bounds: {err}") from None


def fid_extractor_from_env() -> FidExtractor:
    """FidExtractor defaults, with GAN_ASSETS_FID_EXTRACTOR_OVERRIDES applied (e.g. fewer domain_steps)."""
    return FidExtractor(**overrides_from_env("GAN_ASSETS_FID_EXTRACTOR_OVERRIDES", "fid_extractor",
                                             FidExtractor.model_fields))


def _shared_resources(s3: S3Resource) -> dict[str, Any]:
    return {
        **config_resources_from_env(),
        "retrain_policy": RetrainPolicy(mutation_policy=os.environ.get("GAN_ASSETS_MUTATION_POLICY", "")),
        "preprocess_config": PreprocessConfig(),
        "dicom_source": dicom_source_from_env(s3=s3),
        "fid_extractor": fid_extractor_from_env(),
        "cloudwatch": CloudWatchMetrics(
            enabled=os.environ.get("GAN_ASSETS_CLOUDWATCH", "").lower() in ("1", "true", "yes"),
            namespace=os.environ.get("GAN_ASSETS_CLOUDWATCH_NAMESPACE", "GanAssets"),
            region_name=aws_region_from_env() or "us-east-1",
            endpoint_url=os.environ.get("GAN_ASSETS_CLOUDWATCH_ENDPOINT_URL") or None,
        ),
        "notifier": notifier_from_env(),
    }


def resources_for(deployment: str) -> dict[str, Any]:
    """The resource dict of one deployment (``local`` or ``s3``)."""
    # One S3Resource: the artifact storage and the landing zone reach S3 with the same settings.
    s3 = s3_from_env()
    if deployment == "local":
        storage = ArtifactStorage(root=os.environ.get("GAN_ASSETS_ARTIFACTS_DIR", os.path.abspath("artifacts")), s3=s3)
        return {**_shared_resources(s3), "io_manager": storage, "artifact_store": storage}
    if deployment == "s3":
        bucket = dg.EnvVar("GAN_ASSETS_S3_BUCKET").get_value()
        if not bucket:
            raise ValueError("GAN_ASSETS_ENV=s3 needs GAN_ASSETS_S3_BUCKET (and optionally GAN_ASSETS_S3_PREFIX)")
        prefix = os.environ.get("GAN_ASSETS_S3_PREFIX", "gan-assets")
        storage = ArtifactStorage(root=f"s3://{bucket}/{prefix}", s3=s3)
        return {**_shared_resources(s3), "s3": s3, "io_manager": storage, "artifact_store": storage}
    raise ValueError(f"GAN_ASSETS_ENV={deployment!r} is not one of {DEPLOYMENTS}")


DEPLOYMENT = os.environ.get("GAN_ASSETS_ENV", "local")

defs = dg.Definitions(
    assets=[
        ingest.dicom_source,
        ingest.landing_zone_index,
        ingest.dicom_manifest,
        ingest.preprocessed_images,
        training.trained_generator,
        evaluation.fid_feature_extractor,
        evaluation.fid_score,
        generation.generated_samples,
        reporting.monthly_report,
    ],
    asset_checks=[evaluation.fid_within_threshold],
    jobs=[gan_pipeline, retrain_job, index_job],
    schedules=[monthly_pipeline_schedule],
    sensors=[retrain_on_fid_failure, notify_on_run_failure, notify_on_delivery, landing_zone_sensor],
    resources=resources_for(DEPLOYMENT),
    # The graph is a chain: a process per step would only re-import torch for each step.
    executor=dg.in_process_executor,
)
