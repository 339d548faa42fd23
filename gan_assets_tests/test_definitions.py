"""Smoke tests of the one Definitions object and of deployment selection."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pytest

from gan_assets.definitions import CONFIG_RESOURCES, config_resources_from_env, defs, resources_for
from gan_assets.dicom.pseudonym import LOCAL_DEFAULT_KEY
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


def test_config_overrides_from_env_go_to_the_resource_that_has_each_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_ASSETS_CONFIG_OVERRIDES", json.dumps(
        {"image_size": 32, "steps": 7, "max_attempts": 2, "threshold_rule": "absolute", "num_samples": 5}))
    resources = config_resources_from_env()
    assert (resources["gan_config"].image_size, resources["gan_config"].steps) == (32, 7)
    assert (resources["evaluation_config"].max_attempts, resources["evaluation_config"].threshold_rule) == (2, "absolute")
    assert resources["generation_config"].num_samples == 5
    monkeypatch.setenv("GAN_ASSETS_CONFIG_OVERRIDES", json.dumps({"image_size": 48}))
    with pytest.raises(ValueError, match="image_size"):
        config_resources_from_env()
    monkeypatch.setenv("GAN_ASSETS_CONFIG_OVERRIDES", "{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        config_resources_from_env()


def test_an_unknown_override_is_an_error_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_ASSETS_CONFIG_OVERRIDES", json.dumps({"step": 50}))
    with pytest.raises(ValueError, match=r"GAN_ASSETS_CONFIG_OVERRIDES names unknown .*\['step'\]"):
        config_resources_from_env()
    # The superseded fields are refused too: a deployment that still sets them should hear so.
    monkeypatch.setenv("GAN_ASSETS_CONFIG_OVERRIDES", json.dumps({"fid_num_fake": 16}))
    with pytest.raises(ValueError, match="fid_num_fake"):
        config_resources_from_env()
    # Control: the same variable with a known field loads.
    monkeypatch.setenv("GAN_ASSETS_CONFIG_OVERRIDES", json.dumps({"steps": 50}))
    assert config_resources_from_env()["gan_config"].steps == 50


def test_an_override_out_of_bounds_fails_the_load_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_ASSETS_CONFIG_OVERRIDES", json.dumps({"steps": 10**12}))
    with pytest.raises(ValueError, match=r"(?s)GAN_ASSETS_CONFIG_OVERRIDES.*steps"):
        config_resources_from_env()


def test_no_field_is_in_two_config_resources() -> None:
    names = [name for cls in CONFIG_RESOURCES.values() for name in cls.model_fields]
    assert len(names) == len(set(names))


def test_the_deployment_region_reaches_cloudwatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert resources_for("local")["cloudwatch"].region_name == "eu-west-3"
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert resources_for("local")["cloudwatch"].region_name == "ap-south-1"


def test_the_pseudonym_key_is_an_env_var_not_a_value_in_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_ASSETS_PSEUDONYM_KEY", "deployment-secret")
    source = resources_for("local")["dicom_source"]
    assert source.key() == b"deployment-secret"
    # What Dagster keeps of the resource's config names the variable, never the secret.
    stored = json.dumps(source.get_resource_definition().config_schema.default_value, default=str)
    assert "deployment-secret" not in stored and "GAN_ASSETS_PSEUDONYM_KEY" in stored
    monkeypatch.delenv("GAN_ASSETS_PSEUDONYM_KEY")
    assert resources_for("local")["dicom_source"].key() == LOCAL_DEFAULT_KEY.encode()


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
