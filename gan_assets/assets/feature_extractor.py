"""Evaluation support: ``fid_feature_extractor`` trains the domain encoder FID/KID features come from.

Training split: the encoder of month M is trained on the real images of the months before M
within the training window (never on M's own images, so it never saw M's FID reference set).
When no earlier month has images, it is trained on M's held-out half only
(``split_reference(n, seed=EVAL_SEED).held_out_index``): the half that is never a reference.
"""

import time
from typing import Any

import dagster as dg
import numpy as np

from gan_assets.assets.common import GROUP_MODEL
from gan_assets.assets.training import TRAINING_POOL, TRAINING_WINDOW, pack_window, training_window
from gan_assets.metrics.controls import split_reference
from gan_assets.metrics.domain_encoder import train_domain_encoder, weights_to_tensors
from gan_assets.partitions import TRAINING_WINDOW_MONTHS, monthly_partitions
from gan_assets.resources import FidExtractor, GanConfig
from gan_assets.storage import ArrayBundle, TensorBundle

# The evaluation core splits each month with this seed; the fallback must use the same halves.
EVAL_SEED = 0

SPLIT_PRIOR = (
    "trained on the real images of the months before the scored month within the training window "
    "(never on the scored month, so never on its FID reference set)"
)
SPLIT_HELD_OUT = (
    "no earlier month had images: trained on the scored month's held-out half only "
    f"(split_reference(n, seed={EVAL_SEED}).held_out_index), never on its FID reference half"
)


def _held_out_half(bundle: ArrayBundle | None, partition: str, image_size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The month's held-out half (never a reference) and its fingerprint (hash of those images only)."""
    empty = np.zeros((0, image_size, image_size), np.uint8)
    packed = np.asarray(bundle.arrays.get("images", empty)) if bundle is not None else empty
    if len(packed) < 4:
        raise ValueError(
            f"fid_feature_extractor {partition}: no earlier month in the training window has images and this "
            f"month has {len(packed)} (at least 4 are needed to split off a held-out half); materialize "
            "preprocessed_images for this or the previous months"
        )
    split = split_reference(len(packed), seed=EVAL_SEED)
    images, fingerprint = pack_window({partition: ArrayBundle({"images": packed[split.held_out_index]})}, image_size)
    return images, {**fingerprint, "held_out_index": [int(i) for i in split.held_out_index]}


@dg.asset(
    partitions_def=monthly_partitions,
    group_name=GROUP_MODEL,
    # One input over the training window including this month (Dagster maps one upstream asset
    # to one input): the body trains on the earlier months and reads this month only for the
    # held-out-half fallback.
    ins={
        "preprocessed_images": dg.AssetIn(
            partition_mapping=TRAINING_WINDOW, metadata={"allow_missing_partitions": True},
        )
    },
    # It trains a network on the CPU: share the training pool so a backfill does not run it
    # beside trained_generator steps.
    pool=TRAINING_POOL,
    kinds={"pytorch"},
)
def fid_feature_extractor(
    context: dg.AssetExecutionContext,
    fid_extractor: FidExtractor,
    gan_config: GanConfig,
    preprocessed_images: Any,
) -> dg.Output[TensorBundle]:
    """Domain encoder for FID features, trained self-supervised on earlier months' real images (else this month's held-out half)."""
    partition = context.partition_key
    if fid_extractor.kind != "domain":
        context.log.info(f"fid_extractor.kind={fid_extractor.kind!r}: no domain encoder is trained")
        attrs = {"unused": True, "kind": fid_extractor.kind, "partition": partition,
                 "reason": "fid_extractor.kind is not 'domain'; set it to 'domain' and re-materialize to train the encoder"}
        return dg.Output(TensorBundle(tensors={}, attrs=attrs),
                         metadata={"unused": True, "kind": dg.MetadataValue.text(fid_extractor.kind)})

    image_size = gan_config.image_size
    window_keys = sorted(context.asset_partition_keys_for_input("preprocessed_images"))
    window = training_window(preprocessed_images, window_keys)
    prior = {key: bundle for key, bundle in window.items()
             if key < partition and len(bundle.arrays.get("images", ())) > 0}
    if prior:
        trained_on, split = "prior_months", SPLIT_PRIOR
        images, fingerprint = pack_window(prior, image_size)
    else:
        trained_on, split = "held_out_half", SPLIT_HELD_OUT
        images, fingerprint = _held_out_half(window.get(partition), partition, image_size)
    settings = fid_extractor.domain_settings()
    context.log.info(f"training the domain encoder on {len(images)} images ({trained_on}: {fingerprint['partitions']})")
    started = time.perf_counter()
    weights = train_domain_encoder(images, seed=fid_extractor.domain_seed, settings=settings)
    seconds = time.perf_counter() - started
    tensors, encoder_attrs = weights_to_tensors(weights)
    description = weights.description
    attrs: dict[str, Any] = {
        **encoder_attrs,
        "unused": False,
        "kind": "domain",
        "partition": partition,
        "trained_on": trained_on,
        "split": split,
        "months": sorted(fingerprint["partitions"]),
        "counts": fingerprint["partitions"],
        "n_images": int(fingerprint["n_images"]),
        "packed_images_sha256": fingerprint["sha256"],
        "settings": settings.to_dict(),
        "seed": fid_extractor.domain_seed,
        "seconds": round(seconds, 3),
    }
    if trained_on == "held_out_half":
        attrs["held_out_index"] = fingerprint["held_out_index"]
    metadata: dict[str, Any] = {
        "unused": False,
        "weights_sha256": dg.MetadataValue.text(weights.sha256),
        "trained_on": dg.MetadataValue.text(trained_on),
        "split": dg.MetadataValue.text(split),
        "months": dg.MetadataValue.json(fingerprint["partitions"]),
        "n_images": dg.MetadataValue.int(int(fingerprint["n_images"])),
        "seconds": dg.MetadataValue.float(round(seconds, 3)),
        "final_pretext_loss": dg.MetadataValue.float(float(description["final_losses"]["pretext"])),
        "final_invariance_loss": dg.MetadataValue.float(float(description["final_losses"]["invariance"])),
        "pretext_accuracy": dg.MetadataValue.float(float(description["final_pretext_accuracy"])),
        "feature_dim": dg.MetadataValue.int(int(description["feature_dim"])),
        "steps": dg.MetadataValue.int(settings.steps),
    }
    return dg.Output(TensorBundle(tensors=tensors, attrs=attrs), metadata=metadata)
