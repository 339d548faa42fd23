"""Ingest stage: the DICOM landing zone -> landing_zone_index -> dicom_manifest -> preprocessed_images.

A thin Dagster shell over ``gan_assets.dicom`` (header scan, decoding, preprocessing). Nothing
that identifies a person leaves this stage: rows and images carry HMAC pseudonyms, files are
named by a keyed file reference (``python -m gan_assets.dicom.lookup`` maps one back to its
path for operators), and metadata and logs hold counts, codes and settings only.
"""


import dataclasses
import time
from collections import Counter
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

import pyarrow as pa
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from gan_assets.assets.common import GROUP_INGEST, ArtifactStoreResource, code_version, stage
from gan_assets.dicom.batch import default_key_warning, preprocess_month, resolve_workers
from gan_assets.dicom.index import (
    EMPTY_MONTH,
    INDEX_SCHEMA,
    MANIFEST_SCHEMA,
    check_index,
    index_policy,
    month_fingerprints,
    month_rows,
    months_to_report,
    observed_months,
    scan_policy,
    summary_by_month,
    unassigned_rows,
    update_index,
    with_observed,
)
from gan_assets.dicom.reasons import REASONS, count_reasons, describe_reasons
from gan_assets.partitions import month_of, monthly_partitions, partition_months, partition_of
from gan_assets.resources import DicomSource, GanConfig, PreprocessConfig
from gan_assets.storage import ArrayBundle, ObjectStore, StorageFormatError, decode
from gan_assets.storage.digest import arrays_sha256
from gan_assets.storage.images import encoding_attrs, grid_png, markdown_image
from gan_assets.storage.layout import value_key

# What Dagster compares to show a materialization as unsynced after a code change (common.code_version).
CODE_VERSION = code_version(__name__)

# Rows of the unassigned table shown in the UI (all of them are in the stored index).
UNASSIGNED_SHOWN = 200

dicom_source = dg.AssetSpec(
    key="dicom_source",
    description=(
        "The DICOM landing zone (local folder or s3:// prefix) that monthly batches arrive in. Observed by "
        "landing_zone_index: each month's data version is the fingerprint of its files (references and content), "
        "so a month whose files are added, replaced or deleted shows its assets as unsynced."
    ),
    **stage(GROUP_INGEST),
    partitions_def=monthly_partitions,
    metadata={"location": "dicom_source resource (GAN_ASSETS_LANDING_ZONE by default)"},
)

DICOM_SOURCE_KEY = dicom_source.key
INDEX_KEY = value_key("landing_zone_index", None, "parquet")  # the index's own value: it updates itself


REJECTS_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("reason_code", "string"), dg.TableColumn("reason", "string"), dg.TableColumn("files", "int"),
])


def _rejects_table(counts: dict[str, int]) -> dg.TableMetadataValue:
    """Rejected files per reason code, with the code's fixed sentence (never per-file text)."""
    return dg.MetadataValue.table(
        [dg.TableRecord({"reason_code": code, "reason": REASONS.get(code, code), "files": n}) for code, n in counts.items()],
        schema=REJECTS_SCHEMA,
    )


def _column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in schema])


def _previous_index(context: dg.AssetExecutionContext, store: ObjectStore) -> pa.Table | None:
    """The index as last stored, or None (first build, or unreadable: then it is rebuilt)."""
    if not store.exists(INDEX_KEY):
        return None
    try:
        return check_index(decode("parquet", store.get(INDEX_KEY), where=store.uri(INDEX_KEY)))
    except (StorageFormatError, ValueError) as err:
        context.log.warning(f"the stored landing_zone_index cannot be used ({err}); rebuilding it from the zone")
        return None


@dg.asset(
    code_version=CODE_VERSION,
    **stage(GROUP_INGEST),
    deps=[dicom_source],
    kinds={"dicom", "parquet"},
)
def landing_zone_index(
    context: dg.AssetExecutionContext,
    dicom_source: DicomSource,
    preprocess_config: PreprocessConfig,
    artifact_store: dg.ResourceParam[ArtifactStoreResource],
) -> dg.Output[pa.Table]:
    """Every file of the landing zone, read once: month (from its header), reference, size, time, content
    fingerprint and scan outcome. Only new or changed files are read; undated files and files dated outside
    the partitions are listed as unassigned, with a reason. Reports each changed month's data version on
    dicom_source."""
    warning = default_key_warning(dicom_source.key())
    if warning:
        context.log.warning(warning)
    previous = _previous_index(context, artifact_store.object_store())
    update = update_index(
        dicom_source.source_spec(), previous, preprocess_config.scan_options(dicom_source.date_tags),
        key=dicom_source.key(), workers=preprocess_config.workers, tune=preprocess_config.tune_malloc,
    )
    months = partition_months(context.instance)
    # Each month whose files changed gets a new data version on dicom_source: Dagster then shows
    # that month's assets (and only that month's) as unsynced.
    reported = months_to_report(update.table, months)
    by_month = summary_by_month(update.table)
    for month, fingerprint in reported.items():
        context.log_event(dg.AssetObservation(
            asset_key=DICOM_SOURCE_KEY, partition=partition_of(month), tags={DATA_VERSION_TAG: fingerprint},
            metadata={"files": dg.MetadataValue.int(by_month.get(month, {}).get("files", 0)),
                      "files_ok": dg.MetadataValue.int(by_month.get(month, {}).get("ok", 0)),
                      "fingerprint": dg.MetadataValue.text(fingerprint)},
        ))
    table = with_observed(update.table, {**observed_months(update.table), **reported})
    unassigned = unassigned_rows(table, months)
    unassigned_counts = count_reasons(unassigned)
    context.log.info(
        f"landing zone: {update.files_listed} files listed in {update.list_seconds:.2f}s; {update.files_read} read "
        f"({update.new} new, {update.changed} changed{', full rebuild' if update.rebuilt else ''}) in "
        f"{update.scan_seconds:.2f}s, {update.unchanged} unchanged, {update.deleted} deleted; "
        f"{len(unassigned)} unassigned; months with new data versions: {', '.join(reported) or 'none'}"
    )
    month_table = [
        dg.TableRecord({"month": month, "files": c["files"], "ok": c["ok"], "partition": month in months})
        for month, c in by_month.items()
    ]
    metadata: dict[str, Any] = {
        "files_listed": dg.MetadataValue.int(update.files_listed),
        "files_read": dg.MetadataValue.int(update.files_read),
        "files_new": dg.MetadataValue.int(update.new),
        "files_changed": dg.MetadataValue.int(update.changed),
        "files_deleted": dg.MetadataValue.int(update.deleted),
        "files_unchanged": dg.MetadataValue.int(update.unchanged),
        "full_rebuild": dg.MetadataValue.bool(update.rebuilt),
        "files_unassigned": dg.MetadataValue.int(len(unassigned)),
        "unassigned_by_reason": dg.MetadataValue.json(unassigned_counts),
        "unassigned": dg.MetadataValue.table(
            [dg.TableRecord(row) for row in unassigned[:UNASSIGNED_SHOWN]],
            schema=dg.TableSchema(columns=[dg.TableColumn("file_ref"), dg.TableColumn("month"),
                                           dg.TableColumn("reason_code"), dg.TableColumn("reason")]),
        ),
        "months": dg.MetadataValue.table(month_table, schema=dg.TableSchema(columns=[
            dg.TableColumn("month"), dg.TableColumn("files", "int"), dg.TableColumn("ok", "int"),
            dg.TableColumn("partition", "bool")])),
        "months_changed": dg.MetadataValue.json(list(reported)),
        "list_seconds": dg.MetadataValue.float(round(update.list_seconds, 3)),
        "scan_seconds": dg.MetadataValue.float(round(update.scan_seconds, 3)),
        "seconds_per_file_read": dg.MetadataValue.float(round(update.seconds_per_file_read, 5)),
        "scan_policy": dg.MetadataValue.text(index_policy(table)),
        "dagster/row_count": dg.MetadataValue.int(table.num_rows),
        "dagster/column_schema": _column_schema(INDEX_SCHEMA),
    }
    # The index's data version is its scan policy, not its content: a month reads only its own
    # rows, and its content version is the dicom_source observation above. A new policy changes
    # every month's rows, and so every month's version.
    return dg.Output(table, metadata=metadata, data_version=dg.DataVersion(index_policy(table)))


@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=monthly_partitions,
    **stage(GROUP_INGEST),
    deps=[dicom_source],
    kinds={"dicom", "parquet"},
)
def dicom_manifest(
    context: dg.AssetExecutionContext,
    landing_zone_index: pa.Table,
    dicom_source: DicomSource,
    preprocess_config: PreprocessConfig,
) -> dg.Output[pd.DataFrame]:
    """One row per file the index dates into this month (pseudonymous id, geometry, codes, content
    fingerprint, ok or rejected + reason); read from landing_zone_index, no file is opened."""
    month = month_of(context.partition_key)
    index = check_index(landing_zone_index)
    policy = scan_policy(preprocess_config.scan_options(dicom_source.date_tags), dicom_source.key())
    if index_policy(index) != policy:
        raise dg.Failure(
            description=(
                f"{month}: landing_zone_index was built with other scan settings (dicom_source.date_tags, "
                "preprocess_config exclusion policy or limits, or the pseudonym key) than this run's; materialize "
                "landing_zone_index with this run's configuration, then this month"
            )
        )
    rows = month_rows(index, month)
    frame = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA).to_pandas()
    ok = frame[frame["status"] == "ok"]
    rejected = count_reasons(frame[frame["status"] != "ok"].to_dict("records"))
    modalities = dict(sorted(Counter(ok["modality"].replace("", "unknown")).items()))
    syntaxes = dict(sorted(Counter(ok["transfer_syntax_name"].replace("", "unknown")).items()))
    unassigned = len(unassigned_rows(index, partition_months(context.instance)))
    fingerprint = month_fingerprints(index, [month]).get(month, EMPTY_MONTH)
    context.log.info(
        f"{month}: {len(frame)} files belong to this month ({len(ok)} ok, {len(frame) - len(ok)} rejected"
        f"{': ' + describe_reasons(rejected) if rejected else ''}); read from the index of "
        f"{index.num_rows} landing-zone files ({unassigned} unassigned)"
    )
    metadata: dict[str, Any] = {
        "files_seen": dg.MetadataValue.int(len(frame)),
        "files_ok": dg.MetadataValue.int(len(ok)),
        "files_rejected": dg.MetadataValue.int(len(frame) - len(ok)),
        "rejected_by_reason": dg.MetadataValue.json(rejected),
        "modalities": dg.MetadataValue.json(modalities),
        "transfer_syntaxes": dg.MetadataValue.json(syntaxes),
        "landing_zone_files": dg.MetadataValue.int(index.num_rows),
        "landing_zone_unassigned": dg.MetadataValue.int(unassigned),
        "data_fingerprint": dg.MetadataValue.text(fingerprint),
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "dagster/column_schema": _column_schema(MANIFEST_SCHEMA),
        "rejects": _rejects_table(rejected),
        "summary": dg.MetadataValue.md(
            f"**{month}**: {len(frame)} files, {len(ok)} ok, {len(frame) - len(ok)} rejected (see rejects); "
            f"{unassigned} file(s) of the landing zone belong to no month: see landing_zone_index"
        ),
    }
    # The month's content version: the same files give the same manifest.
    return dg.Output(frame, metadata=metadata, data_version=dg.DataVersion(fingerprint))


@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=monthly_partitions,
    **stage(GROUP_INGEST),
    # It reads the month's files themselves (the manifest only names them): a change of the
    # month's files marks it unsynced too.
    deps=[dicom_source],
    kinds={"dicom", "numpy"},
)
def preprocessed_images(
    context: dg.AssetExecutionContext,
    dicom_manifest: pd.DataFrame,
    dicom_source: DicomSource,
    preprocess_config: PreprocessConfig,
    gan_config: GanConfig,
) -> dg.Output[ArrayBundle]:
    """The month's usable images, windowed and resized to image_size, packed uint8 in [-1, 1] with pseudonymous ids."""
    month = month_of(context.partition_key)
    image_size = gan_config.image_size
    options = preprocess_config.options(image_size)
    started = time.perf_counter()
    rows = dicom_manifest.to_dict("records")
    result = preprocess_month(
        dicom_source.source_spec(), rows, options, key=dicom_source.key(),
        workers=preprocess_config.workers, tune=preprocess_config.tune_malloc,
    )
    seconds = time.perf_counter() - started

    decode_rejects = count_reasons(result.rejected)
    all_rejects = count_reasons([*(r for r in rows if r["status"] != "ok"), *result.rejected])
    files_seen = len(rows)
    # Counted in = counted out: every file of the manifest is either used or rejected once.
    if result.files_ok + sum(all_rejects.values()) != files_seen:
        raise dg.Failure(
            description=f"{month}: ingest lost track of files ({files_seen} seen, {result.files_ok} used, "
            f"{sum(all_rejects.values())} rejected); this is a bug, please report it"
        )
    if len(result.ids) == 0:
        detail = describe_reasons(all_rejects) if all_rejects else "the landing zone holds no file for this month"
        raise dg.Failure(
            description=(
                f"{month}: no usable images. {files_seen} file(s) seen for this month, none usable: {detail}. "
                "Check the dicom_source location and the preprocess_config settings, or add data for this month."
            ),
            metadata={"files_seen": files_seen, "rejected_by_reason": dg.MetadataValue.json(all_rejects)},
        )
    if decode_rejects:
        context.log.warning(f"{month}: {sum(decode_rejects.values())} file(s) rejected at decode: {describe_reasons(decode_rejects)}")

    images_per_second = len(result.ids) / seconds if seconds > 0 else 0.0
    ids = np.array(result.ids, dtype=np.str_)
    modalities = dict(sorted(Counter(r["modality"] or "unknown" for r in rows if r["status"] == "ok").items()))
    voi = {
        "policy": options.voi_policy,
        "preset": options.voi_preset if options.voi_policy == "preset" else None,
        "percentiles": [options.percentile_low, options.percentile_high],
        "used": dict(sorted(result.voi_sources.items())),
    }
    attrs: dict[str, Any] = {
        **encoding_attrs(),
        "image_size": image_size,
        "partition": context.partition_key,
        "n_images": len(result.ids),
        "files_seen": files_seen,
        "files_used": result.files_ok,
        "rejected_by_reason": all_rejects,
        "rejected_at_decode": result.rejected,
        "voi": voi,
        "multiframe_policy": options.multiframe_policy,
        "colour_policy": options.colour_policy,
        "colour_converted": result.colour_converted,
        "monochrome1_inverted": result.inverted,
        "geometry": options.geometry,
        "resize": "Pillow Lanczos (anti-aliased), box pre-reduction (reducing_gap=2)",
        "exclude_burned_in": preprocess_config.exclude_burned_in,
        "missing_burned_in": preprocess_config.missing_burned_in,
        "limits": dataclasses.asdict(preprocess_config.ingest_limits()),
        "modalities": modalities,
    }
    bundle = ArrayBundle(arrays={"images": result.images, "ids": ids}, attrs=attrs)
    preview = result.images[: max(1, preprocess_config.preview_images)]
    context.log.info(
        f"{month}: {len(result.ids)} images of {image_size}x{image_size} from {result.files_ok} of {files_seen} files "
        f"in {seconds:.2f}s ({images_per_second:.0f} images/s); VOI {voi['used']}"
    )
    metadata: dict[str, Any] = {
        "n_images": dg.MetadataValue.int(len(result.ids)),
        "image_size": dg.MetadataValue.int(image_size),
        "files_seen": dg.MetadataValue.int(files_seen),
        "files_used": dg.MetadataValue.int(result.files_ok),
        "files_rejected": dg.MetadataValue.int(sum(all_rejects.values())),
        "rejected_by_reason": dg.MetadataValue.json(all_rejects),
        "rejected_at_decode": dg.MetadataValue.int(len(result.rejected)),
        "modalities": dg.MetadataValue.json(modalities),
        "voi_policy": dg.MetadataValue.text(
            options.voi_policy + (f" ({options.voi_preset})" if options.voi_policy == "preset" else "")),
        "voi_used": dg.MetadataValue.json(voi["used"]),
        "colour_converted": dg.MetadataValue.int(result.colour_converted),
        "monochrome1_inverted": dg.MetadataValue.int(result.inverted),
        "multiframe_policy": dg.MetadataValue.text(options.multiframe_policy),
        "seconds": dg.MetadataValue.float(round(seconds, 3)),
        "images_per_second": dg.MetadataValue.float(round(images_per_second, 1)),
        "workers": dg.MetadataValue.int(resolve_workers(preprocess_config.workers)),
        "preview": dg.MetadataValue.md(markdown_image(grid_png(preview), f"{month} preprocessed images")),
    }
    metadata["images_sha256"] = dg.MetadataValue.text(arrays_sha256(bundle.arrays))
    return dg.Output(bundle, metadata=metadata, data_version=dg.DataVersion(metadata["images_sha256"].value[:32]))
