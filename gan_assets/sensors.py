"""Sensors: the retrain loop on FID failure, notifications, and the landing zone observed.

The landing zone, observed (``landing_zone_sensor``): new or changed files update the index,
and their months run.

A sensor (not declarative automation) because what it requests must be a specific job with
its tags (``gan_pipeline`` carries the training tag the run queue limits), each request needs a
run key derived from the data (the month's fingerprint, so the same files are never run twice),
and each tick must say in the UI what it decided and why.

Each tick lists the zone (no file is read) and compares it with the stored index:
1. The listing differs from the index (files added, replaced or deleted): request
   ``index_landing_zone``, which reads only those files and records the changed months' data
   versions on ``dicom_source`` (the UI shows those months unsynced).
2. The index matches the zone: a partition month whose fingerprint changed since the sensor
   last looked, and differs from the fingerprint its latest ``dicom_manifest`` was built from,
   gets a ``gan_pipeline`` run. The first tick only records the fingerprints: switching the
   sensor on for an archive of years never starts a backfill by itself (launch one from the UI).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pyarrow as pa

from gan_assets.assets.common import ATTEMPT_TAG, CONFIG_DIFF_TAG, PARENT_RUN_TAG
from gan_assets.dicom.index import EMPTY_MONTH, check_index, indexed_files, listed_as_indexed, month_fingerprints
from gan_assets.dicom.landing_zone import LandingZone
from gan_assets.dicom.pseudonym import file_ref
from gan_assets.jobs import gan_pipeline, index_job, retrain_job
from gan_assets.metrics.evaluation import STATUSES
from gan_assets.model.config import ConfigError, EvaluationConfig, TrainConfig, config_diff
from gan_assets.model.mutation import (
    MutationCause,
    MutationPolicy,
    MutationPolicyError,
    mutate_config,
    rule_for_cause,
)
from gan_assets.partitions import partition_months, partition_of
from gan_assets.report.sinks import delivery_message, run_failure_message
from gan_assets.resources import DicomSource, EvaluationBar, Notifier, RetrainPolicy
from gan_assets.storage import StorageFormatError

FID_SCORE_KEY = dg.AssetKey("fid_score")
INDEX_ASSET_KEY = dg.AssetKey("landing_zone_index")
TRAINED_GENERATOR_KEY = dg.AssetKey("trained_generator")
MUTATION_TAG = "gan/mutation"
# Why a sensor asked for a run, shown with the run and in the tick list.
REASON_TAG = "gan/reason"
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


def recorded_fid_config(instance: dg.DagsterInstance, partition: str, attempt: int) -> dict[str, Any] | None:
    """The config an earlier fid_score event of this month and attempt recorded (newest first), if any."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=FID_SCORE_KEY, asset_partitions=[partition]),
        limit=RETRAIN_EVENTS_PER_TICK, ascending=False).records
    for record in records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        config = _metadata_value(metadata, "config")
        # A later attempt's config is not the one that failed.
        if isinstance(config, dict) and int(_metadata_value(metadata, "attempt") or 1) == attempt:
            return config
    return None


def decide_retrain(
    metadata: dict[str, Any],
    partition: str | None,
    run_id: str,
    recorded_config: dict[str, Any] | None = None,
    policy: MutationPolicy | None = None,
    bar: EvaluationConfig | None = None,
) -> RetrainDecision:
    """Turn one fid_score event (its metadata, partition, run) into the loop's next step.

    Failing with attempts left (``bar.max_attempts``, the deployment's evaluation config; default
    EvaluationConfig()) -> a RunRequest of ``retrain_job`` for the same month that sets only
    ``gan_config``: the failing attempt's training config mutated by ``policy`` (default: the
    ladder in ``gan_assets.model.mutation``); a ``memorized`` month is mutated by the memorization
    rule instead. The request carries no evaluation value, so a retrain is judged by the same bar.
    A ``not_discriminative`` month is never retrained ("blind"): the controls showed the metric
    cannot tell real images from garbage, and no training config changes that. ``recorded_config``
    stands in for an event without a config (see :func:`recorded_fid_config`).
    """
    bar = bar or EvaluationConfig()
    # A diverged training (trained_generator's observation) is a failed attempt with its own remedy.
    diverged = bool(_metadata_value(metadata, "diverged"))
    passed = False if diverged else _metadata_value(metadata, "passed")
    status = "diverged" if diverged else _metadata_value(metadata, "status")
    attempt = int(_metadata_value(metadata, "attempt") or 1)
    config = _metadata_value(metadata, "config")
    if not isinstance(config, dict):
        config = recorded_config
    max_attempts = bar.max_attempts

    def decision(action: str, reason: str, request: dg.RunRequest | None = None) -> RetrainDecision:
        return RetrainDecision(action, partition, attempt, max_attempts, reason, request)

    if partition is None:
        return decision("skip", "unpartitioned fid_score event: the retrain loop works per month")
    if passed is None:
        return decision("skip", "event has no 'passed' metadata (not written by the fid_score asset)")
    if passed:
        return decision("passed", f"attempt {attempt} passed")
    if status is not None and status not in STATUSES and not diverged:
        return decision("stuck", f"event status {status!r} is not one of {STATUSES}")
    if status == "not_discriminative":
        return decision("blind", f"attempt {attempt}: the gate is not discriminative (the controls show the "
                                 "metric cannot tell real images from garbage); retraining cannot fix the metric")
    if attempt >= max_attempts:
        return decision("rejected", f"attempt {attempt} of {max_attempts} failed: no attempts left")
    if not isinstance(config, dict):
        return decision("stuck", f"no config recorded for attempt {attempt} (event metadata 'config', here or "
                                 "in an earlier fid_score event of the month): cannot mutate it")
    next_attempt = attempt + 1
    cause: MutationCause = "diverged" if diverged else ("memorized" if status == "memorized" else "quality")
    try:
        # Read as a training config: a config stored by an earlier version also held the bar,
        # which must not travel into the next run.
        old = TrainConfig.from_dict(dict(config)).to_dict()
        mutated = mutate_config(old, next_attempt, policy, cause=cause).to_dict()
    except (ConfigError, MutationPolicyError, TypeError, ValueError) as err:
        return decision("stuck", f"cannot mutate attempt {attempt}'s config: {err}")
    diff = config_diff(old, mutated)
    why = {"memorized": "memorized training images", "diverged": "diverged in training"}.get(cause, "failed")
    tags = {
        ATTEMPT_TAG: str(next_attempt),
        CONFIG_DIFF_TAG: json.dumps(diff, sort_keys=True),
        MUTATION_TAG: rule_for_cause(next_attempt, policy, cause).describe(),
        REASON_TAG: f"attempt {attempt} of {max_attempts} {why}",
    }
    if run_id:
        tags[PARENT_RUN_TAG] = run_id
    request = dg.RunRequest(
        run_key=retrain_run_key(partition, next_attempt, run_id),
        run_config={"resources": {"gan_config": {"config": mutated}}},
        tags=tags,
        partition_key=partition,
    )
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


def _read_cursor(raw: str | None) -> dict[str, int]:
    """{"fid_score", "verdict", "diverged": storage id} handled so far (0 = from the start): fid_score
    materializations, fid_score observations (a month rejected, whose step failed) and
    trained_generator observations (a diverged training)."""
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        value = {}
    if not isinstance(value, dict):
        value = {}
    return {name: int(value.get(name) or 0) for name in ("fid_score", "verdict", "diverged")}


def _retrain_on_fid_failure(context: dg.SensorEvaluationContext, notifier: Notifier,
                            evaluation_config: EvaluationBar, retrain_policy: RetrainPolicy) -> dg.SensorResult:
    """Handle every fid_score materialization, rejection verdict and diverged training since the cursor, oldest first."""
    # A malformed mutation policy fails the tick (red in the UI) before any event is consumed,
    # so nothing is lost: fix the policy and the next tick handles the backlog.
    policy = retrain_policy.policy()
    bar = evaluation_config.to_evaluation_config()
    cursor = _read_cursor(context.cursor)
    scores = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=FID_SCORE_KEY, after_storage_id=cursor["fid_score"] or None),
        limit=RETRAIN_EVENTS_PER_TICK, ascending=True).records
    verdicts = context.instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=FID_SCORE_KEY, after_storage_id=cursor["verdict"] or None),
        limit=RETRAIN_EVENTS_PER_TICK, ascending=True).records
    observed = context.instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=TRAINED_GENERATOR_KEY, after_storage_id=cursor["diverged"] or None),
        limit=RETRAIN_EVENTS_PER_TICK, ascending=True).records
    records = sorted([("fid_score", r) for r in scores] + [("verdict", r) for r in verdicts]
                     + [("diverged", r) for r in observed], key=lambda item: item[1].storage_id)
    # Only a month's newest event in this batch counts: an older failure that was already
    # followed by another attempt (or a manual re-run) must not trigger a retrain of its own.
    newest = {record.partition_key: record.storage_id for kind, record in records
              if kind != "diverged" or _is_divergence(record)}
    requests: list[dg.RunRequest] = []
    decided: list[str] = []
    for kind, record in records:
        cursor[kind] = max(cursor[kind], record.storage_id)
        event = record.asset_materialization if kind == "fid_score" else record.event_log_entry.asset_observation
        metadata = dict(event.metadata) if event else {}
        if kind == "diverged" and not _is_divergence(record):
            continue  # another observation of trained_generator
        what = {"fid_score": "fid_score", "verdict": "fid_score verdict", "diverged": "diverged training"}[kind]
        where = f"{what} {record.partition_key} (run {record.run_id or 'none'}, event {record.storage_id})"
        if newest.get(record.partition_key) != record.storage_id:
            context.log.info(f"{where}: superseded by a newer event of the same month")
            continue
        recorded = None
        if not isinstance(_metadata_value(metadata, "config"), dict) and record.partition_key:
            recorded = recorded_fid_config(context.instance, record.partition_key,
                                           int(_metadata_value(metadata, "attempt") or 1))
        decision = decide_retrain(metadata, record.partition_key, record.run_id, recorded, policy, bar)
        run_url = notifier.run_url(record.run_id) if record.run_id else ""
        if decision.action == "retrain" and decision.run_request is not None:
            context.log.info(f"{where}: {decision.reason}")
            requests.append(decision.run_request)
        elif decision.action == "rejected":
            text = f"gan-assets: month {decision.partition} REJECTED: {_rejection_cause(metadata)} in " \
                   f"{decision.attempt} of {decision.max_attempts} attempts. {run_url}".strip()
            context.log.warning(text)
            notifier.notify(text)
        elif decision.action == "blind":
            text = blind_gate_message(decision, metadata, run_url)
            context.log.error(text)
            notifier.notify(text)
        elif decision.action == "stuck":
            text = (f"gan-assets: month {decision.partition} failed attempt {decision.attempt} but cannot be "
                    f"retrained automatically: {decision.reason}. {run_url}").strip()
            context.log.error(text)
            notifier.notify(text)
        elif decision.action == "skip":
            context.log.warning(f"{where}: not retrained: {decision.reason}")
        else:
            context.log.debug(f"{where}: {decision.reason}")
        if decision.action != "retrain":
            decided.append(f"{record.partition_key}: {decision.action} ({decision.reason})")
    new_cursor = json.dumps(cursor, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=new_cursor)
    summary = "; ".join(decided[-5:]) if decided else "no new fid_score or diverged training"
    return dg.SensorResult(cursor=new_cursor, skip_reason=dg.SkipReason(
        f"{len(records)} new event(s), no retrain needed: {summary}"))


def _is_divergence(record: Any) -> bool:
    observation = record.event_log_entry.asset_observation if record.event_log_entry else None
    return bool(observation and _metadata_value(dict(observation.metadata), "diverged"))


def _rejection_cause(metadata: dict[str, Any]) -> str:
    if _metadata_value(metadata, "diverged"):
        return f"training diverged (step {_metadata_value(metadata, 'step')}) even with lowered learning rates"
    if _metadata_value(metadata, "memorized"):
        return (f"its generator still reproduced training images (near-copy fraction "
                f"{_metadata_value(metadata, 'near_copy_fraction')})")
    return f"FID {_metadata_value(metadata, 'fid')} did not meet the threshold {_metadata_value(metadata, 'threshold')}"


retrain_on_fid_failure = dg.sensor(
    name="retrain_on_fid_failure",
    job=retrain_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Retrains a month whose fid_score failed, or whose training diverged, with a mutated gan_config (the "
        "retrain ladder; the memorization rule for a memorized month; halved learning rates after a divergence), "
        "until it passes or max_attempts is reached; then the month is rejected and the notifier told. A month "
        "whose gate is not discriminative is never retrained: the notifier says the metric is at fault."
    ),
)(_retrain_on_fid_failure)


PARTITION_TAG = "dagster/partition"
# The blocking gate's step: a run that failed only there is the retrain loop's business, and the
# retrain sensor sends the message that matters (retrain requested, rejected, blind).
GATE_CHECK_STEP = "fid_score_fid_within_threshold"


def failed_steps(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    return {record.event_log_entry.step_key for record in records if record.event_log_entry.step_key}


def _loop_verdict_in(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run stopped on a verdict the retrain loop reports: a diverged training, or a
    month rejected (out of attempts), each recorded as an observation."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION).records
    for record in records:
        observation = record.event_log_entry.asset_observation
        metadata = dict(observation.metadata) if observation is not None else {}
        if observation is not None and observation.asset_key == TRAINED_GENERATOR_KEY \
                and _metadata_value(metadata, "diverged"):
            return True
        if observation is not None and observation.asset_key == FID_SCORE_KEY \
                and _metadata_value(metadata, "status") == "rejected":
            return True
    return False


def failure_text(context: dg.RunFailureSensorContext, notifier: Notifier) -> str:
    """The chat line for one failed run: which job, which month, why (short), link to the run."""
    run = context.dagster_run
    detail = (context.failure_event.message if context.failure_event else "") or "run failed"
    return run_failure_message(run.job_name, run.tags.get(PARTITION_TAG), detail, notifier.run_url(run.run_id))


@dg.run_failure_sensor(
    name="notify_on_run_failure",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts a short message (job, month, link to the run) to the notifier webhook when a run fails for "
    "another reason than the quality gate (a month stopped by the gate is reported by retrain_on_fid_failure: "
    "one message when it is rejected or blind, none per attempt).",
)
def notify_on_run_failure(context: dg.RunFailureSensorContext, notifier: Notifier) -> None:
    """Send one message per failed run, except a run stopped only by the quality gate; never raises."""
    run_id = context.dagster_run.run_id
    steps = failed_steps(context.instance, run_id)
    if steps and steps <= {GATE_CHECK_STEP}:
        context.log.info(f"run {run_id} stopped at the quality gate: retrain_on_fid_failure reports it")
        return
    if steps <= {TRAINED_GENERATOR_KEY.to_user_string(), FID_SCORE_KEY.to_user_string()} \
            and _loop_verdict_in(context.instance, run_id):
        context.log.info(f"run {run_id}: a diverged training or a rejected month: retrain_on_fid_failure reports it")
        return
    text = failure_text(context, notifier)
    if notifier.notify(text):
        context.log.info(f"notified failure of run {context.dagster_run.run_id}")
    elif notifier.resolved_webhook_url():
        context.log.warning(f"notifier did not accept the failure message of run {context.dagster_run.run_id}")


TRIGGER_TAG = "gan/trigger"
FINGERPRINT_TAG = "gan/data_fingerprint"
ZONE_SENSOR_SECONDS = 300


def listing_differences(entries: list[Any], index: pa.Table, key: bytes) -> dict[str, int]:
    """How the zone as listed differs from the index: {"new", "changed", "deleted"} counts."""
    indexed = indexed_files(index)
    new = changed = 0
    seen = set()
    for entry in entries:
        ref = file_ref(entry.relative_path, key)
        seen.add(ref)
        row = indexed.get(ref)
        if row is None:
            new += 1
        elif not listed_as_indexed(row, entry, key):
            changed += 1
    return {"new": new, "changed": changed, "deleted": len(set(indexed) - seen)}


def _manifest_fingerprint(instance: dg.DagsterInstance, partition: str) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("dicom_manifest"), asset_partitions=[partition]), limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("data_fingerprint")
    return str(getattr(value, "value", value)) if value is not None else None


@dg.sensor(
    name="landing_zone_sensor",
    jobs=[index_job, gan_pipeline],
    minimum_interval_seconds=ZONE_SENSOR_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches the landing zone: new, replaced or deleted files request index_landing_zone (only those files "
        "are read); a month whose files then changed gets a gan_pipeline run (run key: month and data fingerprint). "
        "The first tick records the months as they are; the monthly schedule stays for the regular run."
    ),
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, dicom_source: DicomSource) -> dg.SensorResult | dg.SkipReason:
    """List the zone, compare it with the index, and request what the difference calls for."""
    if context.instance.get_latest_materialization_event(INDEX_ASSET_KEY) is None:
        return dg.SkipReason("no landing_zone_index yet: materialize it (or any month) once; this sensor then keeps it current")
    try:
        # Through the IO manager, as a run would load it (its SHA-256 checked against the event log).
        index = check_index(context.repository_def.load_asset_value(
            INDEX_ASSET_KEY, python_type=pa.Table, instance=context.instance))
    except (StorageFormatError, ValueError, FileNotFoundError) as err:
        return dg.SkipReason(f"the stored index cannot be read ({err}); materialize landing_zone_index to rebuild it")
    key = dicom_source.key()
    entries = LandingZone(dicom_source.source_spec()).list_files()
    diff = listing_differences(entries, index, key)
    if any(diff.values()):
        # The run key is the state of the listing (every file's name, size and time, hashed): the
        # same zone is indexed once, and any other zone gets its own run.
        listing = hashlib.sha256("\n".join(sorted(
            f"{e.relative_path}|{e.size}|{e.mtime_ns}|{e.etag}" for e in entries)).encode("utf-8", "surrogatepass"))
        signature = listing.hexdigest()[:32]
        reason = f"{diff['new']} new, {diff['changed']} changed, {diff['deleted']} deleted file(s) since the index"
        context.log.info(reason)
        return dg.SensorResult(run_requests=[dg.RunRequest(
            job_name=index_job.name, run_key=f"index:{signature}", tags={TRIGGER_TAG: "landing_zone", "gan/reason": reason})])

    months = partition_months(context.instance)
    current = month_fingerprints(index, months)
    if context.cursor is None:
        return dg.SensorResult(cursor=json.dumps(current, sort_keys=True), skip_reason=dg.SkipReason(
            f"first look: {len(current)} month(s) with files recorded as they are; later changes will request runs"))
    seen: dict[str, str] = json.loads(context.cursor)
    requests: list[dg.RunRequest] = []
    notes: list[str] = []
    for month in sorted(set(current) | set(seen)):
        fingerprint = current.get(month, EMPTY_MONTH)
        if seen.get(month) == fingerprint or month not in months:
            continue
        partition = partition_of(month)
        if fingerprint == EMPTY_MONTH:
            notes.append(f"{partition}: its files were deleted; no run (nothing to train on)")
            continue
        if _manifest_fingerprint(context.instance, partition) == fingerprint:
            notes.append(f"{partition}: changed, but already ingested with these files")
            continue
        reason = f"{partition}: files added, replaced or deleted (fingerprint {fingerprint[:12]})"
        notes.append(reason)
        requests.append(dg.RunRequest(
            job_name=gan_pipeline.name, partition_key=partition, run_key=f"{partition}:{fingerprint}",
            tags={TRIGGER_TAG: "landing_zone", FINGERPRINT_TAG: fingerprint, "gan/reason": reason}))
    for note in notes:
        context.log.info(note)
    cursor = json.dumps({month: current.get(month, EMPTY_MONTH) for month in sorted(set(current) | set(seen))}, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(cursor=cursor, skip_reason=dg.SkipReason(
        "; ".join(notes) or f"the zone matches the index ({len(entries)} files); no month's files changed"))


@dg.asset_sensor(
    asset_key=dg.AssetKey("monthly_report"),
    name="notify_on_delivery",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts one message when a month is delivered (its monthly_report materialized): FID, threshold, "
    "KID, attempts and the link to the report.",
)
def notify_on_delivery(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry,
                       notifier: Notifier) -> dg.SkipReason:
    """One message per delivered month (each monthly_report materialization); never raises."""
    materialization = asset_event.asset_materialization
    partition = (asset_event.dagster_event.partition if asset_event.dagster_event else None) or ""
    metadata = dict(materialization.metadata) if materialization else {}
    text = delivery_message(
        partition, _metadata_value(metadata, "fid"), _metadata_value(metadata, "threshold"),
        _metadata_value(metadata, "kid_mean"), _metadata_value(metadata, "attempts"),
        str(_metadata_value(metadata, "report_html") or ""), notifier.asset_url("monthly_report", partition))
    sent = notifier.notify(text)
    context.log.info(text)
    return dg.SkipReason(f"{partition}: delivered; notification {'sent' if sent else 'not sent (no webhook set)'}")
