"""fid_score and its blocking check, materialized on one month from seeded upstream artifacts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch

from gan_assets.assets.evaluation import fid_score, fid_within_threshold
from gan_assets.assets.generation import generated_samples
from gan_assets.assets.reporting import monthly_report
from gan_assets.io_managers import ArtifactStorage
from gan_assets.model.config import EvaluationConfig, TrainConfig
from gan_assets.model.dcgan import build_generator
from gan_assets.partitions import monthly_partitions
from gan_assets.resources import CloudWatchMetrics, FidExtractor, Notifier
from gan_assets.storage import TensorBundle, decode, store_from_uri
from gan_assets.storage.layout import real_features_prefix
from gan_assets.storage.digest import state_dict_sha256
from gan_assets_tests.factories import (
    fid_score_value,
    seed_artifact,
    seed_images,
    seed_unused_extractor,
    seed_zone_index,
    tiny_config_resources,
    tiny_train_config,
)

MONTHS = {"2026-01-01": 12, "2026-02-01": 24}
FID_KEYS = {"fid", "kid_mean", "kid_std", "floor_fid", "floor_kid", "threshold", "threshold_rule", "passed",
            "attempt", "max_attempts", "n_real", "n_fake", "small_sample", "memorization", "fingerprint",
            "config", "config_diff", "status", "controls", "gate"}


def real_images(count: int, seed: int) -> np.ndarray:
    """Smooth blob images in [-1, 1]: structured enough for features to differ between images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    out = np.empty((count, 32, 32), np.float32)
    for i in range(count):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        out[i] = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)) * 2 - 1 + rng.normal(0, 0.05, (32, 32))
    return np.clip(out, -1, 1)


def seed_upstream(root: Path, months: dict[str, int], generator_month: str) -> TrainConfig:
    """preprocessed_images per month, a dicom_manifest and a trained_generator, as the owners store them."""
    for index, (month, count) in enumerate(months.items()):
        ids = np.array([f"pid-{month[:7]}-{i:03d}" for i in range(count)], dtype=np.str_)
        seed_images(root, month, real_images(count, index), ids=ids)
        manifest = pd.DataFrame({"id": ids, "modality": "CT", "rows": 32, "columns": 32, "frames": 1,
                                 "transfer_syntax": "1.2.840.10008.1.2.1", "photometric": "MONOCHROME2",
                                 "status": "ok", "reason": ""})
        seed_artifact(root, "dicom_manifest", month, manifest)
    seed_zone_index(root)
    config = tiny_train_config()
    torch.manual_seed(0)
    generator = build_generator(config)
    attrs = {
        "config": config.to_dict(), "attempt": 1,
        "data_fingerprint": {"partitions": dict(months), "n_images": sum(months.values())},
        "loss_history": {"step": [2, 4], "loss_d": [1.3, 1.2], "loss_g": [0.8, 0.9]},
        "timings": {"train_seconds": 0.1}, "device": "cpu",
    }
    seed_artifact(root, "trained_generator", generator_month, TensorBundle(generator.state_dict(), attrs))
    seed_unused_extractor(root, list(months))
    return config


def resources(root: Path, **bar: Any) -> dict[str, Any]:
    return {
        **tiny_config_resources(evaluation=bar),
        # The random conv net: these tests are about the asset, not the features (test_domain_extractor.py).
        "fid_extractor": FidExtractor(kind="random_conv", feature_dim=32, kid_subsets=5, kid_subset_size=8,
                                      batch_size=16),
        "io_manager": ArtifactStorage(root=str(root)),
        "artifact_store": ArtifactStorage(root=str(root)),
        "cloudwatch": CloudWatchMetrics(),
        "notifier": Notifier(),
    }


def specs(*keys: str) -> list[dg.AssetSpec]:
    """Upstream stand-ins, loaded through the IO manager from the seeded objects."""
    return [dg.AssetSpec(key, partitions_def=monthly_partitions) for key in keys]


def check_evaluations(result: dg.ExecuteInProcessResult) -> list[Any]:
    return [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@dataclass
class Scored:
    """One month scored twice: attempt 1 against an absolute bar of 1e6 (a blind gate), then
    retrain attempt 2 against the floor, its real features from the cache."""
    config: TrainConfig
    store: Any
    first: dg.ExecuteInProcessResult
    stored: dict[str, Any]
    second: dg.ExecuteInProcessResult
    again: dict[str, Any]


SCORED_PARTITION = "2026-02-01"
RETRAIN_DIFF = {"lr_g": [2e-4, 1e-4]}


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Scored:
    root = tmp_path_factory.mktemp("scored") / "artifacts"
    partition = SCORED_PARTITION
    config = seed_upstream(root, MONTHS, partition)
    instance = dg.DagsterInstance.ephemeral()
    assets = [*specs("preprocessed_images", "trained_generator", "fid_feature_extractor"), fid_score, fid_within_threshold]
    first = dg.materialize(assets, partition_key=partition, instance=instance, raise_on_error=False,
                           resources=resources(root, threshold_rule="absolute", fid_threshold=1e6, min_separation=1.0))
    store = store_from_uri(str(root))
    stored = json.loads(store.get(f"fid_score/{partition}.json"))
    tags = {"gan/attempt": "2", "gan/config_diff": json.dumps(RETRAIN_DIFF)}
    second = dg.materialize(
        assets, partition_key=partition, instance=instance, tags=tags,
        resources=resources(root, threshold_rule="relative_floor", relative_factor=50.0), raise_on_error=False,
    )
    again = json.loads(store.get(f"fid_score/{partition}.json"))
    return Scored(config, store, first, stored, second, again)


def test_a_failed_blocking_check_still_stores_the_score(scored: Scored) -> None:
    assert not scored.first.success and materialized(scored.first) == {"fid_score"}
    (check,) = check_evaluations(scored.first)
    assert not check.passed and check.check_name == "fid_within_threshold"


def test_the_stored_score_holds_every_field(scored: Scored) -> None:
    stored = scored.stored
    assert FID_KEYS <= set(stored)
    assert stored["fid"] > 0 and stored["floor_fid"] >= 0 and np.isfinite(stored["kid_mean"])
    assert stored["config"] == scored.config.to_dict() and stored["config_diff"] == {}


def test_the_score_uses_the_held_out_half_and_as_many_images_as_each_control(scored: Scored) -> None:
    stored = scored.stored
    assert stored["n_real"] == 24 and stored["n_reference"] == 12 and stored["n_fake"] == 12 and stored["attempt"] == 1
    assert [c["name"] for c in stored["controls"]][-1] == "held_out_real" and len(stored["controls"]) == 8
    assert stored["small_sample"] is True  # 24 images < 32 feature dimensions


def test_a_bar_every_negative_control_passes_makes_the_gate_not_discriminative(scored: Scored) -> None:
    stored = scored.stored
    assert stored["threshold"] == 1e6 and stored["threshold_rule"] == "absolute"
    assert stored["gate"]["discriminative"] is False and stored["status"] == "not_discriminative"
    assert stored["passed"] is False and "fid_threshold = 1e+06" in stored["gate"]["rule"]


def test_the_fingerprint_names_the_extractor_its_weights_and_sample_sizes(scored: Scored) -> None:
    fp = scored.stored["fingerprint"]
    assert fp["extractor"] == "random_conv" and fp["feature_dim"] == 32 and fp["input_size"] == 32
    assert fp["n_real"] == 12 and fp["n_fake"] == 12 and len(fp["weights_sha256"]) == 64 and fp["dtype"]


def test_memorization_is_measured_against_the_whole_training_window(scored: Scored) -> None:
    memorization = scored.stored["memorization"]
    assert memorization["training_partitions"] == sorted(MONTHS)
    assert memorization["n_training"] == 36 and memorization["n_generated"] == 12
    assert 0.0 <= memorization["near_copy_fraction"] <= 1.0
    assert memorization["closest"][0]["nearest_training_id"].startswith(("2026-01-01/pid-", "2026-02-01/pid-"))


def test_the_first_score_caches_each_months_real_features(scored: Scored) -> None:
    fp = scored.stored["fingerprint"]
    assert scored.stored["real_features"]["cache_hit"] is False
    cached = scored.store.list(real_features_prefix(fp["id"]))
    assert sorted(cached) == [f"fid_score/real_features/{fp['id']}/{m}.npz" for m in sorted(MONTHS)]


def test_the_metadata_holds_the_score_as_typed_numbers(scored: Scored) -> None:
    (event,) = scored.first.asset_materializations_for_node("fid_score")
    md = event.metadata
    assert isinstance(md["fid"], dg.FloatMetadataValue) and md["fid"].value == pytest.approx(scored.stored["fid"])
    assert isinstance(md["kid_mean"], dg.FloatMetadataValue) and isinstance(md["threshold"], dg.FloatMetadataValue)
    assert isinstance(md["passed"], dg.BoolMetadataValue) and md["passed"].value is False
    assert isinstance(md["attempt"], dg.IntMetadataValue) and md["attempt"].value == 1
    assert md["max_attempts"].value == EvaluationConfig().max_attempts and md["status"].value == "not_discriminative"
    assert md["discriminative"].value is False and md["threshold_rule"].value == "absolute"
    assert isinstance(md["config"], dg.JsonMetadataValue) and md["config"].value == scored.config.to_dict()
    assert md["config_diff"].value == {} and md["real_features_cache_hit"].value is False


def test_the_metadata_holds_each_controls_fid_and_a_plain_summary(scored: Scored) -> None:
    (event,) = scored.first.asset_materializations_for_node("fid_score")
    md = event.metadata
    for control in scored.stored["controls"]:
        value = md[f"control/{control['name']}/fid"]
        assert isinstance(value, dg.FloatMetadataValue) and value.value == pytest.approx(control["fid"])
    assert "FID" in md["summary"].value and "NOT DISCRIMINATIVE" in md["summary"].value
    assert "|" not in md["summary"].value


def test_the_metadata_tables_have_schemas_and_typed_values(scored: Scored) -> None:
    (event,) = scored.first.asset_materializations_for_node("fid_score")
    md = event.metadata
    # Tables with schemas, not markdown: the UI sorts them and a reader gets typed values.
    assert isinstance(md["scores"], dg.TableMetadataValue) and isinstance(md["controls"], dg.TableMetadataValue)
    assert [c.name for c in md["controls"].schema.columns] == ["control", "kind", "fid", "kid", "gate_says", "right"]
    scores = {r.data["metric"]: r.data["value"] for r in md["scores"].records}
    assert scores["FID"] == pytest.approx(scored.stored["fid"])
    assert scores["threshold"] == pytest.approx(scored.stored["threshold"])
    controls = {r.data["control"]: r.data for r in md["controls"].records}
    assert controls["uniform_noise"]["kind"] == "negative"
    assert set(controls) == {c["name"] for c in scored.stored["controls"]}


def test_the_check_blames_the_metric_when_the_gate_is_blind(scored: Scored) -> None:
    (check,) = check_evaluations(scored.first)
    assert "the metric, not the model, is at fault" in check.description and "extractor" in check.description


def test_a_retrain_attempt_reads_the_real_features_from_the_cache(scored: Scored) -> None:
    assert materialized(scored.second) == {"fid_score"}
    assert scored.again["real_features"]["cache_hit"] is True
    assert scored.again["fid"] == pytest.approx(scored.stored["fid"], rel=1e-9)  # same generator, same cached features
    (event,) = scored.second.asset_materializations_for_node("fid_score")
    assert event.metadata["real_features_cache_hit"].value is True


def test_a_retrain_attempt_records_its_attempt_and_config_diff(scored: Scored) -> None:
    again = scored.again
    assert again["attempt"] == 2 and again["config_diff"] == RETRAIN_DIFF
    (event,) = scored.second.asset_materializations_for_node("fid_score")
    assert event.metadata["attempt"].value == 2 and event.metadata["config_diff"].value == RETRAIN_DIFF


def test_a_relative_floor_bar_is_a_multiple_of_the_floor(scored: Scored) -> None:
    again = scored.again
    assert again["threshold_rule"] == "relative_floor"
    assert again["threshold"] == pytest.approx(50.0 * again["floor_fid"])


def test_a_retrain_attempt_is_compared_with_the_previous_score(scored: Scored) -> None:
    assert scored.again["previous_score"]["attempt"] == 1 and scored.again["previous_score"]["comparable"] is True


@pytest.mark.usefixtures("seeing_gate")
def test_impossible_threshold_fails_the_check_and_blocks_downstream(tmp_path: Path) -> None:
    # The first month: the training window reaches before the partitions' start.
    root = tmp_path / "artifacts"
    partition = "2026-01-01"
    seed_upstream(root, {partition: 16}, partition)
    graph = [*specs("preprocessed_images", "trained_generator", "fid_feature_extractor", "dicom_manifest"),
             dg.AssetSpec("landing_zone_index"),
             fid_score, fid_within_threshold, generated_samples, monthly_report]

    instance = dg.DagsterInstance.ephemeral()
    blocked = dg.materialize(
        graph, partition_key=partition, instance=instance,
        resources=resources(root, threshold_rule="absolute", fid_threshold=1e-12, max_attempts=3),
        tags={"gan/attempt": "3"}, raise_on_error=False,
    )
    assert not blocked.success
    # Out of attempts: the month's fid_score step fails (its partition shows as failed, not green),
    # with the check's explanation; the score is kept and reported as an observation.
    assert materialized(blocked) == set()
    failure = blocked.get_step_failure_events()[0]
    assert failure.step_key == "fid_score" and "REJECTED" in failure.step_failure_data.error.to_string()
    (verdict,) = instance.get_records_for_run(blocked.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION).records
    observed = verdict.event_log_entry.asset_observation.metadata
    assert observed["status"].value == "rejected" and observed["attempt"].value == 3
    assert observed["threshold"].value == 1e-12 and observed["fid"].value > 1e-12
    assert partition in _failed_partitions(instance, "fid_score")  # what the partitions view shows
    assert observed["passed"].value is False and observed["max_attempts"].value == 3
    assert "max_attempts" not in observed["config"].value  # the training config: the bar is apart
    store = store_from_uri(str(root))
    assert not store.exists(f"fid_score/{partition}.json")  # a failed step stores no value
    assert not store.list("generated_samples/") and not store.list("monthly_report/")
    # The rejected attempt's score is kept beside its weights; nothing is promoted.
    assert [k for k in store.list(f"trained_generator/{partition}.history/") if k.endswith(".score.json")]
    assert not store.exists(f"trained_generator/{partition}.history/promoted.json")

    # Control: the same graph with a reachable threshold runs the downstream assets.
    passing = dg.materialize(graph, partition_key=partition,
                             resources=resources(root, threshold_rule="absolute", fid_threshold=1e6))
    assert passing.success
    assert materialized(passing) == {"fid_score", "generated_samples", "monthly_report"}
    assert store.list("generated_samples/") and store.list("monthly_report/")
    promoted = json.loads(store.get(f"trained_generator/{partition}.history/promoted.json"))
    weights = decode("safetensors", store.get(f"trained_generator/{partition}.safetensors"))
    assert promoted["weights_sha256"] == state_dict_sha256(weights.tensors) and promoted["scoring_run_id"] == passing.run_id
    report = json.loads(store.get(f"monthly_report/{partition}.json"))
    assert report["lineage"]["model"]["weights_sha256"] == promoted["weights_sha256"]


def _failed_partitions(instance: dg.DagsterInstance, asset: str) -> set[str]:
    """The partitions Dagster's UI shows as failed (planned in a failed run, not materialized since)."""
    from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

    value = get_and_update_asset_status_cache_value(instance, dg.AssetKey(asset), monthly_partitions)
    return set(value.deserialize_failed_partition_subsets(monthly_partitions).get_partition_keys()) if value else set()


def test_a_corrupted_generator_is_not_scored(tmp_path: Path) -> None:
    """Weights changed after training (one bit of one float) fail to load; nothing is scored."""
    root = tmp_path / "artifacts"
    partition = "2026-02-01"
    seed_upstream(root, MONTHS, partition)
    weights = root / "trained_generator" / f"{partition}.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))  # still a valid safetensors file
    result = dg.materialize([*specs("preprocessed_images", "trained_generator", "fid_feature_extractor"), fid_score],
                            partition_key=partition, resources=resources(root), raise_on_error=False)
    assert not result.success and materialized(result) == set()
    error = result.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert f"trained_generator partition {partition} failed its integrity check" in error
    assert f"Re-materialize trained_generator partition {partition}" in error
    assert not store_from_uri(str(root)).exists(f"fid_score/{partition}.json")


def test_the_check_explains_each_status() -> None:
    from dataclasses import replace

    from gan_assets.assets.evaluation import check_result
    from gan_assets.metrics.evaluation import FidScore

    passed = FidScore.from_dict(fid_score_value("2026-01-01", fid=41.5))
    assert check_result(passed).passed and "FID 41.5000 <= threshold 100.0000" in check_result(passed).description

    failed = replace(passed, fid=150.0, status="failed")
    result = check_result(failed)
    assert not result.passed and "retrain sensor will request another attempt" in result.description

    blind = replace(passed, status="not_discriminative",
                    gate=replace(passed.gate, discriminative=False, reasons=("negative control inverted passes",)))
    result = check_result(blind)
    assert not result.passed and result.metadata["discriminative"].value is False
    assert "the metric, not the model, is at fault" in result.description
    assert "inverted passes" in result.description and "Choose another feature extractor" in result.description
    assert "No retrain can fix this" in result.description

    copies = replace(passed, status="memorized", memorization=replace(passed.memorization, near_copy_fraction=0.25,
                                                                       memorized=True))
    result = check_result(copies)
    assert not result.passed and result.metadata["memorized"].value is True
    assert "MEMORIZED" in result.description and "25.00%" in result.description and "privacy" in result.description
    last = check_result(replace(copies, status="rejected", attempt=3))
    assert "REJECTED" in last.description and "MEMORIZED" in last.description and "exhausted" in last.description
