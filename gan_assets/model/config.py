"""Training, evaluation and generation settings: one validated schema per concern, and the defaults.

Each class is a frozen pydantic model: choices are ``Literal`` (the launchpad shows them as a
list), every number has bounds, and each bound's reason is in its description. The Dagster
resources ``gan_config``, ``evaluation_config`` and ``generation_config`` (resources.py) inherit
these fields rather than repeating them, and hand the cores a plain instance of the class below.

Training (:class:`TrainConfig`) is what the retrain sensor may change between attempts; the bar
an attempt is judged by (:class:`EvaluationConfig`) is a schema apart, which the sensor never
sets: changing the bar between attempts would let a retry pass by lowering it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

AugmentPolicy = Literal["", "translation", "cutout", "translation,cutout", "cutout,translation"]
Loss = Literal["bce", "hinge"]
# "auto", "cpu", "cuda" or "cuda:N" (N a GPU index; two digits cover any one machine).
DEVICE_PATTERN = r"^(auto|cpu|cuda|cuda:[0-9]{1,2})$"
# numpy and torch both take seeds in [0, 2**32); a negative one is refused by numpy.
MAX_SEED = 2**32 - 1

# Fields that configs stored by earlier versions carry and this schema no longer has: the
# evaluation bar and generation settings (now their own schemas) and two superseded fields.
# Reading such a stored config drops them; anything else unknown is an error.
LEGACY_FIELDS = frozenset({
    "fid_threshold", "threshold_mode", "relative_factor", "max_attempts", "fid_num_fake",
    "memorization_threshold", "threshold_rule", "min_separation", "max_near_copy_fraction",
    "num_samples", "sample_seed", "write_sample_dicoms",
})


class ConfigError(ValueError):
    """A setting is out of range; the message names the field and what to do."""


def _problems(err: ValidationError, prefix: str) -> str:
    return "; ".join(
        f"{prefix}.{'.'.join(map(str, e['loc']))}={e.get('input')!r} is invalid: {e['msg']}" for e in err.errors()
    )


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


class TrainConfig(_Schema):
    """Training hyperparameters (the reference DCGAN's where not said otherwise)."""

    image_size: int = Field(default=64, ge=32, le=256, description="Square image side in pixels: 32, 64, 128 or 256 (one network block per doubling; above 256 the DCGAN stack is not built).")
    latent_dim: int = Field(default=100, ge=1, le=1024, description="Size of the generator's input noise vector (nz; the reference DCGAN's 100). At most 1024: the first layer's weights grow with it, and a larger noise vector adds nothing a DCGAN can use.")
    # Half the reference DCGAN's 64: monthly batches are a few hundred images and the default
    # must train on a CPU in minutes.
    generator_width: int = Field(default=32, ge=1, le=512, description="Generator feature-map width (ngf). At most 512: the widest layer has 8 x ngf channels, and at 512 its weights alone are already about half a GiB.")
    discriminator_width: int = Field(default=32, ge=1, le=512, description="Discriminator feature-map width (ndf). At most 512, for the same reason as generator_width.")
    batch_size: int = Field(default=32, ge=1, le=4096, description="Images per training step (global batch when num_workers > 1). At most 4096: a month is a few hundred to a few thousand images.")
    steps: int = Field(default=400, ge=1, le=1_000_000, description="Training budget in optimiser steps. At most 1,000,000 (days of GPU time): the retrain ladder multiplies the steps on each attempt, and the bound keeps every run finite.")
    lr_g: float = Field(default=2e-4, gt=0.0, le=1.0, allow_inf_nan=False, description="Adam learning rate of the generator (the reference DCGAN's 2e-4); positive and at most 1 (Adam's step is about the learning rate itself).")
    lr_d: float = Field(default=2e-4, gt=0.0, le=1.0, allow_inf_nan=False, description="Adam learning rate of the discriminator (the reference DCGAN's 2e-4); positive and at most 1.")
    beta1: float = Field(default=0.5, ge=0.0, lt=1.0, description="Adam beta1 (0.5 as in the reference DCGAN); in [0, 1), as Adam requires.")
    beta2: float = Field(default=0.999, ge=0.0, lt=1.0, description="Adam beta2; in [0, 1), as Adam requires.")
    loss: Loss = Field(default="bce", description="Adversarial loss: 'bce' (reference DCGAN) or 'hinge'.")
    spectral_norm: bool = Field(default=False, description="Spectral normalisation on the discriminator's layers (a stabiliser; off by default: with the default budget it measured worse, see benchmarks/bench_ladder.py).")
    # On by default: a month is a few hundred images, and D overfits them within the default
    # budget; DiffAugment (Zhao et al., 2020) is the data-efficient remedy and costs no extra
    # step time (benchmarks/bench_ladder.py measures it against the plain config).
    diffaugment: AugmentPolicy = Field(default="translation,cutout", description="DiffAugment policies applied to real and fake alike: '' (none), 'translation', 'cutout' or both (the default: a month is a few hundred images, and augmentation keeps D from memorizing them).")
    ema: bool = Field(default=True, description="Keep an exponential moving average of the generator; evaluation and generation use it.")
    ema_decay: float = Field(default=0.999, ge=0.0, lt=1.0, description="Decay of the generator EMA; in [0, 1) (1 would never move the average).")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed for weights, noise and batches: a CPU run is reproducible. In [0, 2**32): the range numpy and torch both accept.")
    device: str = Field(default="auto", pattern=DEVICE_PATTERN, description="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N' (N a GPU index).")
    log_every: int = Field(default=50, ge=1, le=1_000_000, description="Log progress (losses, img/s, ETA) every N steps.")
    num_workers: int = Field(default=1, ge=1, le=16, description="Data-parallel training processes (torch.distributed, one per GPU of this machine); 1 trains in-process. At most 16: more GPUs than one machine holds.")

    @field_validator("image_size")
    @classmethod
    def _power_of_two(cls, size: int) -> int:
        if size & (size - 1):
            raise ValueError("use a power of two between 32 and 256 (32, 64, 128, 256)")
        return size

    @property
    def augment_policies(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.diffaugment.split(",") if p.strip())

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a (possibly older) stored config: missing fields take defaults, the
        :data:`LEGACY_FIELDS` are dropped, anything else unknown or out of range is a ConfigError."""
        known = set(cls.model_fields)
        unknown = sorted(set(values) - known - LEGACY_FIELDS)
        if unknown:
            raise ConfigError(f"unknown gan_config field(s) {unknown}; known fields: {sorted(known)}")
        try:
            return cls.model_validate({k: v for k, v in values.items() if k in known})
        except ValidationError as err:
            raise ConfigError(_problems(err, "gan_config")) from None

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``, validated like any other config."""
        return type(self).from_dict({**self.to_dict(), **changes})


class GenerationConfig(_Schema):
    """What generated_samples writes from the approved generator."""

    num_samples: int = Field(default=64, ge=1, le=10_000, description="Synthetic images written by generated_samples. At most 10,000: they are made in one array in memory (10,000 images of 256 px are 650 MB) and, with write_sample_dicoms, one file each.")
    sample_seed: int = Field(default=1234, ge=0, le=MAX_SEED, description="Seed of the noise behind generated_samples (recorded in metadata). In [0, 2**32).")
    write_sample_dicoms: bool = Field(default=False, description="Also write each synthetic image as a Secondary Capture DICOM marked SYNTHETIC.")


ThresholdRule = Literal["controls", "absolute", "relative_floor"]
THRESHOLD_RULES: tuple[ThresholdRule, ...] = ("controls", "absolute", "relative_floor")


class EvaluationConfig(_Schema):
    """The bar a trained generator must clear (gan_assets.metrics.evaluation applies it)."""

    threshold_rule: ThresholdRule = Field(default="controls", description="How the FID threshold is set: 'controls' (default: geometric mean of the held-out real images' FID and the best negative control's FID, every month), 'absolute' (fid_threshold) or 'relative_floor' (relative_factor x the real-vs-real floor).")
    # Used only by threshold_rule="absolute": an FID value means something only for one extractor
    # on one kind of data, so set it from that extractor's scores of the controls.
    fid_threshold: float = Field(default=50.0, gt=0.0, le=1e6, allow_inf_nan=False, description="Absolute FID a model must reach (threshold_rule='absolute'); meaningful only for one extractor on one kind of data. Finite and at most 1e6: an infinite or huge threshold passes every generator, whatever it makes.")
    relative_factor: float = Field(default=3.0, gt=0.0, le=100.0, allow_inf_nan=False, description="Multiple of the real-vs-real FID floor allowed (threshold_rule='relative_floor'). At most 100, like min_separation: a looser bar would pass what the negative controls call garbage.")
    # Under 1 the gate would call a metric that cannot tell garbage from real images
    # discriminative; over 100 no extractor qualifies.
    min_separation: float = Field(default=2.0, ge=1.0, le=100.0, description="The gate is discriminative only if the best negative control's FID is at least this many times the held-out real images' FID (and every negative fails, the positive passes); otherwise the month is not_discriminative. Between 1 (below it garbage would count as separated) and 100 (no extractor separates more).")
    max_attempts: int = Field(default=3, ge=1, le=10, description="Training attempts per month before the month is rejected. At most 10: each retrain grows the step budget (the ladder's x1.5 per attempt makes the tenth attempt 38 times the first).")
    memorization_threshold: float = Field(default=0.05, ge=0.0, le=1.0, description="Normalised feature distance under which a sample counts as a near-copy of a training image. At most 1: the distance is relative to two typical training images, so 1 would call every sample a copy.")
    max_near_copy_fraction: float = Field(default=0.01, ge=0.0, le=1.0, description="Largest fraction of scored samples that may be near-copies of training images; above it the month fails as 'memorized' (a privacy failure).")


def config_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """Fields whose value changed, as ``{field: [before, after]}`` (sorted, JSON-able)."""
    keys = sorted(set(before) | set(after))
    return {k: [before.get(k), after.get(k)] for k in keys if before.get(k) != after.get(k)}


DEFAULTS = TrainConfig()
TRAIN_CONFIG_FIELDS = tuple(TrainConfig.model_fields)
