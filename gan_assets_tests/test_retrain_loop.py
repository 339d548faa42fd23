"""The whole retrain loop in-process, with the real training, evaluation and delivery assets.

The daemon's part is played by hand: tick retrain_on_fid_failure with the stored cursor,
execute every requested run (its run config, tags and partition) on the same instance, tick
again, until the sensor asks for nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from gan_assets.assets.common import ATTEMPT_TAG, CONFIG_DIFF_TAG
from gan_assets.model.config import TrainConfig
from gan_assets.sensors import retrain_on_fid_failure
from gan_assets.storage import TensorBundle, decode
from gan_assets_tests.factories import N_IMAGES, loop_defs, seed_preprocessed_images, tiny_config_overrides

MONTH = "2026-03-01"
POLICY_ENV_VAR = "GAN_ASSETS_MUTATION_POLICY"
# A month large and structured enough for the honest gate to discriminate (see seed_preprocessed_images).
ORIENTED_IMAGES = 200


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor,
                                 resources=defs.resources) as context:
        data = retrain_on_fid_failure.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor


def run_loop(defs: dg.Definitions, instance: dg.DagsterInstance, limit: int = 8) -> list[dg.ExecuteInProcessResult]:
    """Attempt 1 (no tags, the defaults), then every run the sensor requests, until it requests none."""
    job = defs.resolve_job_def("retrain_job")
    results = [job.execute_in_process(instance=instance, partition_key=MONTH, raise_on_error=False)]
    cursor = None
    for _ in range(limit):
        requests, cursor = tick(defs, instance, cursor)
        if not requests:
            return results
        assert len(requests) == 1, [r.run_key for r in requests]
        (request,) = requests
        results.append(job.execute_in_process(
            run_config=request.run_config, tags=request.tags, partition_key=request.partition_key,
            instance=instance, raise_on_error=False))
    raise AssertionError(f"the loop did not stop after {limit} requests")


def scores(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> dict[str, Any]:
    """The run's score: its fid_score materialization, or the observation of a month rejected (whose
    fid_score step fails so that the month shows failed)."""
    events = result.asset_materializations_for_node("fid_score")
    if events:
        (event,) = events
        metadata = event.metadata
    else:
        (record,) = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION).records
        metadata = record.event_log_entry.asset_observation.metadata
    return {k: v.value for k, v in metadata.items() if k in
            ("fid", "threshold", "passed", "attempt", "max_attempts", "status", "config", "config_diff")}


def trained_generator_events(instance: dg.DagsterInstance) -> list[Any]:
    return list(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("trained_generator"), asset_partitions=[MONTH]),
        limit=50, ascending=True).records)


def configure(monkeypatch: pytest.MonkeyPatch, artifacts: Path, *, images: int = N_IMAGES, oriented: bool = False,
              **changes: Any) -> TrainConfig:
    """Env of one loop: a fresh artifacts dir seeded with the month's images, tiny config + changes
    (training, evaluation and generation fields alike); returns the training part."""
    seed_preprocessed_images(artifacts, [MONTH], n=images, oriented=oriented)
    values = tiny_config_overrides(**changes)
    monkeypatch.setenv("GAN_ASSETS_ENV", "local")
    monkeypatch.setenv("GAN_ASSETS_ARTIFACTS_DIR", str(artifacts))
    monkeypatch.setenv("GAN_ASSETS_LANDING_ZONE", str(artifacts.parent / "landing_zone"))
    monkeypatch.setenv("GAN_ASSETS_CONFIG_OVERRIDES", json.dumps(values))
    monkeypatch.delenv("GAN_ASSETS_MUTATION_POLICY", raising=False)
    monkeypatch.delenv("GAN_ASSETS_WEBHOOK_URL", raising=False)
    return TrainConfig.from_dict(values)


def stored_generator_config(artifacts: Path) -> dict[str, Any]:
    bundle = decode("safetensors", (artifacts / "trained_generator" / f"{MONTH}.safetensors").read_bytes())
    assert isinstance(bundle, TensorBundle)
    return bundle.attrs["config"]


@dataclass
class Loop:
    artifacts: Path
    base: TrainConfig
    instance: dg.DagsterInstance
    results: list[dg.ExecuteInProcessResult]


@pytest.fixture(scope="module")
def impossible_loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """One loop a 4-step model cannot pass, shared by the tests (it trains max_attempts times).

    The honest default gate: enough oriented, textured images that its controls discriminate,
    and a tiny model far from the data-derived threshold.
    """
    artifacts = tmp_path_factory.mktemp("impossible") / "artifacts"
    with dg.instance_for_test() as instance:
        with pytest.MonkeyPatch.context() as monkeypatch:
            base = configure(monkeypatch, artifacts, images=ORIENTED_IMAGES, oriented=True, max_attempts=3)
            results = run_loop(loop_defs(artifacts), instance)
        yield Loop(artifacts, base, instance, results)


def test_an_impossible_threshold_runs_exactly_max_attempts_chained_trainings_then_stops(impossible_loop: Loop) -> None:
    base, instance, results, artifacts = (
        impossible_loop.base, impossible_loop.instance, impossible_loop.results, impossible_loop.artifacts)
    assert len(results) == 3
    attempts = [scores(r, instance) for r in results]
    assert [s["attempt"] for s in attempts] == [1, 2, 3]
    assert [s["status"] for s in attempts] == ["failed", "failed", "rejected"]
    assert not any(s["passed"] for s in attempts)
    # Chained: each retrain trains 50% more steps than the attempt it follows (4 -> 6 -> 9).
    assert [(s["config"]["lr_g"], s["config"]["lr_d"], s["config"]["steps"]) for s in attempts] == [
        (base.lr_g, base.lr_d, 4), (base.lr_g, base.lr_d, 6), (base.lr_g, base.lr_d, 9)]
    assert attempts[0]["config_diff"] == {}
    assert attempts[1]["config_diff"] == {"steps": [4, 6]}
    assert attempts[2]["config_diff"] == {"steps": [6, 9]}
    for result, expected in zip(results, attempts):
        assert result.dagster_run.tags.get(ATTEMPT_TAG, "1") == str(expected["attempt"])
        assert json.loads(result.dagster_run.tags.get(CONFIG_DIFF_TAG, "{}")) == expected["config_diff"]
    # Exactly three trainings, and the stored model is the last attempt's.
    assert len(trained_generator_events(instance)) == 3
    assert stored_generator_config(artifacts)["steps"] == 9
    # The blocking check kept everything downstream from materializing; the last attempt's step
    # failed with the verdict (the month shows failed), its score is recorded all the same.
    assert instance.get_latest_materialization_event(dg.AssetKey("generated_samples")) is None
    assert not results[-1].success and results[-1].get_step_failure_events()[0].step_key == "fid_score"
    (verdict,) = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("fid_score")), limit=10).records
    recorded = verdict.event_log_entry.asset_observation.metadata
    assert recorded["status"].value == "rejected" and recorded["attempt"].value == 3


@pytest.mark.usefixtures("seeing_gate")
def test_a_threshold_met_on_attempt_2_stops_after_two_with_downstream_assets(
        impossible_loop: Loop, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Attempt 1 is the impossible loop's attempt 1 (same config; CPU training is seeded), so a
    # threshold 10% under its FID fails it. A policy given by env makes attempt 2 train 20x
    # longer (4 -> 80 steps), which meets the threshold.
    first = scores(impossible_loop.results[0], impossible_loop.instance)["fid"]
    artifacts = tmp_path / "artifacts"
    configure(monkeypatch, artifacts, images=ORIENTED_IMAGES, oriented=True, threshold_rule="absolute",
              fid_threshold=0.9 * first, max_attempts=3)
    monkeypatch.setenv(POLICY_ENV_VAR, json.dumps([{"scale": {"steps": 20}, "description": "train 20x longer"}]))
    with dg.instance_for_test() as instance:
        results = run_loop(loop_defs(artifacts), instance)

        attempts = [scores(r, instance) for r in results]
        assert [s["status"] for s in attempts] == ["failed", "passed"], [s["fid"] for s in attempts]
        assert attempts[0]["fid"] == pytest.approx(first, rel=1e-6)
        assert attempts[1]["config_diff"] == {"steps": [4, 80]}
        assert results[1].dagster_run.tags["gan/mutation"] == "train 20x longer"
        assert not results[0].success and results[1].success  # attempt 1: blocked by the check
        assert len(trained_generator_events(instance)) == 2
        for key in ("generated_samples", "monthly_report"):
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            assert event is not None and event.run_id == results[1].run_id, key
        assert (artifacts / "generated_samples" / f"{MONTH}.png").is_file()
        assert (artifacts / "monthly_report" / f"{MONTH}.json").is_file()
        assert stored_generator_config(artifacts)["steps"] == 80


def test_a_blind_gate_stops_the_loop_after_one_attempt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The honest default gate on symmetric blobs: upside-down blobs look like blobs, so the
    # flipped control passes (or sits too close to the real images) and the gate is blind.
    artifacts = tmp_path / "artifacts"
    configure(monkeypatch, artifacts, max_attempts=3)
    with dg.instance_for_test() as instance:
        results = run_loop(loop_defs(artifacts), instance)
        (attempt,) = [scores(r, instance) for r in results]  # no retrain was requested
        assert attempt["status"] == "not_discriminative" and not attempt["passed"]
        assert len(trained_generator_events(instance)) == 1
        assert instance.get_latest_materialization_event(dg.AssetKey("generated_samples")) is None
    stored = json.loads((artifacts / "fid_score" / f"{MONTH}.json").read_text())
    assert stored["gate"]["discriminative"] is False and stored["gate"]["reasons"]
