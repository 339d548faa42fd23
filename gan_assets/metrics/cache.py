"""Real-image features cached per (month, extractor fingerprint) in the artifact store.

Key: ``storage.layout.real_features_key`` (``fid_score/real_features/{fingerprint_id}/{partition}.npz``) holding the float32 features
and their float64 mean/covariance. Retrain attempts of a month reuse it. The entry records the
SHA-256 of the exact uint8 images it was computed from, so a re-ingested month is recomputed
rather than silently scored against stale statistics.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from gan_assets.metrics.extractors import FeatureExtractor
from gan_assets.metrics.frechet import GaussianStats, feature_statistics
from gan_assets.storage import ArrayBundle, ObjectStore, StorageFormatError, decode, encode
from gan_assets.storage.images import unpack_images
from gan_assets.storage.layout import real_features_key

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RealFeatures:
    features: np.ndarray  # float32, N x D
    stats: GaussianStats
    cache_hit: bool
    key: str
    uri: str
    images_sha256: str


def images_sha256(packed: np.ndarray) -> str:
    """SHA-256 of the uint8 images (shape and bytes), identifying the exact data scored."""
    packed = np.ascontiguousarray(packed)
    digest = hashlib.sha256(f"{packed.dtype}{packed.shape}".encode())
    digest.update(packed.tobytes())
    return digest.hexdigest()


def real_features_cached(store: ObjectStore, partition: str, extractor: FeatureExtractor,
                         packed_images: np.ndarray) -> RealFeatures:
    """Features and statistics of one month's real images, from the cache or computed and stored."""
    if packed_images.ndim != 3 or packed_images.dtype != np.uint8:
        raise ValueError(
            f"preprocessed_images[{partition}] must be uint8 N x H x W, got {packed_images.dtype} {packed_images.shape}"
        )
    image_size = int(packed_images.shape[-1])
    fingerprint_id = extractor.fingerprint_id(image_size)
    key = real_features_key(fingerprint_id, partition)
    data_hash = images_sha256(packed_images)
    if store.exists(key):
        try:
            cached = decode("npz", store.get(key), where=store.uri(key))
        except StorageFormatError as err:
            log.warning("Ignoring unreadable real-feature cache %s (%s); recomputing", store.uri(key), err)
        else:
            if cached.attrs.get("images_sha256") == data_hash and cached.attrs.get("fingerprint_id") == fingerprint_id:
                stats = GaussianStats(mu=cached["mu"], sigma=cached["sigma"], count=int(cached["features"].shape[0]))
                return RealFeatures(cached["features"], stats, True, key, store.uri(key), data_hash)
            log.info("Real-feature cache %s was computed from other images; recomputing", store.uri(key))
    features = extractor.extract(unpack_images(packed_images))
    stats = feature_statistics(features)
    bundle = ArrayBundle(
        arrays={"features": features, "mu": stats.mu, "sigma": stats.sigma},
        attrs={
            "partition": partition,
            "fingerprint_id": fingerprint_id,
            "fingerprint": extractor.describe(image_size),
            "images_sha256": data_hash,
            "n_images": int(features.shape[0]),
        },
    )
    uri = store.put(key, encode(bundle)[1])
    return RealFeatures(features, stats, False, key, uri, data_hash)
