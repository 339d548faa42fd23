"""Step 6: the monthly report: report.json and a self-contained report.html.

FIDScore/KID go to CloudWatch from fid_score (evaluation), for every attempt, rejected ones too.
"""

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from gan_assets.assets.common import GROUP_DELIVERY, ArtifactStoreResource, code_version, stage
from gan_assets.assets import evaluation, generation, ingest, training
from gan_assets.dicom.index import EMPTY_MONTH, month_fingerprints, zone_summary
from gan_assets.model.history import ModelHistoryError, load_promoted
from gan_assets.storage.digest import arrays_sha256
from gan_assets.metrics.evaluation import FidScore
from gan_assets.partitions import month_of, monthly_partitions, partition_months
from gan_assets.report.document import (
    FID_ASSET,
    REPORT_ASSET,
    attempt_entry,
    build_report,
    data_counts,
    merge_attempts,
    read_trend,
    score_attempt_entry,
)
from gan_assets.report.html import render_report_html
from gan_assets.storage.images import data_uri, grid_png, markdown_image, preview_grid_png
from gan_assets.storage import ArrayBundle, TensorBundle
from gan_assets.storage.layout import SAMPLES, report_key, sample_grid_key, value_key

# What Dagster compares to show a materialization as unsynced after a code change (common.code_version).
CODE_VERSION = code_version(__name__)

# Real examples shown beside the synthetic grid (at most this many).
REAL_EXAMPLES = 16
# Newest events of an asset read for the trend (months x attempts, with room to spare).
EVENTS_READ = 10_000


def fid_score_history(instance: dg.DagsterInstance, partition: str) -> list[dict[str, Any]]:
    """Every fid_score materialization of this month (oldest first) as attempts-table rows."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(FID_ASSET), asset_partitions=[partition]),
        limit=1000,
        ascending=True,
    )
    entries = []
    for record in result.records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        values = {name: value.value for name, value in materialization.metadata.items()}
        stamp = _dt.datetime.fromtimestamp(record.timestamp, _dt.timezone.utc).isoformat(timespec="seconds")
        entries.append(attempt_entry(values, run_id=record.run_id or None, materialized_at=stamp))
    return entries


TREND_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("month", "string"), dg.TableColumn("status", "string"), dg.TableColumn("fid", "float"),
    dg.TableColumn("kid_mean", "float"), dg.TableColumn("threshold", "float"),
])


def _trend_table(trend: list[dict[str, Any]]) -> dg.TableMetadataValue:
    """FID, KID and threshold by month (a month scored without a number shows it empty)."""
    return dg.MetadataValue.table([
        dg.TableRecord({"month": month_of(point["partition"]), "status": point["status"], "fid": point["fid"],
                        "kid_mean": point["kid_mean"], "threshold": point["threshold"]})
        for point in trend
    ], schema=TREND_SCHEMA)


def recorded_months(instance: dg.DagsterInstance, partition: str) -> dict[str, tuple[dict[str, Any], str]]:
    """Each month before ``partition`` with its figures from the event log, for the trend: its latest
    monthly_report, else its latest fid_score event (a materialization, or a rejected month's verdict)."""
    found: dict[str, tuple[dict[str, Any], str]] = {}

    def keep(month: str | None, event: Any, source: str) -> None:
        if month and month < partition and event is not None and "status" in event.metadata:
            found[month] = ({name: value.value for name, value in event.metadata.items()}, source)

    scores = dg.AssetRecordsFilter(asset_key=dg.AssetKey(FID_ASSET))
    events = [(r.storage_id, r.partition_key, r.asset_materialization)
              for r in instance.fetch_materializations(scores, limit=EVENTS_READ).records]
    events += [(r.storage_id, r.partition_key, r.event_log_entry.asset_observation)
               for r in instance.fetch_observations(scores, limit=EVENTS_READ).records]
    for _, month, event in sorted(events, key=lambda item: item[0]):
        keep(month, event, FID_ASSET)
    reports = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(REPORT_ASSET)),
                                              limit=EVENTS_READ, ascending=True).records
    for record in reports:
        keep(record.partition_key, record.asset_materialization, REPORT_ASSET)
    return found


def _summary_markdown(report: dict[str, Any], preview: str) -> str:
    evaluation = report["evaluation"]
    lines = [
        f"**{month_of(report['partition'])}: {report['status'].upper()}**. {report['verdict']}",
        "",
        f"Attempts: {len(report['attempts'])} of {evaluation['max_attempts']}; "
        f"{report['generated_images']['count']} synthetic images (seed {report['generated_images']['seed']}).",
        "",
        preview,
    ]
    return "\n".join(lines)


def _lineage(context: dg.AssetExecutionContext, store: Any, partition: str, index: pa.Table,
             preprocessed_images: ArrayBundle, sample_attrs: dict[str, Any]) -> dict[str, Any]:
    """From the delivered images back to the exact model, data, code and runs (all by hash or id)."""
    try:
        promoted, _ = load_promoted(store, partition)  # verifies the weights against their hash
    except ModelHistoryError as err:
        raise dg.Failure(description=str(err)) from None
    month = month_of(partition)
    return {
        "model": {"attempt": promoted.attempt, "weights_sha256": promoted.weights_sha256,
                  "weights": store.uri(promoted.weights_key), "training_run_id": promoted.training_run_id},
        "data": {"month_fingerprint": month_fingerprints(index, [month]).get(month, EMPTY_MONTH),
                 "images_sha256": arrays_sha256(preprocessed_images.arrays),
                 "training_window_sha256": promoted.data_sha256},
        "code_versions": {"ingest": ingest.CODE_VERSION, "training": training.CODE_VERSION,
                          "evaluation": evaluation.CODE_VERSION, "generation": generation.CODE_VERSION,
                          "reporting": CODE_VERSION},
        "runs": {"training": promoted.training_run_id, "scoring": promoted.scoring_run_id,
                 "generation": str(sample_attrs.get("run_id", "")), "report": context.run_id},
    }


@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=monthly_partitions,
    **stage(GROUP_DELIVERY),
    ins={
        "fid_score": dg.AssetIn(),
        "generated_samples": dg.AssetIn(),
        "trained_generator": dg.AssetIn(),
        "dicom_manifest": dg.AssetIn(),
        "preprocessed_images": dg.AssetIn(),
        "landing_zone_index": dg.AssetIn(),
    },
    kinds={"html", "json"},
)
def monthly_report(
    context: dg.AssetExecutionContext,
    artifact_store: dg.ResourceParam[ArtifactStoreResource],
    fid_score: dict[str, Any],
    generated_samples: ArrayBundle,
    trained_generator: TensorBundle,
    dicom_manifest: pd.DataFrame,
    preprocessed_images: ArrayBundle,
    landing_zone_index: pa.Table,
) -> dg.MaterializeResult:
    """The month's report: report.json (scores, config, attempts, trend) and a self-contained report.html."""
    started = time.perf_counter()
    partition = context.partition_key
    store = artifact_store.object_store()
    samples = generated_samples["images"]
    sample_attrs = generated_samples.attrs

    score = FidScore.from_dict(fid_score)
    # The event log knows which run wrote each attempt; the loaded artifact alone does not.
    current = score_attempt_entry(score)
    history = fid_score_history(context.instance, partition)
    attempts = merge_attempts(history, current)
    trend = read_trend(recorded_months(context.instance, partition), partition, score)

    preview = preview_grid_png(samples)
    real = preprocessed_images["images"][:REAL_EXAMPLES]
    objects = {"report_json": store.uri(report_key(partition, "json")), "report_html": store.uri(report_key(partition, "html"))}
    report = build_report(
        partition=partition,
        fid_score=score,
        generator_attrs=trained_generator.attrs,
        sample_attrs=sample_attrs,
        sample_objects={
            "npz": store.uri(value_key(SAMPLES, partition, "npz")),
            "grid_png": sample_attrs.get("grid_png") or store.uri(sample_grid_key(partition)),
            "dicom": list(sample_attrs.get("dicom") or []),
        },
        preview_data_uri=data_uri(preview),
        data=data_counts(dicom_manifest, preprocessed_images.attrs.get("rejected_at_decode") or [],
                         landing_zone=zone_summary(landing_zone_index, partition_months(context.instance))),
        attempts=attempts,
        trend=trend,
        timings={
            "training": trained_generator.attrs.get("timings") or {},
            "generation": sample_attrs.get("timings") or {},
            "report_seconds": round(time.perf_counter() - started, 4),
        },
        objects=objects,
        code_version=CODE_VERSION,
        lineage=_lineage(context, store, partition, landing_zone_index, preprocessed_images, sample_attrs),
    )
    html = render_report_html(
        report,
        sample_grid_png=grid_png(samples),
        real_grid_png=grid_png(real) if len(real) else None,
        loss_history=trained_generator.attrs.get("loss_history"),
    )
    json_uri = store.put(report_key(partition, "json"), json.dumps(report, indent=1, sort_keys=True).encode())
    html_uri = store.put(report_key(partition, "html"), html.encode())
    context.log.info(f"report for {partition}: {report['verdict']} -> {html_uri}")

    evaluation = report["evaluation"]

    metadata: dict[str, Any] = {
        "summary": dg.MetadataValue.md(_summary_markdown(report, markdown_image(preview, f"samples {partition}"))),
        "trend": _trend_table(report["trend"]),
        "status": dg.MetadataValue.text(report["status"]),
        "attempts": dg.MetadataValue.int(len(attempts)),
        "months_in_trend": dg.MetadataValue.int(len(trend)),
        "report_json": dg.MetadataValue.path(json_uri),
        "report_html": dg.MetadataValue.path(html_uri),
        # A link the UI renders clickable (a local report opens as a file:// URL).
        "report_link": dg.MetadataValue.url(html_uri if "://" in html_uri else Path(html_uri).resolve().as_uri()),
        "promoted_weights_sha256": dg.MetadataValue.text(report["lineage"]["model"]["weights_sha256"]),
    }
    # Numbers as numeric metadata so the UI plots them across partitions.
    if evaluation["fid"] is not None:
        metadata["fid"] = dg.MetadataValue.float(evaluation["fid"])
    if evaluation["kid_mean"] is not None:
        metadata["kid_mean"] = dg.MetadataValue.float(evaluation["kid_mean"])
    if evaluation["threshold"] is not None:
        metadata["threshold"] = dg.MetadataValue.float(evaluation["threshold"])
    if evaluation.get("attempt") is not None:
        metadata["attempt"] = dg.MetadataValue.int(evaluation["attempt"])
    return dg.MaterializeResult(metadata=metadata)
