"""Smoke tests of the one Definitions object and of deployment selection."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pytest

from gan_assets.definitions import defs, gan_config_from_env, resources_for
from gan_assets.io_managers import s3_settings
from gan_assets.partitions import monthly_partitions
from gan_assets.storage import ArrayBundle

EXPECTED_ASSETS = {
    "dicom_source", "landing_zone_index", "dicom_manifest", "preprocessed_images", "fid_feature_extractor", "trained_generator",
    "fid_score", "generated_samples", "monthly_report",
}


def test_definitions_load_and_resolve_everything() -> None:
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {job.name for job in repo.get_all_jobs()} >= {"gan_pipeline", "retrain_job"}
    assert {s.name for s in repo.schedule_defs} == {"monthly_pipeline_schedule"}
    assert {s.name for s in repo.sensor_defs} >= {"retrain_on_fid_failure", "notify_on_run_failure"}
    keys = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert keys == EXPECTED_ASSETS
    graph = repo.asset_graph
    lineage = [
        ("dicom_source", "landing_zone_index"), ("landing_zone_index", "dicom_manifest"),
        ("dicom_source", "dicom_manifest"), ("dicom_manifest", "preprocessed_images"),
        ("preprocessed_images", "trained_generator"), ("preprocessed_images", "fid_feature_extractor"),
        ("trained_generator", "fid_score"),
        ("fid_score", "generated_samples"), ("generated_samples", "monthly_report"),
    ]
    for parent, child in lineage:
        assert dg.AssetKey(parent) in graph.get(dg.AssetKey(child)).parent_keys, (parent, child)
    checks = {check.name for check in graph.asset_check_keys}
    assert "fid_within_threshold" in checks
    # Every materializable asset has a description for the UI; all but the zone-wide index share
    # the monthly partitions.
    for key in EXPECTED_ASSETS - {"dicom_source"}:
        node = graph.get(dg.AssetKey(key))
        assert node.description, key
        assert (node.partitions_def is None) == (key == "landing_zone_index"), key
        # Who answers for it and what its data is, on every asset page.
        assert node.owners and all(owner.startswith("team:") for owner in node.owners), key
        assert node.tags.get("stage") == node.group_name and node.tags.get("data"), key
    for job in ("gan_pipeline", "retrain_job"):
        assert defs.resolve_job_def(job).tags.get("gan/training") == "true"


def test_unknown_deployment_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="GAN_ASSETS_ENV='moon'"):
        resources_for("moon")


def test_config_overrides_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_ASSETS_CONFIG_OVERRIDES", json.dumps({"image_size": 32, "steps": 7}))
    config = gan_config_from_env()
    assert (config.image_size, config.steps) == (32, 7)
    monkeypatch.setenv("GAN_ASSETS_CONFIG_OVERRIDES", json.dumps({"image_size": 48}))
    with pytest.raises(ValueError, match="image_size"):
        gan_config_from_env()
    monkeypatch.setenv("GAN_ASSETS_CONFIG_OVERRIDES", "{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        gan_config_from_env()


@pytest.mark.usefixtures("aws_env")  # a deployment reads the standard AWS chain
def test_s3_deployment_stores_in_the_bucket(
    monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, s3_bucket: str, s3_client
) -> None:
    monkeypatch.setenv("GAN_ASSETS_S3_BUCKET", s3_bucket)
    monkeypatch.setenv("GAN_ASSETS_S3_PREFIX", "deploy-test")
    monkeypatch.setenv("GAN_ASSETS_S3_ENDPOINT_URL", moto_endpoint)
    resources = resources_for("s3")

    @dg.asset(name="probe", partitions_def=monthly_partitions)
    def probe() -> ArrayBundle:
        return ArrayBundle({"x": np.arange(4)}, {"note": "s3 deployment"})

    result = dg.materialize([probe], partition_key="2026-02-01", resources={"io_manager": resources["io_manager"]})
    assert result.success
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert keys == ["deploy-test/probe/.2026-02-01.npz.sha256", "deploy-test/probe/2026-02-01.npz"]
    store = resources["artifact_store"].object_store()
    assert store.uri("x/y.png") == f"s3://{s3_bucket}/deploy-test/x/y.png"
    assert store.get("probe/2026-02-01.npz")[:2] == b"PK"  # an .npz is a zip archive
    # One storage resource under both keys, and the landing zone reaches S3 with the same settings.
    assert resources["io_manager"] is resources["artifact_store"]
    settings = s3_settings(resources["io_manager"].s3)
    assert settings.endpoint_url == moto_endpoint and resources["dicom_source"].source_spec().s3 == settings
