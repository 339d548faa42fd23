"""Training stage: ``trained_generator`` trains a DCGAN on a window of recent months of images."""

import hashlib
from collections.abc import Sequence
from typing import Any

import dagster as dg
import numpy as np

from gan_assets.assets.common import (
    GROUP_MODEL,
    TRAINING_TAG,
    ArtifactStoreResource,
    code_version,
    run_attempt,
    stage,
)
from gan_assets.model.artifact import generator_from_bundle
from gan_assets.model.config import TrainConfig
from gan_assets.model.history import save_attempt, save_attempt_score
from gan_assets.model.previews import FIXED_NOISE_COUNT, fixed_noise_grid_png
from gan_assets.model.train import DivergenceError, TrainResult, train_gan
from gan_assets.partitions import TRAINING_WINDOW_INPUT, TRAINING_WINDOW_MONTHS, monthly_partitions
from gan_assets.report.charts import chart_png, loss_chart
from gan_assets.resources import EvaluationBar, GanConfig
from gan_assets.storage import ArrayBundle, TensorBundle
from gan_assets.storage.digest import state_dict_sha256
from gan_assets.storage.images import markdown_image, unpack_images

# What Dagster compares to show a materialization as unsynced after a code change (common.code_version).
CODE_VERSION = code_version(__name__)

TRAINING_POOL = "gan_training"

def training_window(
    loaded: dict[str, ArrayBundle | None] | ArrayBundle | None, partition_keys: Sequence[str], partition: str
) -> dict[str, ArrayBundle]:
    """The loaded window input as {partition: bundle}, months in order, months not loaded left out.

    The IO manager hands a one-month window over as a bare bundle: it is named by the partition
    it records, else by the input's last partition key, else by ``partition`` (the month being
    materialized), never by a placeholder that no month matches.
    """
    if loaded is None:
        return {}
    if isinstance(loaded, ArrayBundle):
        keys = sorted(partition_keys)
        return {str(loaded.attrs.get("partition") or (keys[-1] if keys else partition)): loaded}
    return {str(key): bundle for key, bundle in sorted(loaded.items()) if bundle is not None}


def pack_window(window: dict[str, ArrayBundle], image_size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Float images of the whole window (months in order) and their fingerprint."""
    counts: dict[str, int] = {}
    digest = hashlib.sha256()
    parts: list[np.ndarray] = []
    for key, bundle in window.items():
        if "images" not in bundle.arrays:
            raise ValueError(f"preprocessed_images {key} has no 'images' array; re-materialize preprocessed_images for {key}")
        packed = np.asarray(bundle["images"])
        if packed.ndim != 3 or packed.dtype != np.uint8:
            raise ValueError(
                f"preprocessed_images {key} holds {packed.dtype} images of shape {packed.shape}; "
                "expected uint8 N x H x W (pack_images); re-materialize preprocessed_images"
            )
        if len(packed) and packed.shape[1:] != (image_size, image_size):
            raise ValueError(
                f"preprocessed_images {key} has {packed.shape[1]}x{packed.shape[2]} images but "
                f"gan_config.image_size={image_size}; re-materialize preprocessed_images with this "
                "image_size or set gan_config.image_size to match"
            )
        counts[key] = int(len(packed))
        digest.update(key.encode() + b"\0" + np.ascontiguousarray(packed).tobytes())
        if len(packed):
            parts.append(unpack_images(packed))
    n_images = sum(counts.values())
    if n_images == 0:
        months = ", ".join(window) or "none materialized"
        raise ValueError(
            f"no training images in the window of {TRAINING_WINDOW_MONTHS} months (partitions: {months}); "
            "materialize preprocessed_images for this month (check dicom_manifest for rejected files)"
        )
    fingerprint = {"partitions": counts, "n_images": n_images, "sha256": digest.hexdigest()}
    return np.concatenate(parts), fingerprint


def _train(images: np.ndarray, config: Any, logger: Any) -> TrainResult:
    if config.num_workers > 1:
        from gan_assets.model.distributed import train_distributed  # torch.distributed only when asked for

        return train_distributed(images, config, logger=logger)
    return train_gan(images, config, logger=logger)


def finite_or_none(value: float) -> float | None:
    """A finite float, else None: metadata and JSON hold no NaN or infinity."""
    return float(value) if np.isfinite(value) else None


def _report_divergence(context: dg.AssetExecutionContext, store: Any, config: TrainConfig, max_attempts: int,
                       attempt: int, fingerprint: dict[str, Any], err: DivergenceError) -> None:
    """What the retrain loop reads: an observation of the failed attempt, and its record in the history."""
    record = {"status": "diverged", "passed": False, "attempt": attempt, "step": err.step,
              "loss_d": finite_or_none(err.loss_d), "loss_g": finite_or_none(err.loss_g), "scoring_run_id": context.run_id}
    save_attempt_score(store, context.partition_key, attempt, context.run_id, record)
    context.log_event(dg.AssetObservation(
        asset_key=context.asset_key, partition=context.partition_key,
        metadata={"diverged": True, "attempt": attempt, "max_attempts": max_attempts, "step": err.step,
                  "config": dg.MetadataValue.json(config.to_dict()),
                  "data_sha256": dg.MetadataValue.text(fingerprint["sha256"])},
    ))
    context.log.warning(f"attempt {attempt} diverged at step {err.step}; reported to the retrain loop")


@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=monthly_partitions,
    **stage(GROUP_MODEL),
    ins={
        "preprocessed_images": TRAINING_WINDOW_INPUT,
    },
    # Training steps carry this tag, and sit in one concurrency pool, so the instance can run
    # them one at a time (dagster.yaml: tag_concurrency_limits on run tags / pool limits).
    op_tags={TRAINING_TAG: "true"},
    pool=TRAINING_POOL,
    kinds={"pytorch"},
)
def trained_generator(
    context: dg.AssetExecutionContext,
    gan_config: GanConfig,
    evaluation_config: EvaluationBar,
    artifact_store: dg.ResourceParam[ArtifactStoreResource],
    preprocessed_images: Any,
) -> dg.Output[TensorBundle]:
    """DCGAN generator (EMA weights) trained on this and the previous months' images, with its config and loss history."""
    config = gan_config.to_train_config()
    attempt = run_attempt(context)
    window = training_window(preprocessed_images, context.asset_partition_keys_for_input("preprocessed_images"),
                             context.partition_key)
    images, fingerprint = pack_window(window, config.image_size)
    context.log.info(
        f"attempt {attempt}: training on {fingerprint['n_images']} images from {fingerprint['partitions']}"
    )
    try:
        result = _train(images, config, context.log)
    except DivergenceError as err:
        _report_divergence(context, artifact_store.object_store(), config, evaluation_config.max_attempts,
                           attempt, fingerprint, err)
        raise dg.Failure(
            description=(f"{context.partition_key} attempt {attempt}: {err}. retrain_on_fid_failure requests the next "
                         "attempt with halved learning rates while attempts remain."),
            allow_retries=False,
        ) from None

    bundle = TensorBundle(
        tensors=result.generator_state,
        attrs={
            "config": config.to_dict(),
            "attempt": attempt,
            "data_fingerprint": fingerprint,
            "loss_history": result.loss_history,
            "timings": {
                "wall_seconds": result.wall_seconds,
                "images_per_second": result.images_per_second,
                **result.timings,
            },
            "device": result.device,
            "steps": result.steps,
            "images_seen": result.images_seen,
            "final_loss_d": result.final_loss_d,
            "final_loss_g": result.final_loss_g,
            "parameter_counts": result.parameter_counts,
            "ema": config.ema,
            "fixed_noise_seed": config.seed,
            "fixed_noise_count": FIXED_NOISE_COUNT,
            "partition": context.partition_key,
            "run_id": context.run_id,
            "code_version": CODE_VERSION,
            "weights_sha256": state_dict_sha256(result.generator_state),
        },
    )
    # Every attempt is kept under a key naming it; the asset's value is the latest attempt.
    store = artifact_store.object_store()
    history_key = save_attempt(store, context.partition_key, attempt, context.run_id, bundle)
    bundle.attrs["history_key"] = history_key
    # The grid comes from the stored weights, rebuilt as any consumer will rebuild them.
    samples_png = fixed_noise_grid_png(generator_from_bundle(bundle), config.seed)
    metadata: dict[str, Any] = {
        "steps": dg.MetadataValue.int(result.steps),
        "wall_seconds": dg.MetadataValue.float(result.wall_seconds),
        "images_per_second": dg.MetadataValue.float(result.images_per_second),
        "device": dg.MetadataValue.text(result.device),
        "final_loss_d": dg.MetadataValue.float(result.final_loss_d),
        "final_loss_g": dg.MetadataValue.float(result.final_loss_g),
        "n_images": dg.MetadataValue.int(fingerprint["n_images"]),
        "partitions": dg.MetadataValue.json(fingerprint["partitions"]),
        "attempt": dg.MetadataValue.int(attempt),
        "generator_parameters": dg.MetadataValue.int(result.parameter_counts["generator"]),
        "discriminator_parameters": dg.MetadataValue.int(result.parameter_counts["discriminator"]),
        "config": dg.MetadataValue.json(config.to_dict()),
        "weights_sha256": dg.MetadataValue.text(bundle.attrs["weights_sha256"]),
        "data_sha256": dg.MetadataValue.text(fingerprint["sha256"]),
        "attempt_weights": dg.MetadataValue.path(store.uri(history_key)),
        "loss_curve": dg.MetadataValue.md(markdown_image(chart_png(loss_chart(result.loss_history)), "loss curve")),
        "samples": dg.MetadataValue.md(markdown_image(samples_png, f"fixed-noise samples (seed {config.seed})")),
    }
    # The data version is the weights' hash: a retrain that changes them shows the month's scores
    # and samples as unsynced until they are made from the new weights.
    return dg.Output(bundle, metadata=metadata, data_version=dg.DataVersion(bundle.attrs["weights_sha256"][:32]))
