"""Step 5: synthetic images from the approved generator (EMA weights), optionally as DICOM."""

import time
from typing import Any

import dagster as dg
import pandas as pd

from gan_assets import __version__
from gan_assets.assets.common import GROUP_DELIVERY, ArtifactStoreResource, code_version, stage
from gan_assets.dicom.secondary_capture import DEFAULT_MODALITY, SyntheticSeries, secondary_capture_bytes
from gan_assets.metrics.evaluation import FidScore
from gan_assets.model.artifact import generator_from_bundle, sample_images
from gan_assets.model.device import resolve_device
from gan_assets.model.history import ModelHistoryError, load_promoted
from gan_assets.partitions import month_of, monthly_partitions
from gan_assets.report.document import most_common_modality
from gan_assets.resources import GanConfig, GenerationSettings
from gan_assets.storage import ArrayBundle
from gan_assets.storage.digest import arrays_sha256
from gan_assets.storage.images import encoding_attrs, grid_png, markdown_image, pack_images, preview_grid_png
from gan_assets.storage.layout import sample_dicom_key, sample_dicom_prefix, sample_grid_key

# What Dagster compares to show a materialization as unsynced after a code change (common.code_version).
CODE_VERSION = code_version(__name__)

ASSET = "generated_samples"





@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=monthly_partitions,
    **stage(GROUP_DELIVERY),
    # The weights come from the month's promoted attempt (model history), not from whatever
    # trained_generator holds now: a dependency for lineage, read through the history.
    deps=[dg.AssetDep("trained_generator")],
    ins={
        # The blocking check on fid_score stops this step in a run whose score failed.
        "fid_score": dg.AssetIn(),
        "dicom_manifest": dg.AssetIn(),
    },
    kinds={"pytorch", "numpy"},
)
def generated_samples(
    context: dg.AssetExecutionContext,
    gan_config: GanConfig,
    generation_config: GenerationSettings,
    artifact_store: dg.ResourceParam[ArtifactStoreResource],
    fid_score: dict[str, Any],
    dicom_manifest: pd.DataFrame,
) -> dg.Output[ArrayBundle]:
    """Synthetic images sampled from the approved generator's EMA weights (npz, PNG grid, optional DICOM)."""
    partition = context.partition_key
    score = FidScore.from_dict(fid_score)
    if not score.passed:
        # The blocking check stops this in a pipeline run; this guards a manual materialization.
        raise dg.Failure(
            description=(
                f"fid_score for {partition} did not pass (status {score.status!r}, "
                f"FID {score.fid:.4f} vs threshold {score.threshold:.4f}): samples come only "
                "from an approved generator. Retrain (retrain_job) until fid_score passes."
            )
        )
    store = artifact_store.object_store()
    try:
        promoted, weights = load_promoted(store, partition)
    except ModelHistoryError as err:
        raise dg.Failure(description=str(err)) from None
    generator_attempt = promoted.attempt
    if score.attempt != generator_attempt:
        context.log.warning(
            f"fid_score is for attempt {score.attempt} but the promoted generator is attempt {generator_attempt}; "
            "samples come from the promoted one"
        )

    config = generation_config.to_generation_config()
    device = str(resolve_device(gan_config.device, "gan_config.device"))
    started = time.perf_counter()
    generator = generator_from_bundle(weights, device=device)
    images = pack_images(sample_images(generator, config.num_samples, seed=config.sample_seed, device=device))
    sample_seconds = time.perf_counter() - started

    grid_uri = store.put(sample_grid_key(partition), grid_png(images))

    dicom_uris: list[str] = []
    modality = most_common_modality(dicom_manifest, DEFAULT_MODALITY)
    # Files of an earlier materialization with more samples would otherwise linger.
    for stale in store.list(sample_dicom_prefix(partition)):
        if stale.endswith(".dcm"):
            store.delete(stale)
    if config.write_sample_dicoms:
        series = SyntheticSeries.new(modality, label=month_of(partition))
        for index, image in enumerate(images, start=1):
            data = secondary_capture_bytes(image, series, index, software_version=f"gan-assets {__version__}")
            dicom_uris.append(store.put(sample_dicom_key(partition, index), data))
        context.log.info(f"wrote {len(dicom_uris)} synthetic {modality} DICOM files under "
                         f"{store.uri(sample_dicom_prefix(partition))}")
    total_seconds = time.perf_counter() - started

    timings = {
        "sample_seconds": round(sample_seconds, 4),
        "total_seconds": round(total_seconds, 4),
        "images_per_second": round(len(images) / sample_seconds, 2) if sample_seconds > 0 else None,
    }
    context.add_output_metadata({
        "preview": dg.MetadataValue.md(markdown_image(preview_grid_png(images), f"synthetic images {partition}")),
        "count": dg.MetadataValue.int(len(images)),
        "seed": dg.MetadataValue.int(config.sample_seed),
        "grid_png": dg.MetadataValue.path(grid_uri),
        "dicom_files": dg.MetadataValue.int(len(dicom_uris)),
        "modality": dg.MetadataValue.text(modality),
        "generator_attempt": dg.MetadataValue.int(generator_attempt),
        "generator_weights_sha256": dg.MetadataValue.text(promoted.weights_sha256),
        "generator_weights": dg.MetadataValue.path(store.uri(promoted.weights_key)),
        "images_per_second": dg.MetadataValue.float(float(timings["images_per_second"] or 0.0)),
        "device": dg.MetadataValue.text(device),
    })
    bundle = ArrayBundle(
        arrays={"images": images},
        attrs={
            **encoding_attrs(),
            "seed": config.sample_seed,
            "count": len(images),
            "image_size": int(images.shape[-1]),
            "generator_attempt": generator_attempt,
            "promoted": promoted.to_dict(),
            "run_id": context.run_id,
            "source_partition": partition,
            "fid": score.fid,
            "modality": modality,
            "grid_png": grid_uri,
            "dicom": dicom_uris,
            "device": device,
            "timings": timings,
        },
    )
    return dg.Output(bundle, data_version=dg.DataVersion(arrays_sha256({"images": images})[:32]))
