"""retrain_on_fid_failure, one tick at a time, against real fid_score events in a test instance.

The events come from materializing a small fid_score that emits the contract metadata (the
sensor only reads events, so the scorer behind them does not matter here); the full loop with
the real training and evaluation assets is in test_retrain_loop.py.
"""


import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from gan_assets import sensors
from gan_assets.assets.common import ATTEMPT_TAG, CONFIG_DIFF_TAG, PARENT_RUN_TAG, run_attempt
from gan_assets.io_managers import ArtifactStorage
from gan_assets.jobs import retrain_job
from gan_assets.model.config import EvaluationConfig, TrainConfig, config_diff
from gan_assets.partitions import monthly_partitions
from gan_assets.resources import EvaluationBar, GanConfig, Notifier
from gan_assets.sensors import FID_SCORE_KEY, decide_retrain, retrain_on_fid_failure
from gan_assets.storage import store_from_uri
from gan_assets_tests.factories import WebhookReceiver, tiny_config_resources, tiny_training

TINY = tiny_training()
BAR = EvaluationConfig()
MONTH = "2026-03-01"


class StandInScore(dg.Config):
    fid: float = 500.0
    # Empty: from the FID and the attempt; else the status to emit (not_discriminative, memorized).
    status: str = ""


@dg.asset(partitions_def=monthly_partitions)
def trained_generator() -> None:
    """Stand-in so that retrain_job's selection resolves."""


@dg.asset(name="fid_score", partitions_def=monthly_partitions, deps=[trained_generator])
def fid_score(context: dg.AssetExecutionContext, config: StandInScore, gan_config: GanConfig,
              evaluation_config: EvaluationBar) -> dg.MaterializeResult:
    """Emits fid_score's contract metadata for a given FID."""
    train = gan_config.to_train_config()
    bar = evaluation_config.to_evaluation_config()
    attempt = run_attempt(context)
    passed = config.fid <= bar.fid_threshold
    status = "passed" if passed else ("rejected" if attempt >= bar.max_attempts else "failed")
    if config.status:
        status, passed = config.status, config.status == "passed"
    return dg.MaterializeResult(metadata={
        "memorized": status == "memorized", "extractor": "random_conv",
        "separation": 1.2 if status == "not_discriminative" else 8.0,
        "fid": config.fid, "kid_mean": 0.0, "threshold": bar.fid_threshold, "passed": passed,
        "attempt": attempt, "max_attempts": bar.max_attempts, "status": status,
        "config": dg.MetadataValue.json(train.to_dict()),
        "config_diff": dg.MetadataValue.json(json.loads(context.run.tags.get(CONFIG_DIFF_TAG, "{}"))),
    })


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def make_defs(artifacts: Path, webhook_url: str | None = None, *, mutation_policy: str = "",
              bar: dict[str, Any] | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[trained_generator, fid_score],
        jobs=[retrain_job],
        sensors=[retrain_on_fid_failure],
        resources={
            **tiny_config_resources(evaluation=bar, mutation_policy=mutation_policy),
            "notifier": Notifier(webhook_url=webhook_url, ui_base_url="http://ui.test"),
            "artifact_store": ArtifactStorage(root=str(artifacts)),
        },
    )


def score(instance: dg.DagsterInstance, partition: str, fid: float, *, attempt: int = 1,
          config: dict[str, Any] | None = None, status: str = "") -> str:
    """Materialize the stand-in fid_score for one month; returns the run id."""
    result = dg.materialize(
        [fid_score], instance=instance, partition_key=partition,
        resources={"gan_config": GanConfig(**(config or TINY)), "evaluation_config": EvaluationBar()},
        run_config={"ops": {"fid_score": {"config": {"fid": fid, "status": status}}}},
        tags={ATTEMPT_TAG: str(attempt)},
    )
    return result.run_id


def report(instance: dg.DagsterInstance, partition: str, fid: float, *, attempt: int = 1) -> None:
    """The same contract metadata as a runless event: cheaper where the parent run does not matter."""
    train = TrainConfig(**TINY)
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=FID_SCORE_KEY, partition=partition,
        metadata={"fid": fid, "threshold": BAR.fid_threshold, "passed": fid <= BAR.fid_threshold,
                  "attempt": attempt, "max_attempts": BAR.max_attempts,
                  "config": dg.MetadataValue.json(train.to_dict())},
    ))


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    """One sensor evaluation the way the daemon does it: the previous tick's cursor in, the new one out."""
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor,
                                 resources=defs.resources) as context:
        data = retrain_on_fid_failure.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor


def test_a_failing_event_yields_exactly_one_request_with_the_mutated_config_and_tags(
        instance: dg.DagsterInstance, tmp_path: Path) -> None:
    defs = make_defs(tmp_path)
    run_id = score(instance, MONTH, fid=500.0)  # default threshold 200: fails, attempt 1 of 3

    requests, cursor = tick(defs, instance, None)

    assert len(requests) == 1
    request = requests[0]
    used = TrainConfig(**TINY).to_dict()
    expected = TrainConfig(**TINY).replace(steps=6).to_dict()  # the default ladder's attempt 2: 50% more steps
    assert request.run_config == {"resources": {"gan_config": {"config": expected}}}
    assert request.partition_key == MONTH
    assert request.run_key == f"{MONTH}:2:{run_id}"
    assert request.tags[ATTEMPT_TAG] == "2"
    assert request.tags[PARENT_RUN_TAG] == run_id
    assert json.loads(request.tags[CONFIG_DIFF_TAG]) == config_diff(used, expected) == {"steps": [4, 6]}
    assert request.job_name in (None, "retrain_job")

    # A repeated tick (the daemon passes the stored cursor back) requests nothing more.
    again, cursor_after = tick(defs, instance, cursor)
    assert again == [] and cursor_after == cursor


def test_mutations_chain_from_the_config_the_failing_attempt_used(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    defs = make_defs(tmp_path)
    second = TrainConfig(**TINY).replace(steps=6, lr_g=1e-4).to_dict()
    parent = score(instance, MONTH, fid=500.0, attempt=2, config=second)
    (request,), _ = tick(defs, instance, None)
    third = request.run_config["resources"]["gan_config"]["config"]
    assert (third["lr_g"], third["lr_d"], third["steps"]) == (1e-4, 2e-4, 9)
    assert request.tags[ATTEMPT_TAG] == "3" and request.run_key == f"{MONTH}:3:{parent}"


def test_passing_events_and_the_last_attempt_yield_no_request_and_rejection_is_notified(
        instance: dg.DagsterInstance, tmp_path: Path, webhook: WebhookReceiver) -> None:
    defs = make_defs(tmp_path, webhook.url)
    score(instance, "2026-01-01", fid=10.0)  # passes
    last_run = score(instance, "2026-02-01", fid=500.0, attempt=3)  # fails at max_attempts=3

    requests, cursor = tick(defs, instance, None)

    assert requests == []
    assert cursor is not None  # both events were consumed
    assert len(webhook.received) == 1
    text = webhook.received[0]["text"]
    assert "2026-02-01" in text and "REJECTED" in text and "3 of 3" in text
    assert f"http://ui.test/runs/{last_run}" in text
    assert tick(defs, instance, cursor)[0] == [] and len(webhook.received) == 1  # notified once


def test_three_months_failing_before_one_tick_give_three_requests(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    defs = make_defs(tmp_path)
    months = ["2026-01-01", "2026-02-01", "2026-03-01"]
    for month in months:
        report(instance, month, fid=500.0)

    requests, cursor = tick(defs, instance, None)

    assert sorted(r.partition_key for r in requests) == months
    assert sorted(r.run_key for r in requests) == [f"{m}:2" for m in months]
    assert tick(defs, instance, cursor)[0] == []


def test_the_cursor_moves_only_past_the_events_handled(
        instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    defs = make_defs(tmp_path)
    monkeypatch.setattr(sensors, "RETRAIN_EVENTS_PER_TICK", 2)
    months = ["2026-01-01", "2026-02-01", "2026-03-01"]
    for month in months:
        report(instance, month, fid=500.0)

    first, cursor = tick(defs, instance, None)
    second, cursor = tick(defs, instance, cursor)
    third, _ = tick(defs, instance, cursor)

    assert [r.partition_key for r in first] == months[:2]
    assert [r.partition_key for r in second] == months[2:]
    assert third == []


def test_config_falls_back_to_the_months_earlier_fid_score_event(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    defs = make_defs(tmp_path)
    used = TrainConfig(**TINY).replace(lr_g=3e-4).to_dict()
    other = TrainConfig(**TINY).replace(lr_g=5e-4).to_dict()
    # A stored fid_score object is never read around Dagster: only the event log counts.
    store_from_uri(str(tmp_path)).put(f"fid_score/{MONTH}.json", json.dumps({"attempt": 1, "config": other}).encode())
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=FID_SCORE_KEY, partition=MONTH, metadata={"attempt": 1, "config": used}))
    _, cursor = tick(defs, instance, None)  # an event without 'passed' is skipped
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=FID_SCORE_KEY, partition=MONTH,
        metadata={"passed": False, "attempt": 1, "max_attempts": 3, "fid": 500.0, "threshold": 200.0},
    ))
    (request,), _ = tick(defs, instance, cursor)
    config = request.run_config["resources"]["gan_config"]["config"]
    assert (config["lr_g"], config["steps"]) == (3e-4, 6)  # the recorded config, mutated
    assert PARENT_RUN_TAG not in request.tags  # a runless event has no parent run


def test_events_that_cannot_be_mutated_are_reported_not_retried_forever(
        instance: dg.DagsterInstance, tmp_path: Path, webhook: WebhookReceiver) -> None:
    defs = make_defs(tmp_path, webhook.url)
    # No config in the event and none stored: logged, consumed, no request.
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=FID_SCORE_KEY, partition=MONTH, metadata={"passed": False, "attempt": 1, "max_attempts": 3}))
    requests, cursor = tick(defs, instance, None)
    assert requests == [] and cursor is not None
    assert len(webhook.received) == 1 and "cannot be retrained automatically" in webhook.received[0]["text"]
    decision = decide_retrain({"passed": False, "attempt": 1, "max_attempts": 3}, MONTH, "", None)
    assert decision.action == "stuck" and "no config recorded for attempt 1" in decision.reason
    # Events not written by fid_score's contract are consumed without a request.
    assert decide_retrain({"fid": 3.0}, MONTH, "", None).action == "skip"
    assert decide_retrain({"passed": False, "attempt": 1, "max_attempts": 3,
                           "config": TrainConfig(**TINY).to_dict()}, None, "", None).action == "skip"


def test_a_malformed_policy_fails_the_tick_without_consuming_events(
        instance: dg.DagsterInstance, tmp_path: Path) -> None:
    report(instance, MONTH, fid=500.0)
    broken = make_defs(tmp_path, mutation_policy='[{"scale": {"fid_threshold": 10}}]')
    with pytest.raises(Exception, match="fid_threshold: not a training field"):
        tick(broken, instance, None)
    (request,), _ = tick(make_defs(tmp_path), instance, None)  # fixed: the backlog is handled
    assert request.run_key == f"{MONTH}:2"


def test_the_policy_is_configurable(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    defs = make_defs(tmp_path, mutation_policy=json.dumps([{"scale": {"steps": 2}, "description": "double steps"}]))
    report(instance, MONTH, fid=500.0)
    (request,), _ = tick(defs, instance, None)
    assert json.loads(request.tags[CONFIG_DIFF_TAG]) == {"steps": [4, 8]}
    assert request.tags["gan/mutation"] == "double steps"


def test_requests_are_valid_runs_of_retrain_job(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    """The request's run config, tags and partition launch retrain_job, whose fid_score records attempt 2."""
    defs = make_defs(tmp_path)
    score(instance, MONTH, fid=500.0)
    (request,), cursor = tick(defs, instance, None)
    run_config = {**request.run_config, "ops": {"fid_score": {"config": {"fid": 400.0}}}}
    result = defs.resolve_job_def("retrain_job").execute_in_process(
        run_config=run_config, tags=request.tags, partition_key=request.partition_key, instance=instance)
    assert result.success
    (event,) = result.asset_materializations_for_node("fid_score")
    assert event.metadata["attempt"].value == 2
    assert event.metadata["config"].value["steps"] == 6
    (next_request,), _ = tick(defs, instance, cursor)
    assert next_request.run_key == f"{MONTH}:3:{result.run_id}"


def test_only_the_newest_score_of_a_month_in_a_batch_counts(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    defs = make_defs(tmp_path)
    report(instance, MONTH, fid=500.0)  # failed...
    report(instance, MONTH, fid=10.0)  # ...then a manual re-run passed before the tick
    report(instance, "2026-04-01", fid=500.0)
    report(instance, "2026-04-01", fid=600.0)  # failed twice: retrained once
    requests, _ = tick(defs, instance, None)
    assert [r.run_key for r in requests] == ["2026-04-01:2"]


def test_a_month_materialized_afresh_after_a_finished_chain_is_retrained_again(
        instance: dg.DagsterInstance, tmp_path: Path) -> None:
    """Run keys are never reused by Dagster: a later chain of the same month needs keys of its own."""
    defs = make_defs(tmp_path)
    first = score(instance, MONTH, fid=500.0)
    (request,), cursor = tick(defs, instance, None)
    # Months later the month is re-ingested and trained from scratch (attempt 1) and fails again.
    again = score(instance, MONTH, fid=450.0)
    (second_request,), _ = tick(defs, instance, cursor)
    assert second_request.run_key != request.run_key
    assert second_request.tags[PARENT_RUN_TAG] == again != first
    assert second_request.tags[ATTEMPT_TAG] == "2"


def test_a_blind_gate_is_not_retrained_and_the_notifier_blames_the_metric(
        instance: dg.DagsterInstance, tmp_path: Path, webhook: WebhookReceiver) -> None:
    defs = make_defs(tmp_path, webhook.url)
    run_id = score(instance, MONTH, fid=500.0, status="not_discriminative")  # attempt 1 of 3: attempts left

    requests, cursor = tick(defs, instance, None)

    assert requests == [] and cursor is not None
    (message,) = webhook.received
    text = message["text"]
    assert MONTH in text and "NOT DISCRIMINATIVE" in text and "metric, not the model" in text
    assert "no retrain" in text and "random_conv" in text and f"http://ui.test/runs/{run_id}" in text
    # The decision itself, without Dagster: "blind", no run request.
    metadata = {"passed": False, "status": "not_discriminative", "attempt": 1, "max_attempts": 3,
                "config": TrainConfig(**TINY).to_dict()}
    decision = decide_retrain(metadata, MONTH, "run-1")
    assert decision.action == "blind" and decision.run_request is None
    # Control: the same event with status failed is retrained.
    assert decide_retrain({**metadata, "status": "failed"}, MONTH, "run-1").action == "retrain"


def test_a_memorized_month_is_retrained_with_the_memorization_rule(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    from gan_assets.model.mutation import MEMORIZATION_RULE

    defs = make_defs(tmp_path)
    base = TrainConfig(**{**TINY, "steps": 40, "diffaugment": ""})  # the rule's augmentation shows in the diff
    score(instance, MONTH, fid=10.0, status="memorized", config=base.to_dict())  # FID fine, but copies

    (request,), _ = tick(defs, instance, None)

    mutated = request.run_config["resources"]["gan_config"]["config"]
    assert mutated["steps"] == 30 and mutated["diffaugment"] == "translation,cutout"
    assert (mutated["lr_g"], mutated["lr_d"]) == (base.lr_g, base.lr_d)  # not the quality ladder
    assert request.tags[ATTEMPT_TAG] == "2" and request.tags[sensors.MUTATION_TAG] == MEMORIZATION_RULE.describe()
    assert json.loads(request.tags[CONFIG_DIFF_TAG]) == {"diffaugment": ["", "translation,cutout"], "steps": [40, 30]}


def test_memorized_on_the_last_attempt_is_rejected_and_notified_as_memorization(
        instance: dg.DagsterInstance, tmp_path: Path, webhook: WebhookReceiver) -> None:
    defs = make_defs(tmp_path, webhook.url)
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=FID_SCORE_KEY, partition=MONTH,
        metadata={"fid": 10.0, "threshold": 50.0, "passed": False, "status": "rejected", "memorized": True,
                  "near_copy_fraction": 0.5, "attempt": 3, "max_attempts": 3,
                  "config": dg.MetadataValue.json(TrainConfig(**TINY).to_dict())},
    ))
    requests, _ = tick(defs, instance, None)
    assert requests == []
    (message,) = webhook.received
    assert "REJECTED" in message["text"] and "reproduced training images" in message["text"]


def test_a_rejection_reported_as_an_observation_is_notified_once(instance: dg.DagsterInstance, tmp_path: Path,
                                                                 webhook: Any) -> None:
    """fid_score fails its step for a month out of attempts and reports its score as an observation."""
    defs = make_defs(tmp_path, webhook.url)
    train = TrainConfig(**TINY)
    instance.report_runless_asset_event(dg.AssetObservation(
        asset_key=FID_SCORE_KEY, partition="2026-04-01",
        metadata={"fid": 90.0, "threshold": 50.0, "passed": False, "status": "rejected", "attempt": 3,
                  "max_attempts": 3, "config": dg.MetadataValue.json(train.to_dict())},
    ))
    requests, cursor = tick(defs, instance, None)
    assert requests == [] and len(webhook.received) == 1
    assert "2026-04-01 REJECTED: FID 90.0 did not meet the threshold 50.0 in 3 of 3" in webhook.received[0]["text"]
    assert tick(defs, instance, cursor)[0] == [] and len(webhook.received) == 1


def test_a_retrain_request_sets_only_the_training_config_never_the_bar(
        instance: dg.DagsterInstance, tmp_path: Path) -> None:
    """Even from a config stored by an earlier version, which held the bar beside the training fields."""
    defs = make_defs(tmp_path)
    stored = {**TrainConfig(**TINY).to_dict(), "fid_threshold": 1e9, "max_attempts": 10, "relative_factor": 1e6,
              "threshold_rule": "absolute", "min_separation": 1.0, "memorization_threshold": 0.9,
              "max_near_copy_fraction": 1.0, "threshold_mode": "absolute", "fid_num_fake": 16, "num_samples": 8}
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=FID_SCORE_KEY, partition=MONTH,
        metadata={"fid": 500.0, "passed": False, "status": "failed", "attempt": 1, "max_attempts": 3,
                  "config": dg.MetadataValue.json(stored)}))

    (request,), _ = tick(defs, instance, None)

    assert set(request.run_config) == {"resources"} and set(request.run_config["resources"]) == {"gan_config"}
    sent = request.run_config["resources"]["gan_config"]["config"]
    assert set(sent) == set(TrainConfig.model_fields)
    text = json.dumps(request.run_config) + json.dumps(dict(request.tags))
    assert [name for name in EvaluationConfig.model_fields if name in text] == []
    assert json.loads(request.tags[CONFIG_DIFF_TAG]) == {"steps": [4, 6]}  # the dropped bar is no change


@pytest.mark.parametrize(("deployment_max", "action"), [(2, "rejected"), (5, "retrain")])
def test_max_attempts_comes_from_the_evaluation_config_not_the_event(
        instance: dg.DagsterInstance, tmp_path: Path, deployment_max: int, action: str) -> None:
    """An event (or a stored config) claiming more attempts cannot extend the loop; the deployment's bar decides."""
    defs = make_defs(tmp_path, bar={"max_attempts": deployment_max})
    claims = {**TrainConfig(**TINY).to_dict(), "max_attempts": 10}
    metadata = {"fid": 500.0, "passed": False, "status": "failed", "attempt": 2, "max_attempts": 10,
                "config": claims}
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=FID_SCORE_KEY, partition=MONTH,
        metadata={**metadata, "config": dg.MetadataValue.json(claims)}))

    requests, _ = tick(defs, instance, None)

    assert len(requests) == (1 if action == "retrain" else 0)
    decision = decide_retrain(metadata, MONTH, "run-1", bar=EvaluationConfig(max_attempts=deployment_max))
    assert decision.action == action and decision.max_attempts == deployment_max


def test_a_retrain_past_the_steps_bound_is_refused_and_reported_not_clamped() -> None:
    near = TrainConfig(**{**TINY, "steps": 900_000}).to_dict()
    metadata = {"passed": False, "status": "failed", "attempt": 1, "config": near}
    decision = decide_retrain(metadata, MONTH, "run-1")
    assert decision.action == "stuck" and decision.run_request is None
    assert "gan_config.steps=1350000 is invalid" in decision.reason
    # Control: inside the bound the same event is retrained.
    inside = {**metadata, "config": {**near, "steps": 600_000}}
    assert decide_retrain(inside, MONTH, "run-1").action == "retrain"
