"""Shared by the quality benchmarks: the demo training window and the month it is scored on.

The images come through the ingest core (``scan_month`` -> ``preprocess_month``, the functions
the ``dicom_manifest`` and ``preprocessed_images`` assets run) with the default preprocessing,
so a benchmark trains on exactly what ``make demo`` trains on. Scoring helpers build the feature
extractor from ``FidExtractor`` (the ``fid_extractor`` resource), so ``--extractor`` accepts the
same kinds the pipeline does.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gan_assets.demo.data import DEFAULT_MONTHS, generate_landing_zone, landing_zone_has_files
from gan_assets.dicom.batch import preprocess_month, scan_month
from gan_assets.metrics.domain_encoder import train_domain_encoder
from gan_assets.metrics.extractors import DomainExtractor, FeatureExtractor
from gan_assets.metrics.frechet import frechet_distance_features
from gan_assets.metrics.kid import kernel_inception_distance
from gan_assets.model.artifact import sample_images
from gan_assets.model.config import TrainConfig
from gan_assets.model.dcgan import build_generator
from gan_assets.resources import FidExtractor, PreprocessConfig, dicom_source_from_env
from gan_assets.storage.images import unpack_images

DEFAULT_LANDING_ZONE = "/tmp/ladder-lz"
# Seed of the noise the scored samples are drawn from: the same for every arm.
SAMPLE_SEED = 1234


@dataclass(frozen=True)
class DemoWindow:
    train: np.ndarray  # float32 N x S x S in [-1, 1]: every month of the window, in order
    month_real: np.ndarray  # float32: the scored (last) month's real images
    months: tuple[str, ...]

    @property
    def earlier(self) -> np.ndarray:
        """The months before the scored one: what fid_feature_extractor trains the domain encoder on."""
        return self.train[: len(self.train) - len(self.month_real)]


def load_demo_window(landing_zone: str, image_size: int, months: tuple[str, ...] = DEFAULT_MONTHS) -> DemoWindow:
    """Preprocess the demo window (writing the demo landing zone first when the folder is empty)."""
    if not landing_zone_has_files(landing_zone):
        Path(landing_zone).mkdir(parents=True, exist_ok=True)
        generate_landing_zone(landing_zone, months=months, workers=1)
    source = dicom_source_from_env(landing_zone)
    preprocess = PreprocessConfig(workers=1)
    key = source.key()
    per_month: list[np.ndarray] = []
    for month in months:
        rows = scan_month(source.source_spec(), month, preprocess.scan_options(source.date_tags), key=key, workers=1).rows
        result = preprocess_month(source.source_spec(), rows, preprocess.options(image_size), key=key, workers=1)
        per_month.append(unpack_images(result.images))
    return DemoWindow(train=np.concatenate(per_month), month_real=per_month[-1], months=tuple(months))


def add_extractor_arguments(parser: argparse.ArgumentParser) -> None:
    default = FidExtractor().kind
    parser.add_argument("--extractor", default=default,
                        help=f"fid_extractor kind (as FidExtractor.kind offers: {FidExtractor.model_fields['kind'].description}); "
                             f"default {default!r}, the pipeline's default")
    parser.add_argument("--torchscript-path", default="", help="feature network file for --extractor torchscript")


def build_extractor(args: argparse.Namespace, window: DemoWindow) -> FeatureExtractor:
    """The extractor the pipeline would score the window's last month with (the domain encoder
    trained, as fid_feature_extractor trains it, on the earlier months)."""
    return extractor_of_kind(args.extractor, window, torchscript_path=args.torchscript_path)


def extractor_of_kind(kind: str, window: DemoWindow, torchscript_path: str = "") -> FeatureExtractor:
    resource = FidExtractor(kind=kind, torchscript_path=torchscript_path)
    if kind != "domain":
        return resource.build()
    weights = train_domain_encoder(window.earlier, seed=resource.domain_seed, settings=resource.domain_settings())
    return DomainExtractor(weights, batch_size=resource.batch_size, device=resource.device)


def generator_samples(state: dict[str, torch.Tensor], config: TrainConfig, count: int) -> np.ndarray:
    generator = build_generator(config)
    generator.load_state_dict(state)
    generator.eval()
    with torch.no_grad():
        return sample_images(generator, count, SAMPLE_SEED)


@dataclass(frozen=True)
class Score:
    fid: float
    kid: float


def score_features(real_features: np.ndarray, fake_features: np.ndarray) -> Score:
    # KID subsets of half the smaller set, so subsets differ (a subset of the whole set has no spread).
    size = max(2, min(len(real_features), len(fake_features)) // 2)
    kid = kernel_inception_distance(real_features, fake_features, num_subsets=100, subset_size=size, seed=0)
    return Score(fid=frechet_distance_features(real_features, fake_features), kid=float(kid.mean))


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and half the range (the spread of 2-3 seeds, honestly stated as a range)."""
    return statistics.fmean(values), (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
