"""Step 3: score the trained generator and the controls against the month's real images, and
gate everything downstream with the blocking check ``fid_within_threshold``.

``fid_feature_extractor`` trains the network FID/KID features come from (when
``fid_extractor.kind`` is ``domain``, the default). Training split: the encoder of month M is
trained on the real images of the months before M within the training window, never on M's own
images, so it never saw M's FID reference set. When no earlier month has images, it is trained
on M's held-out half only (``split_reference(n, seed=EVAL_SEED).held_out_index``): the half that
is never a reference.

The protocol (reference set, controls, threshold rule, statuses) is
:func:`gan_assets.metrics.evaluation.evaluate_month`; this module gathers its inputs and
writes the metadata.

The memorization check compares generated samples with the images the generator was trained
on: the same ``preprocessed_images`` window that ``trained_generator`` reads (the month and the
``TRAINING_WINDOW_MONTHS - 1`` months before it), restricted to the months its
``data_fingerprint`` lists. FID/KID and the floor use the month's own images only.
"""

# No ``from __future__ import annotations``: Dagster reads the asset's parameter annotations
# (context, resources, inputs) at definition time and needs them as real objects.
import json
import time
from typing import Any

import dagster as dg
import numpy as np
from PIL import Image

from gan_assets.assets.common import (
    CONFIG_DIFF_TAG,
    GROUP_MODEL,
    ArtifactStoreResource,
    code_version,
    run_attempt,
    stage,
)
from gan_assets.assets.training import TRAINING_POOL, finite_or_none, pack_window, training_window
from gan_assets.metrics.cache import RealFeatures, real_features_cached
from gan_assets.metrics.controls import split_reference
from gan_assets.metrics.domain_encoder import train_domain_encoder, weights_to_tensors
from gan_assets.metrics.evaluation import EVAL_SEED, EvaluationSettings, FidScore, TrainingSet, evaluate_month
from gan_assets.metrics.extractors import FeatureExtractor
from gan_assets.metrics.score import MIN_REAL_IMAGES
from gan_assets.model.artifact import generator_from_bundle, sample_images
from gan_assets.model.config import DEFAULTS
from gan_assets.model.history import PromotedModel, promote, save_attempt, save_attempt_score
from gan_assets.partitions import TRAINING_WINDOW_INPUT, monthly_partitions
from gan_assets.resources import CloudWatchMetrics, EvaluationBar, FidExtractor, GanConfig
from gan_assets.storage import ArrayBundle, ObjectStore, TensorBundle
from gan_assets.storage.digest import state_dict_sha256
from gan_assets.storage.images import grid_png, markdown_image, to_uint8, unpack_images

# What Dagster compares to show a materialization as unsynced after a code change (common.code_version).
CODE_VERSION = code_version(__name__)

CLOUDWATCH_MODEL = "dcgan"
# Generated images for scoring use their own noise stream, apart from generated_samples' seed.
FAKE_SEED_OFFSET = 1_000_003
PAIR_TILE_SIDE = 64


def _config_diff(context: dg.AssetExecutionContext) -> dict[str, Any]:
    raw = context.run.tags.get(CONFIG_DIFF_TAG)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        context.log.warning(f"run tag {CONFIG_DIFF_TAG} is not JSON; recorded as text: {raw[:200]!r}")
        return {"unparsed": raw}
    return value if isinstance(value, dict) else {"value": value}


def _previous_score(context: dg.AssetExecutionContext) -> dict[str, Any] | None:
    """The month's latest fid_score figures from the event log (an earlier attempt), if any."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[context.partition_key]),
        limit=1, ascending=False,
    ).records
    materialization = records[0].asset_materialization if records else None
    if materialization is None:
        return None
    return {name: value.value for name, value in materialization.metadata.items()
            if name in ("attempt", "fid", "kid_mean", "status", "fingerprint")}


def _training_set(
    context: dg.AssetExecutionContext,
    store: ObjectStore,
    extractor: FeatureExtractor,
    window: dict[str, ArrayBundle],
    month: RealFeatures,
    trained_generator: TensorBundle,
) -> TrainingSet:
    """Features, pixels and ids of the images the generator was trained on (cached per month)."""
    partition = context.partition_key
    trained_on = (trained_generator.attrs.get("data_fingerprint") or {}).get("partitions") or {}
    months = sorted(k for k in window if not trained_on or k in trained_on)
    missing = sorted(set(trained_on) - set(window))
    if missing:
        context.log.warning(f"memorization: trained on {missing} but those preprocessed_images are gone; checked {months}")
    features, pixels, ids = [], [], []
    for key in months:
        bundle = window[key]
        packed = bundle["images"]
        feats = month.features if key == partition else real_features_cached(store, key, extractor, packed).features
        features.append(feats)
        pixels.append(packed)
        names = bundle.arrays.get("ids")
        ids += [f"{key}/{i}" for i in (names if names is not None else range(len(packed)))]
    return TrainingSet(np.concatenate(features), unpack_images(np.concatenate(pixels)), tuple(ids), tuple(months))


def _closest_pairs_png(fakes: np.ndarray, training: TrainingSet, closest: list[dict[str, Any]]) -> bytes:
    """Rows of (generated sample, nearest training image), closest first, at most 64 px per tile."""
    index = {name: i for i, name in enumerate(training.ids)}
    tiles = []
    for pair in closest[:4]:
        tiles += [fakes[pair["sample"]], training.pixels[index[pair["nearest_training_id"]]]]
    side = min(PAIR_TILE_SIDE, fakes.shape[-1])
    small = [np.asarray(Image.fromarray(tile).resize((side, side), Image.Resampling.BILINEAR))
             for tile in to_uint8(np.stack(tiles))]
    return grid_png(np.stack(small), columns=2)


VERDICTS = {
    "passed": "PASSED",
    "failed": "FAILED (a retrain may follow)",
    "rejected": "REJECTED (attempts exhausted)",
    "not_discriminative": "NOT DISCRIMINATIVE (the metric cannot tell real images from the controls; no retrain)",
    "memorized": "MEMORIZED (near-copies of training images; a retrain against copying may follow)",
}


SCORES_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("metric", "string"), dg.TableColumn("value", "float"), dg.TableColumn("detail", "string"),
])
CONTROLS_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("control", "string"), dg.TableColumn("kind", "string", description="negative: the gate must fail it"),
    dg.TableColumn("fid", "float"), dg.TableColumn("kid", "float"),
    dg.TableColumn("gate_says", "string"), dg.TableColumn("right", "bool", description="the gate said what it must"),
])


def scores_table(score: FidScore) -> dg.TableMetadataValue:
    """The month's scores beside what they are compared with, one row per figure."""
    fp = score.fingerprint
    details = score.memorization.details
    limit = f"of {details['n_generated']} generated, limit {score.memorization.max_near_copy_fraction:.2%}"
    rows = [
        ("FID", score.fid, ""),
        ("threshold", score.threshold, score.threshold_rule),
        ("gate separation", score.gate.separation,
         f"minimum {score.gate.min_separation:g}: {'discriminative' if score.gate.discriminative else 'NOT discriminative'}"),
        ("floor FID (real vs real)", score.floor_fid, ""),
        ("KID mean", score.kid_mean, f"std {score.kid_std:.5f}"),
        ("floor KID", score.floor_kid, ""),
        ("images real", score.n_real, f"{score.n_reference} in the reference half"),
        ("images generated", score.n_fake, ""),
        ("near-copies, feature space", details["feature_space"]["near_copies"], limit),
        ("near-copies, pixel space", details["pixel_space"]["near_copies"], limit),
        ("extractor features", fp["feature_dim"],
         f"{fp['extractor']}, {fp['input_size']} px, sha256 {fp['weights_sha256'][:12]}"),
    ]
    return dg.MetadataValue.table(
        [dg.TableRecord({"metric": metric, "value": finite_or_none(value), "detail": detail}) for metric, value, detail in rows],
        schema=SCORES_SCHEMA,
    )


def controls_table(score: FidScore) -> dg.TableMetadataValue:
    """The controls: what the gate said about each, and whether that was right."""
    return dg.MetadataValue.table([
        dg.TableRecord({"control": control.name, "kind": control.kind, "fid": finite_or_none(control.fid),
                        "kid": finite_or_none(control.kid), "gate_says": "pass" if control.passed else "fail",
                        "right": bool(control.verdict_correct)})
        for control in score.controls
    ], schema=CONTROLS_SCHEMA)


def summary_metadata(score: FidScore) -> dict[str, Any]:
    """The verdict in words, and the scores and controls as tables the UI sorts and filters."""
    return {"summary": dg.MetadataValue.md(_summary_markdown(score)),
            "scores": scores_table(score), "controls": controls_table(score)}


def _summary_markdown(score: FidScore) -> str:
    fp = score.fingerprint
    lines = [
        f"**{VERDICTS[score.status]}** - attempt {score.attempt} of {score.max_attempts}: "
        f"FID {score.fid:.4f} against a threshold of {score.threshold:.4f} ({score.threshold_rule}).",
        "",
        f"Threshold: {score.gate.rule}. The scores and the controls are in the tables beside this summary.",
    ]
    if score.gate.reasons:
        lines += ["", "Not discriminative: " + "; ".join(score.gate.reasons) + "."]
    if score.small_sample:
        lines += ["", f"Small sample: fewer images than feature dimensions ({fp['feature_dim']}); "
                      "FID is biased upwards and KID is the more reliable number."]
    previous = score.previous_score
    if previous and not previous.comparable:
        lines += ["", "Previous attempt scored with a different fingerprint (not comparable): "
                      + "; ".join(previous.fingerprint_differences)]
    return "\n".join(lines)


def score_metadata(score: FidScore) -> dict[str, Any]:
    """Numbers as numeric metadata (plotted across months), one entry per control."""
    metadata: dict[str, Any] = {
        "fid": dg.MetadataValue.float(score.fid),
        "kid_mean": dg.MetadataValue.float(score.kid_mean),
        "kid_std": dg.MetadataValue.float(score.kid_std),
        "floor_fid": dg.MetadataValue.float(score.floor_fid),
        "floor_kid": dg.MetadataValue.float(score.floor_kid),
        "threshold": dg.MetadataValue.float(score.threshold),
        "threshold_rule": dg.MetadataValue.text(score.threshold_rule),
        "gate_rule": dg.MetadataValue.text(score.gate.rule),
        "discriminative": dg.MetadataValue.bool(score.gate.discriminative),
        "separation": dg.MetadataValue.float(score.gate.separation),
        "passed": dg.MetadataValue.bool(score.passed),
        "attempt": dg.MetadataValue.int(score.attempt),
        "max_attempts": dg.MetadataValue.int(score.max_attempts),
        "status": dg.MetadataValue.text(score.status),
        "n_real": dg.MetadataValue.int(score.n_real),
        "n_reference": dg.MetadataValue.int(score.n_reference),
        "n_fake": dg.MetadataValue.int(score.n_fake),
        "small_sample": dg.MetadataValue.bool(score.small_sample),
        "near_copy_fraction": dg.MetadataValue.float(score.memorization.near_copy_fraction),
        "near_copy_fraction_pixels": dg.MetadataValue.float(
            float(score.memorization.details["pixel_space"]["near_copy_fraction"])),
        "memorized": dg.MetadataValue.bool(score.memorization.memorized),
        "extractor": dg.MetadataValue.text(score.extractor),
        "fingerprint_id": dg.MetadataValue.text(str(score.fingerprint["id"])),
        "fingerprint": dg.MetadataValue.json(dict(score.fingerprint)),
        "config": dg.MetadataValue.json(dict(score.config)),
        "config_diff": dg.MetadataValue.json(dict(score.config_diff)),
    }
    for control in score.controls:
        metadata[f"control/{control.name}/fid"] = dg.MetadataValue.float(control.fid)
        metadata[f"control/{control.name}/kid"] = dg.MetadataValue.float(control.kid)
    return metadata


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
    code_version=CODE_VERSION,
    partitions_def=monthly_partitions,
    **stage(GROUP_MODEL),
    # One input over the training window including this month (Dagster maps one upstream asset
    # to one input): the body trains on the earlier months and reads this month only for the
    # held-out-half fallback.
    ins={
        "preprocessed_images": TRAINING_WINDOW_INPUT,
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
    window = training_window(preprocessed_images, context.asset_partition_keys_for_input("preprocessed_images"),
                             partition)
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
    return dg.Output(TensorBundle(tensors=tensors, attrs=attrs), metadata=metadata,
                     data_version=dg.DataVersion(weights.sha256[:32]))


@dg.asset(
    code_version=CODE_VERSION,
    partitions_def=monthly_partitions,
    **stage(GROUP_MODEL),
    ins={
        "trained_generator": dg.AssetIn(),
        "fid_feature_extractor": dg.AssetIn(),
        "preprocessed_images": TRAINING_WINDOW_INPUT,
    },
    kinds={"pytorch", "numpy"},
)
def fid_score(
    context: dg.AssetExecutionContext,
    evaluation_config: EvaluationBar,
    fid_extractor: FidExtractor,
    artifact_store: dg.ResourceParam[ArtifactStoreResource],
    cloudwatch: CloudWatchMetrics,
    trained_generator: TensorBundle,
    fid_feature_extractor: TensorBundle,
    preprocessed_images: Any,
) -> dict[str, Any]:
    """FID/KID of the trained generator and of the controls against the month's real images, the gate, memorization."""
    partition = context.partition_key
    attempt = run_attempt(context)
    extractor = fid_extractor.build_for(fid_feature_extractor)
    store = artifact_store.object_store()

    window = training_window(preprocessed_images, context.asset_partition_keys_for_input("preprocessed_images"),
                             partition)
    if partition not in window:
        raise dg.Failure(description=f"no preprocessed_images for {partition}: materialize it before fid_score")
    packed = window[partition]["images"]
    if len(packed) < MIN_REAL_IMAGES:
        raise dg.Failure(
            description=f"preprocessed_images[{partition}] has {len(packed)} images; fid_score needs at least "
                        f"{MIN_REAL_IMAGES} (two halves: the reference set and the held-out controls). "
                        "Ingest more images for this month."
        )
    image_size = int(packed.shape[-1])
    generator_size = int(trained_generator.attrs.get("config", {}).get("image_size", image_size))
    if generator_size != image_size:
        raise dg.Failure(
            description=f"trained_generator makes {generator_size} px images but preprocessed_images[{partition}] "
                        f"has {image_size} px: re-materialize trained_generator for this month"
        )

    real = real_features_cached(store, partition, extractor, packed)
    context.log.info(
        f"real features for {partition}: {'cache hit' if real.cache_hit else 'computed and cached'} at {real.uri}"
    )
    training = _training_set(context, store, extractor, window, real, trained_generator)
    fake_seed = int(trained_generator.attrs.get("config", {}).get("seed", DEFAULTS.seed)) + FAKE_SEED_OFFSET
    device = str(extractor.device)
    generator = generator_from_bundle(trained_generator, device=device)
    evaluation = evaluate_month(
        extractor, unpack_images(packed),
        lambda count: sample_images(generator, count, seed=fake_seed, device=device),
        training,
        EvaluationSettings.from_config(evaluation_config.to_evaluation_config(),
                                       kid_num_subsets=fid_extractor.kid_subsets,
                                       kid_subset_size=fid_extractor.kid_subset_size),
        attempt,
        real_features=real.features, previous=_previous_score(context), partition=partition,
        config=trained_generator.attrs.get("config", {}), config_diff=_config_diff(context), fake_seed=fake_seed,
        real_features_record={"key": real.key, "uri": real.uri, "cache_hit": real.cache_hit,
                              "images_sha256": real.images_sha256},
    )
    score = evaluation.score

    if score.previous_score is not None and not score.previous_score.comparable:
        context.log.warning(
            f"previous fid_score of {partition} (attempt {score.previous_score.attempt}) used another fingerprint; "
            f"not comparable: {list(score.previous_score.fingerprint_differences)}"
        )
    if score.small_sample:
        context.log.warning(
            f"small sample: {score.n_reference} reference / {score.n_fake} generated images for {score.feature_dim} "
            "feature dimensions; FID is biased upwards, read KID alongside it"
        )
    if not score.gate.discriminative:
        context.log.warning(f"{partition}: the gate is not discriminative: {'; '.join(score.gate.reasons)}")
    if score.memorization.near_copy_fraction:
        context.log.warning(
            f"memorization: {score.memorization.near_copy_fraction:.2%} of {score.n_fake} generated images are "
            f"near-copies of training images (limit {score.memorization.max_near_copy_fraction:.2%})"
        )
    sent = cloudwatch.put_fid_metrics(partition, CLOUDWATCH_MODEL, score.fid, score.kid_mean)
    context.log.info(
        f"{partition} attempt {attempt}: FID {score.fid:.4f} vs threshold {score.threshold:.4f} "
        f"({score.gate.rule}), KID {score.kid_mean:.5f}, status {score.status}; "
        f"CloudWatch {'sent' if sent else 'not sent'}"
    )

    _record_in_history(context, store, score, trained_generator)
    if score.status == "rejected":
        _reject_month(context, score)
    closest = list(score.memorization.details.get("closest") or [])
    context.add_output_metadata({
        **summary_metadata(score),
        **score_metadata(score),
        "real_features_cache_hit": dg.MetadataValue.bool(real.cache_hit),
        "real_features_cache": dg.MetadataValue.path(real.uri),
        "fake_features_images_per_second": dg.MetadataValue.float(
            float(score.timings.get("fake_features_images_per_second") or 0.0)),
        "closest_pairs": dg.MetadataValue.md(
            "Generated sample (left) and its nearest training image (right), closest first:\n\n"
            + markdown_image(_closest_pairs_png(evaluation.samples, training, closest), "closest pairs")
        ),
    })
    return score.to_dict()


def _reject_month(context: dg.AssetExecutionContext, score: FidScore) -> None:
    """A month out of attempts fails its fid_score step, so its partition shows as failed, not green.

    The score is kept all the same, as an observation of fid_score: the retrain sensor reads it
    and tells the notifier once, the report's trend reads it, a person sees it in the UI.
    """
    context.log_event(dg.AssetObservation(
        asset_key=context.asset_key, partition=context.partition_key,
        metadata={**summary_metadata(score), **score_metadata(score)},
    ))
    raise dg.Failure(description=check_result(score).description,
                     metadata={"status": score.status, "fid": score.fid, "threshold": score.threshold,
                               "attempt": score.attempt, "max_attempts": score.max_attempts},
                     allow_retries=False)


def _record_in_history(context: dg.AssetExecutionContext, store: ObjectStore, score: FidScore,
                       trained_generator: TensorBundle) -> None:
    """Keep the attempt's score beside its weights; promote the attempt when it passed."""
    attrs = trained_generator.attrs
    training_run = str(attrs.get("run_id") or "")
    attempt = int(attrs.get("attempt", score.attempt))
    summary = {"status": score.status, "passed": score.passed, "fid": score.fid, "kid_mean": score.kid_mean,
               "threshold": score.threshold, "attempt": score.attempt, "scoring_run_id": context.run_id}
    save_attempt_score(store, context.partition_key, attempt, training_run, summary)
    if not score.passed:
        return
    weights_key = attrs.get("history_key")
    weights_sha = attrs.get("weights_sha256")
    if not weights_key or not weights_sha:
        # A generator stored before model history existed: keep it now, so it can be promoted.
        weights_sha = state_dict_sha256(trained_generator.tensors)
        weights_key = save_attempt(store, context.partition_key, attempt, training_run, trained_generator)
    record = PromotedModel(
        partition=context.partition_key, attempt=attempt, training_run_id=training_run, scoring_run_id=context.run_id,
        weights_key=str(weights_key), weights_sha256=str(weights_sha),
        data_sha256=str((attrs.get("data_fingerprint") or {}).get("sha256", "")),
        code_version=str(attrs.get("code_version", "")), fid=score.fid, kid_mean=score.kid_mean)
    key = promote(store, record)
    context.log.info(f"{context.partition_key}: attempt {attempt} promoted (weights sha256 {record.weights_sha256[:16]}) "
                     f"-> {store.uri(key)}")
    context.add_output_metadata({"promoted_weights_sha256": dg.MetadataValue.text(record.weights_sha256),
                                 "promoted_weights": dg.MetadataValue.path(store.uri(record.weights_key))})


def check_result(score: FidScore) -> dg.AssetCheckResult:
    """The blocking verdict on one score: what failed, and what a person should do next."""
    fid, threshold = score.fid, score.threshold
    tries = f"attempt {score.attempt} of {score.max_attempts}"
    if score.status == "passed":
        description = f"FID {fid:.4f} <= threshold {threshold:.4f} ({tries}); the controls show the gate discriminates."
    elif score.status == "not_discriminative":
        description = (
            "NOT DISCRIMINATIVE: the metric, not the model, is at fault. With this feature extractor "
            f"({score.extractor}) and {score.n_reference} reference images the gate cannot tell real images from "
            f"the controls: {'; '.join(score.gate.reasons)}. No retrain can fix this. Choose another feature "
            "extractor (fid_extractor, e.g. a domain extractor trained on this modality) or score a month with "
            "more images, then re-materialize fid_score."
        )
    elif score.memorization.memorized:
        description = (
            f"{'REJECTED: ' if score.status == 'rejected' else ''}MEMORIZED: "
            f"{score.memorization.near_copy_fraction:.2%} of the scored samples are near-copies of training images "
            f"(limit {score.memorization.max_near_copy_fraction:.2%}), a privacy failure, whatever the FID "
            f"({fid:.4f} vs {threshold:.4f}); {tries}. "
            + ("Attempts are exhausted: this month gets no samples or report until someone changes the config."
               if score.status == "rejected" else
               "The retrain sensor will request another attempt with stronger augmentation and fewer steps.")
        )
    elif score.status == "rejected":
        description = (
            f"REJECTED: FID {fid:.4f} > threshold {threshold:.4f} on {tries}; "
            "attempts are exhausted, this month gets no samples or report until someone changes the config."
        )
    else:
        description = f"FID {fid:.4f} > threshold {threshold:.4f} on {tries}; the retrain sensor will request another attempt."
    return dg.AssetCheckResult(
        passed=score.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "fid": dg.MetadataValue.float(fid),
            "threshold": dg.MetadataValue.float(threshold),
            "threshold_rule": dg.MetadataValue.text(score.threshold_rule),
            "discriminative": dg.MetadataValue.bool(score.gate.discriminative),
            "memorized": dg.MetadataValue.bool(score.memorization.memorized),
            "attempt": dg.MetadataValue.int(score.attempt),
            "max_attempts": dg.MetadataValue.int(score.max_attempts),
            "status": dg.MetadataValue.text(score.status),
            "rejected": dg.MetadataValue.bool(score.status == "rejected"),
            "floor_fid": dg.MetadataValue.float(score.floor_fid),
            "extractor": dg.MetadataValue.text(score.extractor),
        },
    )


@dg.asset_check(
    asset=fid_score,
    blocking=True,
    partitions_def=monthly_partitions,
    description="FID within the threshold, a gate whose controls show it can discriminate, and no memorization; "
                "blocks samples and report when it fails.",
)
def fid_within_threshold(fid_score: dict[str, Any]) -> dg.AssetCheckResult:
    """Pass iff fid_score passed; a failure blocks everything downstream in the run."""
    return check_result(FidScore.from_dict(fid_score))
