"""Ingest stage: the DICOM landing zone -> dicom_manifest -> preprocessed_images.

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

from gan_assets.assets.common import GROUP_INGEST
from gan_assets.dicom.batch import (
    default_key_warning,
    describe_reasons,
    preprocess_month,
    reason_counts,
    resolve_workers,
    scan_month,
)
from gan_assets.dicom.pseudonym import pseudonym_key
from gan_assets.dicom.scan import INT_COLUMNS, MANIFEST_COLUMNS, REASONS
from gan_assets.partitions import monthly_partitions
from gan_assets.report.images import grid_png, markdown_image
from gan_assets.resources import DicomSource, GanConfig, PreprocessConfig
from gan_assets.storage import ArrayBundle
from gan_assets.storage.images import encoding_attrs

dicom_source = dg.AssetSpec(
    key="dicom_source",
    description="The DICOM landing zone (local folder or s3:// prefix) that monthly batches arrive in.",
    group_name=GROUP_INGEST,
    partitions_def=monthly_partitions,
    metadata={"location": "dicom_source resource (GAN_ASSETS_LANDING_ZONE by default)"},
)


def _month(partition_key: str) -> str:
    return partition_key[:7]  # "2026-03-01" -> "2026-03"


def _md_table(counts: dict[str, int], header: tuple[str, str]) -> str:
    if not counts:
        return "(none)"
    lines = [f"| {header[0]} | {header[1]} |", "|---|---:|"]
    lines += [f"| {key} | {value} |" for key, value in counts.items()]
    return "\n".join(lines)


@dg.asset(
    partitions_def=monthly_partitions,
    group_name=GROUP_INGEST,
    deps=[dicom_source],
    kinds={"dicom", "pandas"},
)
def dicom_manifest(
    context: dg.AssetExecutionContext, dicom_source: DicomSource, preprocess_config: PreprocessConfig
) -> dg.Output[pd.DataFrame]:
    """One row per landing-zone file of the month (pseudonymous id, geometry, syntax, ok or rejected + reason)."""
    month = _month(context.partition_key)
    warning = default_key_warning()
    if warning:
        context.log.warning(warning)
    key = pseudonym_key()
    result = scan_month(
        dicom_source.source_spec(), month, preprocess_config.scan_options(dicom_source.date_tags), key=key,
        workers=preprocess_config.workers, tune=preprocess_config.tune_malloc,
    )
    frame = pd.DataFrame(result.rows, columns=list(MANIFEST_COLUMNS))
    for column in INT_COLUMNS:  # header numbers were parsed with bounds, so they fit int64
        frame[column] = frame[column].astype("int64")
    ok = frame[frame["status"] == "ok"]
    rejected = reason_counts(frame.loc[frame["status"] != "ok", "reason_code"].tolist())
    modalities = dict(sorted(Counter(ok["modality"].replace("", "unknown")).items()))
    syntaxes = dict(sorted(Counter(ok["transfer_syntax_name"].replace("", "unknown")).items()))
    rate = result.files_listed / result.seconds if result.seconds > 0 else 0.0
    context.log.info(
        f"{month}: {len(frame)} files belong to this month ({len(ok)} ok, {len(frame) - len(ok)} rejected"
        f"{': ' + describe_reasons(rejected) if rejected else ''}); {result.files_listed} landing-zone headers "
        f"scanned in {result.seconds:.2f}s ({rate:.0f} files/s)"
    )
    metadata: dict[str, Any] = {
        "files_seen": dg.MetadataValue.int(len(frame)),
        "files_ok": dg.MetadataValue.int(len(ok)),
        "files_rejected": dg.MetadataValue.int(len(frame) - len(ok)),
        "rejected_by_reason": dg.MetadataValue.json(rejected),
        "modalities": dg.MetadataValue.json(modalities),
        "transfer_syntaxes": dg.MetadataValue.json(syntaxes),
        "landing_zone_files_scanned": dg.MetadataValue.int(result.files_listed),
        "scan_seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "scan_files_per_second": dg.MetadataValue.float(round(rate, 1)),
        "workers": dg.MetadataValue.int(resolve_workers(preprocess_config.workers)),
        "summary": dg.MetadataValue.md(
            f"**{month}**: {len(frame)} files, {len(ok)} ok\n\n**Rejected by reason**\n\n"
            + _md_table({f"{k}: {REASONS.get(k, k)}": v for k, v in rejected.items()}, ("reason", "files"))
            + "\n\n**Modalities (ok files)**\n\n" + _md_table(modalities, ("modality", "files"))
        ),
    }
    return dg.Output(frame, metadata=metadata)


@dg.asset(
    partitions_def=monthly_partitions,
    group_name=GROUP_INGEST,
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
    month = _month(context.partition_key)
    image_size = gan_config.image_size
    options = preprocess_config.options(image_size)
    started = time.perf_counter()
    rows = dicom_manifest.to_dict("records")
    result = preprocess_month(
        dicom_source.source_spec(), rows, options, key=pseudonym_key(),
        workers=preprocess_config.workers, tune=preprocess_config.tune_malloc,
    )
    seconds = time.perf_counter() - started

    manifest_rejects = reason_counts([r["reason_code"] for r in rows if r["status"] != "ok"])
    decode_rejects = reason_counts([r["reason_code"] for r in result.rejected])
    all_rejects = dict(sorted((Counter(manifest_rejects) + Counter(decode_rejects)).items()))
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
    return dg.Output(bundle, metadata=metadata)
