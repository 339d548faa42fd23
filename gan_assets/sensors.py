"""Sensors: the retrain loop on FID failure, and notifications of failed runs."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

import dagster as dg

from gan_assets.assets.common import ATTEMPT_TAG, CONFIG_DIFF_TAG, PARENT_RUN_TAG
from gan_assets.jobs import retrain_job
from gan_assets.metrics.evaluation import STATUSES
from gan_assets.model.config import ConfigError, config_diff
from gan_assets.model.mutation import (
    MutationCause,
    MutationPolicy,
    MutationPolicyError,
    mutate_config,
    policy_from_env,
    rule_for_cause,
)
from gan_assets.report.sinks import run_failure_message
from gan_assets.resources import Notifier

FID_SCORE_KEY = dg.AssetKey("fid_score")
MUTATION_TAG = "gan/mutation"
# Events handled per tick; the rest wait for the next tick (the cursor only moves past what
# was handled), so a backfill of many months never makes one tick slow.
RETRAIN_EVENTS_PER_TICK = 200


@dataclass(frozen=True)
class RetrainDecision:
    """What one fid_score materialization asks of the loop."""

    # "retrain" | "passed" | "rejected" | "blind" (the gate cannot discriminate: the metric is at
    # fault, a retrain cannot help; a person is told) | "stuck" (failed, but no retrain can be
    # built: a person must look) | "skip" (not a fid_score contract event)
    action: str
    partition: str | None
    attempt: int
    max_attempts: int
    reason: str
    run_request: dg.RunRequest | None = None


def _metadata_value(metadata: dict[str, Any], name: str) -> Any:
    value = metadata.get(name)
    return getattr(value, "value", value)


def _stored_fid_config(artifact_store: Any, partition: str, attempt: int) -> dict[str, Any] | None:
    """The config recorded in the stored fid_score JSON, if that artifact is of this attempt."""
    try:
        record = json.loads(artifact_store.object_store().get(f"fid_score/{partition}.json"))
    except (FileNotFoundError, ValueError, AttributeError):
        return None
    # A later attempt may have overwritten the artifact; its config is not the one that failed.
    if int(record.get("attempt", attempt)) != attempt or not isinstance(record.get("config"), dict):
        return None
    return record["config"]


def decide_retrain(
    metadata: dict[str, Any],
    partition: str | None,
    run_id: str,
    artifact_store: Any = None,
    policy: MutationPolicy | None = None,
) -> RetrainDecision:
    """Turn one fid_score event (its metadata, partition, run) into the loop's next step.

    Failing with attempts left -> a RunRequest of ``retrain_job`` for the same month, whose
    ``gan_config`` is the failing attempt's config mutated by ``policy`` (default: the one named by
    ``GAN_ASSETS_MUTATION_POLICY``, else the default in ``gan_assets.model.mutation``); a
    ``memorized`` month is mutated by the memorization rule instead. A ``not_discriminative``
    month is never retrained ("blind"): the controls showed the metric cannot tell real images
    from garbage, and no training config changes that.
    """
    policy = policy or policy_from_env()
    passed = _metadata_value(metadata, "passed")
    status = _metadata_value(metadata, "status")
    attempt = int(_metadata_value(metadata, "attempt") or 1)
    config = _metadata_value(metadata, "config")
    if not isinstance(config, dict) and partition is not None and artifact_store is not None:
        config = _stored_fid_config(artifact_store, partition, attempt)
    max_attempts_raw = _metadata_value(metadata, "max_attempts")
    if max_attempts_raw is None and isinstance(config, dict):
        max_attempts_raw = config.get("max_attempts")
    max_attempts = int(max_attempts_raw or 0)

    def decision(action: str, reason: str, request: dg.RunRequest | None = None) -> RetrainDecision:
        return RetrainDecision(action, partition, attempt, max_attempts, reason, request)

    if partition is None:
        return decision("skip", "unpartitioned fid_score event: the retrain loop works per month")
    if passed is None:
        return decision("skip", "event has no 'passed' metadata (not written by the fid_score asset)")
    if passed:
        return decision("passed", f"attempt {attempt} passed")
    if status is not None and status not in STATUSES:
        return decision("stuck", f"event status {status!r} is not one of {STATUSES}")
    if status == "not_discriminative":
        return decision("blind", f"attempt {attempt}: the gate is not discriminative (the controls show the "
                                 "metric cannot tell real images from garbage); retraining cannot fix the metric")
    if max_attempts < 1:
        return decision("stuck", "event has no 'max_attempts' metadata and no stored config")
    if attempt >= max_attempts:
        return decision("rejected", f"attempt {attempt} of {max_attempts} failed: no attempts left")
    if not isinstance(config, dict):
        return decision("stuck", f"no config recorded for attempt {attempt} (event metadata 'config' "
                                f"or fid_score/{partition}.json): cannot mutate it")
    next_attempt = attempt + 1
    cause: MutationCause = "memorized" if status == "memorized" else "quality"
    try:
        mutated = mutate_config(config, next_attempt, policy, cause=cause).to_dict()
    except (ConfigError, MutationPolicyError, TypeError, ValueError) as err:
        return decision("stuck", f"cannot mutate attempt {attempt}'s config: {err}")
    old = dict(config)
    diff = config_diff(old, mutated)
    tags = {
        ATTEMPT_TAG: str(next_attempt),
        CONFIG_DIFF_TAG: json.dumps(diff, sort_keys=True),
        MUTATION_TAG: rule_for_cause(next_attempt, policy, cause).describe(),
    }
    if run_id:
        tags[PARENT_RUN_TAG] = run_id
    request = dg.RunRequest(
        run_key=retrain_run_key(partition, next_attempt, run_id),
        run_config={"resources": {"gan_config": {"config": mutated}}},
        tags=tags,
        partition_key=partition,
    )
    why = "memorized training images" if cause == "memorized" else "failed"
    return decision("retrain", f"attempt {attempt} of {max_attempts} {why}; retraining as attempt "
                               f"{next_attempt} with {diff}", request)


def blind_gate_message(decision: RetrainDecision, metadata: dict[str, Any], run_url: str = "") -> str:
    """The notification for a month whose gate cannot discriminate: the metric is at fault."""
    extractor = _metadata_value(metadata, "extractor") or "the configured extractor"
    separation = _metadata_value(metadata, "separation")
    detail = f" (lowest negative control / real images FID = {separation:.3g})" if isinstance(separation, float) else ""
    return (f"gan-assets: month {decision.partition} NOT DISCRIMINATIVE: the FID gate with {extractor} cannot "
            f"tell the month's real images from its negative controls{detail}. The metric, not the model, is at "
            "fault, so no retrain was requested. Choose another feature extractor (fid_extractor) or score more "
            f"images, then re-materialize fid_score. {run_url}").strip()


def retrain_run_key(partition: str, attempt: int, parent_run_id: str | None) -> str:
    """``<month>:<attempt>:<failing run>``: the same failure is never requested twice, yet a month
    that is materialized afresh later and fails again starts a new chain (Dagster never reuses a
    run key, so ``<month>:<attempt>`` alone would silently skip every later chain of that month)."""
    return f"{partition}:{attempt}:{parent_run_id}" if parent_run_id else f"{partition}:{attempt}"


def _retrain_on_fid_failure(context: dg.MultiAssetSensorEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    """Handle every fid_score materialization since the cursor, oldest first."""
    # A malformed GAN_ASSETS_MUTATION_POLICY fails the tick (red in the UI) before any event is
    # consumed, so nothing is lost: fix the variable and the next tick handles the backlog.
    policy = policy_from_env()
    records = list(context.materialization_records_for_key(FID_SCORE_KEY, limit=RETRAIN_EVENTS_PER_TICK))
    notifier = context.resources.notifier
    # Only a month's newest score in this batch counts: an older failure that was already
    # followed by another attempt (or a manual re-run) must not trigger a retrain of its own.
    newest = {record.partition_key: record.storage_id for record in records}
    requests: list[dg.RunRequest] = []
    for record in records:
        where = f"fid_score {record.partition_key} (run {record.run_id or 'none'}, event {record.storage_id})"
        if newest[record.partition_key] != record.storage_id:
            context.log.info(f"{where}: superseded by a newer fid_score of the same month")
            context.advance_cursor({FID_SCORE_KEY: record})
            continue
        materialization = record.asset_materialization
        metadata = dict(materialization.metadata) if materialization else {}
        decision = decide_retrain(
            metadata, record.partition_key, record.run_id, context.resources.artifact_store, policy)
        if decision.action == "retrain" and decision.run_request is not None:
            context.log.info(f"{where}: {decision.reason}")
            requests.append(decision.run_request)
        elif decision.action == "rejected":
            fid = _metadata_value(metadata, "fid")
            threshold = _metadata_value(metadata, "threshold")
            why = (f"its generator still reproduced training images (near-copy fraction "
                   f"{_metadata_value(metadata, 'near_copy_fraction')})"
                   if _metadata_value(metadata, "memorized") else f"FID {fid} did not meet the threshold {threshold}")
            text = (f"gan-assets: month {decision.partition} REJECTED: {why} in {decision.attempt} of "
                    f"{decision.max_attempts} attempts. "
                    f"{notifier.run_url(record.run_id) if record.run_id else ''}").strip()
            context.log.warning(text)
            notifier.notify(text)
        elif decision.action == "blind":
            text = blind_gate_message(decision, metadata, notifier.run_url(record.run_id) if record.run_id else "")
            context.log.error(text)
            notifier.notify(text)
        elif decision.action == "stuck":
            text = (f"gan-assets: month {decision.partition} failed attempt {decision.attempt} but cannot be "
                    f"retrained automatically: {decision.reason}. "
                    f"{notifier.run_url(record.run_id) if record.run_id else ''}").strip()
            context.log.error(text)
            notifier.notify(text)
        elif decision.action == "skip":
            context.log.warning(f"{where}: not retrained: {decision.reason}")
        else:
            context.log.debug(f"{where}: {decision.reason}")
        # Advance past exactly what was handled (the rest of a big backfill waits a tick).
        context.advance_cursor({FID_SCORE_KEY: record})
    if not requests:
        return dg.SkipReason(f"{len(records)} new fid_score event(s), none needs a retrain")
    return requests


# Dagster marks multi_asset_sensor "superseded" by Declarative Automation, but says to use it when
# a specific job must be targeted: declarative automation cannot launch a run with a mutated
# run config, which is the whole point here. It is the asset sensor that sees every event.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Class `MultiAssetSensorDefinition` is superseded")
    retrain_on_fid_failure = (
        dg.multi_asset_sensor(
            monitored_assets=[FID_SCORE_KEY],
            job=retrain_job,
            name="retrain_on_fid_failure",
            minimum_interval_seconds=30,
            default_status=dg.DefaultSensorStatus.RUNNING,
            required_resource_keys={"notifier", "artifact_store"},
            description=(
                "Retrains a month whose fid_score failed, with a mutated gan_config (the retrain ladder, or "
                "the memorization rule for a memorized month), until it passes or max_attempts is reached; "
                "then the month is rejected. A month whose gate is not discriminative is never retrained: "
                "the notifier says the metric is at fault."
            ),
        )(_retrain_on_fid_failure)
    )


PARTITION_TAG = "dagster/partition"


def failure_text(context: dg.RunFailureSensorContext, notifier: Notifier) -> str:
    """The chat line for one failed run: which job, which month, why (short), link to the run."""
    run = context.dagster_run
    detail = (context.failure_event.message if context.failure_event else "") or "run failed"
    return run_failure_message(run.job_name, run.tags.get(PARTITION_TAG), detail, notifier.run_url(run.run_id))


@dg.run_failure_sensor(
    name="notify_on_run_failure",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts a short message (job, month, link to the run) to the notifier webhook when a run fails.",
)
def notify_on_run_failure(context: dg.RunFailureSensorContext, notifier: Notifier) -> None:
    """Send one message per failed run; a notifier outage is logged, never raised."""
    text = failure_text(context, notifier)
    if notifier.notify(text):
        context.log.info(f"notified failure of run {context.dagster_run.run_id}")
    elif notifier.resolved_webhook_url():
        context.log.warning(f"notifier did not accept the failure message of run {context.dagster_run.run_id}")
