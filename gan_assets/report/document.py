"""The monthly report as data: building report.json, validating it, and the cross-month trend.

Plain Python (no Dagster): the asset in ``gan_assets.assets.reporting`` gathers the inputs and
calls :func:`build_report`; a notebook can call the same functions on stored artifacts.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import pandas as pd

from gan_assets import __version__
from gan_assets.dicom.reasons import count_reasons, reason_examples
from gan_assets.metrics.evaluation import STATUSES, FidScore

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
REPORT_ASSET = "monthly_report"
FID_ASSET = "fid_score"
# Months shown in the trend (the newest ones); older reports stay in storage.
TREND_MONTHS = 24


class ReportError(ValueError):
    """An input of the report is missing a field or the built report breaks its schema."""


def _number(value: Any) -> float | None:
    """A finite float, or None (strict JSON has no NaN/inf)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _jsonable(value: Any) -> Any:
    """Plain strict-JSON values: numpy scalars/arrays unwrapped, tuples as lists, NaN/inf as null."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


@functools.cache
def report_schema() -> dict[str, Any]:
    """The JSON schema of report.json (``gan_assets/report/report.schema.json``)."""
    text = resources.files("gan_assets.report").joinpath("report.schema.json").read_text()
    return json.loads(text)


def validate_report(report: Mapping[str, Any]) -> None:
    """Raise ReportError naming the failing field when ``report`` breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(report_schema())
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        raise ReportError(f"report.json breaks its schema at {where}: {first.message} ({len(errors)} error(s))")


def data_counts(manifest: pd.DataFrame, decode_rejects: list[Mapping[str, Any]] | None = None,
                landing_zone: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Files seen, accepted and rejected (by reason), and modalities of the accepted files.

    Rejects are grouped by the manifest's stable ``reason_code`` when it has one (the sentences
    carry per-file detail such as byte counts), with one example sentence per code. Files that
    passed the header scan but failed at decode (``decode_rejects``, from preprocessed_images)
    count as rejected too, so files seen = accepted + rejected. ``landing_zone`` is the zone-wide
    count from the index: ``{"files", "unassigned", "unassigned_by_reason"}``.
    """
    missing = {"status", "reason", "modality"} - set(manifest.columns)
    if missing:
        raise ReportError(f"dicom_manifest lacks column(s) {sorted(missing)}; re-materialize dicom_manifest")
    status = manifest["status"].astype(str)
    ok = manifest[status == "ok"]
    rejected = [*manifest[status != "ok"].to_dict("records"), *(decode_rejects or [])]
    accepted = int(len(ok)) - len(decode_rejects or [])
    modalities = ok["modality"].astype(str).replace("", "unknown").value_counts()
    extra = {"landing_zone": dict(landing_zone)} if landing_zone is not None else {}
    return {
        **extra,
        "files_seen": int(len(manifest)),
        "accepted": accepted,
        "rejected": int(len(manifest)) - accepted,
        "rejects_by_reason": count_reasons(rejected),
        "reject_examples": reason_examples(rejected),
        "modalities": {str(k): int(v) for k, v in sorted(modalities.items())},
    }


def most_common_modality(manifest: pd.DataFrame, default: str) -> str:
    """Modality of most accepted files of the month (ties: alphabetical), else ``default``."""
    if "modality" not in manifest.columns or manifest.empty:
        return default
    rows = manifest
    if "status" in manifest.columns:
        rows = manifest[manifest["status"].astype(str) == "ok"]
    values = [str(v).strip().upper() for v in rows["modality"] if str(v).strip() and str(v) != "nan"]
    if not values:
        return default
    counts = pd.Series(values).value_counts()
    best = int(counts.max())
    return sorted(str(k) for k, v in counts.items() if v == best)[0]


def attempt_entry(values: Mapping[str, Any], *, run_id: str | None = None,
                  materialized_at: str | None = None) -> dict[str, Any]:
    """One row of the attempts table from fid_score values (the artifact or its event metadata)."""
    status = str(values.get("status") or ("passed" if values.get("passed") else "failed"))
    diff = values.get("config_diff") or {}
    return {
        "attempt": _int(values.get("attempt")) or 1,
        "status": status if status in STATUSES else "failed",
        "passed": bool(values["passed"]) if values.get("passed") is not None else None,
        "fid": _number(values.get("fid")),
        "kid_mean": _number(values.get("kid_mean")),
        "threshold": _number(values.get("threshold")),
        "config_diff": _jsonable(diff) if isinstance(diff, Mapping) else {},
        "run_id": run_id,
        "materialized_at": materialized_at,
    }


def score_attempt_entry(score: FidScore) -> dict[str, Any]:
    """The attempts-table row of the month's current score (the artifact)."""
    return {
        "attempt": score.attempt,
        "status": score.status,
        "passed": score.passed,
        "fid": _number(score.fid),
        "kid_mean": _number(score.kid_mean),
        "threshold": _number(score.threshold),
        "config_diff": _jsonable(dict(score.config_diff)),
        "run_id": None,
        "materialized_at": None,
    }


def merge_attempts(history: Iterable[dict[str, Any]], current: dict[str, Any]) -> list[dict[str, Any]]:
    """Every attempt once (the latest record per attempt number wins), the current one included."""
    by_attempt: dict[int, dict[str, Any]] = {}
    for entry in history:  # oldest first
        by_attempt[entry["attempt"]] = entry
    latest = by_attempt.get(current["attempt"])
    if latest is None or (latest.get("fid") != current.get("fid")):
        # The artifact is newer than the event log knows (or there is no log): keep its values,
        # and what only the log has (run id, time) when it exists.
        merged = dict(current)
        for key, value in (latest or {}).items():
            if merged.get(key) is None:
                merged[key] = value
        by_attempt[current["attempt"]] = merged
    return [by_attempt[k] for k in sorted(by_attempt)]


def loss_summary(loss_history: Mapping[str, Sequence[float]] | None) -> dict[str, Any]:
    history = loss_history or {}
    steps, loss_d, loss_g = history.get("step") or [], history.get("loss_d") or [], history.get("loss_g") or []
    return {
        "logged_steps": len(steps),
        "final_loss_d": _number(loss_d[-1]) if loss_d else None,
        "final_loss_g": _number(loss_g[-1]) if loss_g else None,
    }



def trend_point(partition: str, values: Mapping[str, Any], source: str) -> dict[str, Any]:
    status = str(values.get("status") or ("passed" if values.get("passed") else "failed"))
    return {
        "partition": partition,
        "status": status if status in STATUSES else "failed",
        "fid": _number(values.get("fid")),
        "kid_mean": _number(values.get("kid_mean")),
        "threshold": _number(values.get("threshold")),
        "attempts": _int(values.get("attempt")) or 1,
        "source": source,
    }


def read_trend(earlier: Mapping[str, tuple[Mapping[str, Any], str]], partition: str,
               current: FidScore) -> list[dict[str, Any]]:
    """FID/KID per month up to ``partition``.

    ``earlier`` maps each earlier month to its recorded figures and their source: the month's
    report, else its latest fid_score event (rejected months have no report: the blocking check
    stopped the run before it). The caller reads them from the event log.
    """
    points: dict[str, dict[str, Any]] = {
        month: trend_point(month, values, source) for month, (values, source) in earlier.items() if month < partition
    }
    points[partition] = {
        "partition": partition, "status": current.status, "fid": _number(current.fid),
        "kid_mean": _number(current.kid_mean), "threshold": _number(current.threshold),
        "attempts": current.attempt, "source": REPORT_ASSET,
    }
    return [points[m] for m in sorted(points)][-TREND_MONTHS:]


def verdict(evaluation: Mapping[str, Any], status: str) -> str:
    """One sentence a person reads first."""
    fid, threshold = evaluation.get("fid"), evaluation.get("threshold")
    attempt, max_attempts = evaluation.get("attempt"), evaluation.get("max_attempts")
    score = f"FID {fid:.2f} vs threshold {threshold:.2f}" if fid is not None and threshold is not None else "no FID"
    tries = f"attempt {attempt} of {max_attempts}"
    if status == "passed":
        return f"Approved: {score} ({tries}); synthetic images delivered."
    if status == "rejected":
        return f"Rejected: {score}; retrain attempts exhausted ({tries})."
    if status == "not_discriminative":
        return (f"Not discriminative: the controls show the metric cannot tell real images from garbage "
                f"({tries}); the metric, not the model, must change.")
    if status == "memorized":
        return f"Memorized: the generator reproduces training images ({tries}); a retrain against copying may follow."
    return f"Failed: {score} ({tries}); a retrain may follow."


def build_report(
    *,
    partition: str,
    fid_score: FidScore,
    generator_attrs: Mapping[str, Any],
    sample_attrs: Mapping[str, Any],
    sample_objects: Mapping[str, Any],
    preview_data_uri: str,
    data: Mapping[str, Any],
    attempts: Sequence[dict[str, Any]],
    trend: Sequence[dict[str, Any]],
    timings: Mapping[str, Any],
    objects: Mapping[str, str],
    code_version: str,
    lineage: Mapping[str, Any] | None = None,
    generated_at: _dt.datetime | None = None,
) -> dict[str, Any]:
    """Assemble report.json from the month's artifacts (validated against the schema).

    ``code_version`` is the report asset's code version (``assets.common.code_version``): it
    covers every module the pipeline's assets import, so it names the code without asking git.

    ``lineage`` names what the delivered images come from: the promoted model (weights hash and
    object), the data (month fingerprint, images hash, training-window hash), the code version of
    each asset and the run of each stage.
    """
    score = fid_score
    status = score.status
    gate = score.gate
    evaluation = {
        "fid": _number(score.fid),
        "kid_mean": _number(score.kid_mean),
        "kid_std": _number(score.kid_std),
        "floor_fid": _number(score.floor_fid),
        "floor_kid": _number(score.floor_kid),
        "threshold": _number(score.threshold),
        "threshold_rule": score.threshold_rule,
        "passed": score.passed,
        "attempt": score.attempt,
        "max_attempts": score.max_attempts,
        "n_real": score.n_real,
        "n_fake": score.n_fake,
        "small_sample": score.small_sample,
        "extractor": score.extractor,
        "controls": [_jsonable(c.to_dict()) for c in score.controls],
        "gate": {
            "threshold": _number(gate.threshold),
            "rule": gate.rule,
            "discriminative": gate.discriminative,
            "separation": _number(gate.separation),
            "min_separation": _number(gate.min_separation),
            "reasons": list(gate.reasons),
        },
    }
    fingerprint = generator_attrs.get("data_fingerprint") or {}
    training_partitions = {str(k): int(v) for k, v in (fingerprint.get("partitions") or {}).items()}
    report = {
        "schema_version": SCHEMA_VERSION,
        "partition": partition,
        "generated_at": (generated_at or _dt.datetime.now(_dt.timezone.utc)).isoformat(timespec="seconds"),
        "status": status,
        "verdict": verdict(evaluation, status),
        "evaluation": evaluation,
        "memorization": _jsonable(score.memorization.to_dict()),
        "fingerprint": _jsonable(dict(score.fingerprint)),
        "configuration": _jsonable(generator_attrs.get("config") or dict(score.config)),
        "generated_images": {
            "count": int(sample_attrs.get("count", 0)),
            "seed": int(sample_attrs["seed"]),
            "image_size": _int(sample_attrs.get("image_size")),
            "encoding": _jsonable({k: sample_attrs[k] for k in ("encoding", "decode", "scale", "offset") if k in sample_attrs}),
            "objects": _jsonable(dict(sample_objects)),
            "preview": {"media_type": "image/png", "data_uri": preview_data_uri},
        },
        "data": {
            **_jsonable(dict(data)),
            "training_images": _int(fingerprint.get("n_images")),
            "training_partitions": training_partitions,
        },
        "training": {
            "attempt": _int(generator_attrs.get("attempt")) or 1,
            "device": str(generator_attrs.get("device") or "unknown"),
            **loss_summary(generator_attrs.get("loss_history")),
        },
        "attempts": _jsonable(list(attempts)),
        "trend": _jsonable(list(trend)),
        "timings": _jsonable(dict(timings)),
        "code_version": {"package": __version__, "code": code_version},
        "objects": dict(objects),
    }
    if lineage is not None:
        report["lineage"] = _jsonable(dict(lineage))
    validate_report(report)
    return report
