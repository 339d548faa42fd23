"""Step 3: score the trained generator against the month's real images (FID, KID, floor,
memorization), and gate everything downstream with the blocking check ``fid_within_threshold``.

The memorization check compares generated samples with the images the generator was trained
on: the same ``preprocessed_images`` window that ``trained_generator`` reads (the month and the
``TRAINING_WINDOW_MONTHS - 1`` months before it), restricted to the months its
``data_fingerprint`` lists. FID/KID and the floor use the month's own images only.
"""

# No ``from __future__ import annotations``: Dagster reads the asset's parameter annotations
# (context, resources, inputs) at definition time and needs them as real objects.
import json
import time
from typing import Any, Protocol

import dagster as dg
import numpy as np
from PIL import Image

from gan_assets.assets.common import CONFIG_DIFF_TAG, GROUP_MODEL, run_attempt
from gan_assets.metrics.cache import RealFeatures, real_features_cached
from gan_assets.metrics.extractors import FeatureExtractor, compare_fingerprints
from gan_assets.metrics.memorization import memorization_report
from gan_assets.metrics.score import MIN_REAL_IMAGES, score
from gan_assets.model.artifact import generator_from_bundle, sample_images
from gan_assets.partitions import TRAINING_WINDOW_MONTHS, monthly_partitions
from gan_assets.report.images import grid_png, markdown_image, to_uint8
from gan_assets.resources import CloudWatchMetrics, FidExtractor, GanConfig
from gan_assets.storage import ArrayBundle, ObjectStore, StorageFormatError, TensorBundle, decode
from gan_assets.storage.images import pack_images, unpack_images

ASSET = "fid_score"
CLOUDWATCH_MODEL = "dcgan"
# Generated images for scoring use their own noise stream, apart from generated_samples' seed.
FAKE_SEED_OFFSET = 1_000_003
# Floor split and KID subsets use one fixed seed so every attempt of a month sees the same floor.
EVAL_SEED = 0
PAIR_TILE_SIDE = 64

TRAINING_WINDOW = dg.TimeWindowPartitionMapping(
    start_offset=-(TRAINING_WINDOW_MONTHS - 1),
    end_offset=0,
    # The first months have no full window: score against what exists.
    allow_nonexistent_upstream_partitions=True,
)


class ArtifactStoreResource(Protocol):
    """LocalArtifactStore or S3ArtifactStore: both hand out the ObjectStore of the artifact root."""

    def object_store(self) -> ObjectStore: ...


def _window_bundles(context: dg.AssetExecutionContext, loaded: Any) -> dict[str, ArrayBundle]:
    """The window input as {partition: bundle}; the IO manager returns a bare bundle for one key."""
    if loaded is None:
        return {}
    if isinstance(loaded, ArrayBundle):
        keys = context.asset_partition_keys_for_input("preprocessed_images")
        key = str(loaded.attrs.get("partition") or (keys[-1] if keys else context.partition_key))
        return {key: loaded}
    return {str(k): v for k, v in dict(loaded).items() if v is not None}


def _fake_images(trained_generator: TensorBundle, count: int, seed: int, device: str) -> np.ndarray:
    generator = generator_from_bundle(trained_generator, device=device)
    # Through the same uint8 quantisation as the stored real images, so quantisation itself
    # never shows up as a distance between the two sets.
    return unpack_images(pack_images(sample_images(generator, count, seed=seed, device=device)))


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


def _previous_score(store: ObjectStore, partition: str, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The month's previously stored score (an earlier attempt) and whether it is comparable."""
    key = f"{ASSET}/{partition}.json"
    if not store.exists(key):
        return None
    try:
        previous = decode("json", store.get(key), where=store.uri(key))
    except StorageFormatError:
        return None
    if not isinstance(previous, dict) or not isinstance(previous.get("fingerprint"), dict):
        return None
    differences = compare_fingerprints(previous["fingerprint"], fingerprint)
    return {
        "attempt": previous.get("attempt"),
        "fid": previous.get("fid"),
        "kid_mean": previous.get("kid_mean"),
        "status": previous.get("status"),
        "comparable": not differences,
        "fingerprint_differences": differences,
    }


def _training_set(
    context: dg.AssetExecutionContext,
    store: ObjectStore,
    extractor: FeatureExtractor,
    window: dict[str, ArrayBundle],
    month: RealFeatures,
    trained_generator: TensorBundle,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
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
    return np.concatenate(features), unpack_images(np.concatenate(pixels)), ids, months


def _closest_pairs_png(fakes: np.ndarray, train_pixels: np.ndarray, closest: list[dict[str, Any]], ids: list[str]) -> bytes:
    """Rows of (generated sample, nearest training image), closest first, at most 64 px per tile."""
    index = {name: i for i, name in enumerate(ids)}
    tiles = []
    for pair in closest[:4]:
        tiles += [fakes[pair["sample"]], train_pixels[index[pair["nearest_training_id"]]]]
    side = min(PAIR_TILE_SIDE, fakes.shape[-1])
    small = [np.asarray(Image.fromarray(tile).resize((side, side), Image.Resampling.BILINEAR))
             for tile in to_uint8(np.stack(tiles))]
    return grid_png(np.stack(small), columns=2)


def _summary_markdown(result: dict[str, Any]) -> str:
    fp = result["fingerprint"]
    mem = result["memorization"]
    verdict = {"passed": "PASSED", "failed": "FAILED (a retrain may follow)", "rejected": "REJECTED (attempts exhausted)"}
    lines = [
        f"**{verdict[result['status']]}** - attempt {result['attempt']} of {result['max_attempts']}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| FID | {result['fid']:.4f} |",
        f"| threshold ({result['threshold_mode']}) | {result['threshold']:.4f} |",
        f"| real-vs-real floor FID | {result['floor_fid']:.4f} |",
        f"| KID (mean +- std) | {result['kid_mean']:.5f} +- {result['kid_std']:.5f} |",
        f"| floor KID | {result['floor_kid']:.5f} |",
        f"| images real / generated | {result['n_real']} / {result['n_fake']} |",
        f"| near-copies (feature / pixel space) | {mem['feature_space']['near_copies']} / {mem['pixel_space']['near_copies']} of {mem['n_generated']} |",
        f"| extractor | {fp['extractor']} ({fp['feature_dim']} features, {fp['input_size']} px, sha256 {fp['weights_sha256'][:12]}) |",
    ]
    if result["small_sample"]:
        lines += ["", f"Small sample: fewer images than feature dimensions ({fp['feature_dim']}); "
                      "FID is biased upwards and KID is the more reliable number."]
    previous = result.get("previous_score")
    if previous and not previous["comparable"]:
        lines += ["", "Previous attempt scored with a different fingerprint (not comparable): "
                      + "; ".join(previous["fingerprint_differences"])]
    return "\n".join(lines)


@dg.asset(
    partitions_def=monthly_partitions,
    group_name=GROUP_MODEL,
    ins={
        "trained_generator": dg.AssetIn(),
        "preprocessed_images": dg.AssetIn(
            partition_mapping=TRAINING_WINDOW,
            metadata={"allow_missing_partitions": True},
        ),
    },
    kinds={"pytorch", "numpy"},
)
def fid_score(
    context: dg.AssetExecutionContext,
    gan_config: GanConfig,
    fid_extractor: FidExtractor,
    artifact_store: dg.ResourceParam[ArtifactStoreResource],
    cloudwatch: CloudWatchMetrics,
    trained_generator: TensorBundle,
    preprocessed_images: Any,
) -> dict[str, Any]:
    """FID, KID, real-vs-real floor and memorization of the trained generator against the month's real images."""
    partition = context.partition_key
    attempt = run_attempt(context)
    settings = gan_config.to_train_config()
    started = time.perf_counter()
    extractor = fid_extractor.build()
    store = artifact_store.object_store()

    window = _window_bundles(context, preprocessed_images)
    if partition not in window:
        raise dg.Failure(description=f"no preprocessed_images for {partition}: materialize it before fid_score")
    packed = window[partition]["images"]
    if len(packed) < MIN_REAL_IMAGES:
        raise dg.Failure(
            description=f"preprocessed_images[{partition}] has {len(packed)} images; fid_score needs at least "
                        f"{MIN_REAL_IMAGES} (two halves for the real-vs-real floor). Ingest more images for this month."
        )
    image_size = int(packed.shape[-1])
    generator_size = int(trained_generator.attrs.get("config", {}).get("image_size", image_size))
    if generator_size != image_size:
        raise dg.Failure(
            description=f"trained_generator makes {generator_size} px images but preprocessed_images[{partition}] "
                        f"has {image_size} px: re-materialize trained_generator for this month"
        )

    t0 = time.perf_counter()
    real = real_features_cached(store, partition, extractor, packed)
    real_seconds = time.perf_counter() - t0
    context.log.info(
        f"real features for {partition}: {'cache hit' if real.cache_hit else 'computed and cached'} at {real.uri}"
    )

    n_real = len(packed)
    n_fake = settings.fid_num_fake or n_real
    fake_seed = int(trained_generator.attrs.get("config", {}).get("seed", settings.seed)) + FAKE_SEED_OFFSET
    t0 = time.perf_counter()
    fakes = _fake_images(trained_generator, n_fake, fake_seed, str(extractor.device))
    sample_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    fake_features = extractor.extract(fakes)
    fake_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    scored = score(
        real.stats, real.features, fake_features,
        threshold_mode=settings.threshold_mode, fid_threshold=settings.fid_threshold,
        relative_factor=settings.relative_factor, attempt=attempt, max_attempts=settings.max_attempts,
        seed=EVAL_SEED, kid_num_subsets=fid_extractor.kid_subsets, kid_subset_size=fid_extractor.kid_subset_size,
    )
    score_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    train_features, train_pixels, train_ids, train_months = _training_set(
        context, store, extractor, window, real, trained_generator
    )
    memorization = memorization_report(
        fake_features, train_features, fakes, train_pixels,
        threshold=settings.memorization_threshold, train_ids=train_ids, seed=EVAL_SEED,
    )
    memorization["training_partitions"] = train_months
    memorization_seconds = time.perf_counter() - t0

    fingerprint = extractor.fingerprint(image_size, n_real, n_fake)
    result: dict[str, Any] = {
        **scored,
        "memorization": memorization,
        "fingerprint": fingerprint,
        "extractor": fingerprint["extractor"],
        "config": trained_generator.attrs.get("config", {}),
        "config_diff": _config_diff(context),
        "partition": partition,
        "fake_seed": fake_seed,
        "eval_seed": EVAL_SEED,
        "real_features": {"key": real.key, "uri": real.uri, "cache_hit": real.cache_hit, "images_sha256": real.images_sha256},
        "timings": {
            "real_features_seconds": round(real_seconds, 4),
            "sample_seconds": round(sample_seconds, 4),
            "fake_features_seconds": round(fake_seconds, 4),
            "fake_features_images_per_second": round(n_fake / fake_seconds, 2) if fake_seconds > 0 else None,
            "score_seconds": round(score_seconds, 4),
            "memorization_seconds": round(memorization_seconds, 4),
            "total_seconds": round(time.perf_counter() - started, 4),
        },
    }
    previous = _previous_score(store, partition, fingerprint)
    if previous is not None:
        result["previous_score"] = previous
        if not previous["comparable"]:
            context.log.warning(
                f"previous fid_score of {partition} (attempt {previous['attempt']}) used another fingerprint; "
                f"not comparable: {previous['fingerprint_differences']}"
            )
    if result["small_sample"]:
        context.log.warning(
            f"small sample: {n_real} real / {n_fake} generated images for {fingerprint['feature_dim']} feature "
            "dimensions; FID is biased upwards, read KID alongside it"
        )
    if memorization["feature_space"]["near_copies"]:
        context.log.warning(
            f"memorization: {memorization['feature_space']['near_copies']} of {n_fake} generated images are near-copies "
            f"of training images (feature space; threshold {settings.memorization_threshold})"
        )

    sent = cloudwatch.put_fid_metrics(partition, CLOUDWATCH_MODEL, result["fid"], result["kid_mean"])
    context.log.info(
        f"{partition} attempt {attempt}: FID {result['fid']:.4f} vs threshold {result['threshold']:.4f} "
        f"({result['threshold_mode']}), KID {result['kid_mean']:.5f}, status {result['status']}; "
        f"CloudWatch {'sent' if sent else 'not sent'}"
    )

    metadata: dict[str, Any] = {
        "summary": dg.MetadataValue.md(_summary_markdown(result)),
        "fid": dg.MetadataValue.float(result["fid"]),
        "kid_mean": dg.MetadataValue.float(result["kid_mean"]),
        "kid_std": dg.MetadataValue.float(result["kid_std"]),
        "floor_fid": dg.MetadataValue.float(result["floor_fid"]),
        "floor_kid": dg.MetadataValue.float(result["floor_kid"]),
        "threshold": dg.MetadataValue.float(result["threshold"]),
        "threshold_mode": dg.MetadataValue.text(result["threshold_mode"]),
        "passed": dg.MetadataValue.bool(result["passed"]),
        "attempt": dg.MetadataValue.int(attempt),
        "max_attempts": dg.MetadataValue.int(settings.max_attempts),
        "status": dg.MetadataValue.text(result["status"]),
        "n_real": dg.MetadataValue.int(n_real),
        "n_fake": dg.MetadataValue.int(n_fake),
        "small_sample": dg.MetadataValue.bool(result["small_sample"]),
        "near_copy_fraction": dg.MetadataValue.float(memorization["near_copy_fraction"]),
        "near_copy_fraction_pixels": dg.MetadataValue.float(memorization["pixel_space"]["near_copy_fraction"]),
        "extractor": dg.MetadataValue.text(fingerprint["extractor"]),
        "fingerprint_id": dg.MetadataValue.text(fingerprint["id"]),
        "fingerprint": dg.MetadataValue.json(fingerprint),
        "real_features_cache_hit": dg.MetadataValue.bool(real.cache_hit),
        "real_features_cache": dg.MetadataValue.path(real.uri),
        "fake_features_images_per_second": dg.MetadataValue.float(float(result["timings"]["fake_features_images_per_second"] or 0.0)),
        "config": dg.MetadataValue.json(result["config"]),
        "config_diff": dg.MetadataValue.json(result["config_diff"]),
        "closest_pairs": dg.MetadataValue.md(
            "Generated sample (left) and its nearest training image (right), closest first:\n\n"
            + markdown_image(_closest_pairs_png(fakes, train_pixels, memorization["closest"], train_ids), "closest pairs")
        ),
    }
    context.add_output_metadata(metadata)
    return result


@dg.asset_check(
    asset=fid_score,
    blocking=True,
    partitions_def=monthly_partitions,
    description="FID within the threshold (absolute, or relative to the real-vs-real floor); blocks samples and report when it fails.",
)
def fid_within_threshold(fid_score: dict[str, Any]) -> dg.AssetCheckResult:
    """Pass iff fid_score passed; a failure blocks everything downstream in the run."""
    status = str(fid_score.get("status", "failed"))
    passed = bool(fid_score.get("passed")) and status == "passed"
    attempt, max_attempts = int(fid_score.get("attempt", 1)), int(fid_score.get("max_attempts", 1))
    fid, threshold = float(fid_score["fid"]), float(fid_score["threshold"])
    if passed:
        description = f"FID {fid:.4f} <= threshold {threshold:.4f} (attempt {attempt} of {max_attempts})."
    elif status == "rejected":
        description = (
            f"REJECTED: FID {fid:.4f} > threshold {threshold:.4f} on attempt {attempt} of {max_attempts}; "
            "attempts are exhausted, this month gets no samples or report until someone changes the config."
        )
    else:
        description = (
            f"FID {fid:.4f} > threshold {threshold:.4f} on attempt {attempt} of {max_attempts}; "
            "the retrain sensor will request another attempt."
        )
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "fid": dg.MetadataValue.float(fid),
            "threshold": dg.MetadataValue.float(threshold),
            "threshold_mode": dg.MetadataValue.text(str(fid_score.get("threshold_mode", ""))),
            "attempt": dg.MetadataValue.int(attempt),
            "max_attempts": dg.MetadataValue.int(max_attempts),
            "status": dg.MetadataValue.text(status),
            "rejected": dg.MetadataValue.bool(status == "rejected"),
            "floor_fid": dg.MetadataValue.float(float(fid_score.get("floor_fid", 0.0))),
            "extractor": dg.MetadataValue.text(str((fid_score.get("fingerprint") or {}).get("extractor", ""))),
        },
    )
