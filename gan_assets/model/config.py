"""Training settings as a plain, validated dataclass: the single source of defaults.

The Dagster resource ``gan_config`` (resources.py) mirrors these fields with launchpad
descriptions and converts to this class; the cores only ever see ``TrainConfig``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any

VALID_LOSSES = ("bce", "hinge")
VALID_AUGMENTS = ("translation", "cutout")
VALID_DEVICES = ("auto", "cpu", "cuda")
VALID_THRESHOLD_MODES = ("absolute", "relative")
VALID_THRESHOLD_RULES = ("controls", "absolute", "relative_floor")
# Bounds of the evaluation bar: a separation under 1 would call a gate that passes garbage
# discriminative; over 100 no extractor qualifies.
MIN_SEPARATION_BOUNDS = (1.0, 100.0)


class ConfigError(ValueError):
    """A training setting is out of range; the message names the field and what to do."""


@dataclass(frozen=True)
class TrainConfig:
    # --- data / architecture
    image_size: int = 64
    latent_dim: int = 100
    # Half the reference DCGAN's 64: monthly batches are a few hundred images and the default
    # must train on a CPU in minutes.
    generator_width: int = 32
    discriminator_width: int = 32
    # --- optimisation
    batch_size: int = 32
    steps: int = 400
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = "bce"
    spectral_norm: bool = False
    # On by default: a month is a few hundred images, and D overfits them within the default
    # budget; DiffAugment (Zhao et al., 2020) is the data-efficient remedy and costs no extra
    # step time (benchmarks/bench_ladder.py measures it against the plain config).
    diffaugment: str = "translation,cutout"
    ema: bool = True
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    num_workers: int = 1
    # --- evaluation and the retrain loop
    # Used only by threshold_rule="absolute": an FID value means something only for one extractor
    # on one kind of data, so set it from that extractor's scores of the controls.
    fid_threshold: float = 50.0
    # Superseded by threshold_rule and ignored by the gate; kept so stored configs still load.
    threshold_mode: str = "absolute"
    relative_factor: float = 3.0
    max_attempts: int = 3
    # Ignored since the generator is scored with as many samples as each control; kept so stored
    # configs still load.
    fid_num_fake: int = 0
    memorization_threshold: float = 0.05
    # How the FID threshold is set (gan_assets.metrics.evaluation): "controls" derives it every
    # month from what held-out real images and the negative controls score.
    threshold_rule: str = "controls"
    # The gate counts as discriminative only when the best negative control scores at least this
    # many times the held-out real images' FID (see gan_assets.metrics.evaluation).
    min_separation: float = 2.0
    # Largest fraction of scored samples allowed to be near-copies of training images; above it
    # the month fails as "memorized" whatever its FID.
    max_near_copy_fraction: float = 0.01
    # --- generation
    num_samples: int = 64
    sample_seed: int = 1234
    write_sample_dicoms: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"gan_config.{name}={getattr(self, name)!r} is invalid: {why}")

        size = self.image_size
        if size < 32 or size > 256 or size & (size - 1):
            raise bad("image_size", "use a power of two between 32 and 256 (32, 64, 128, 256)")
        for name in ("latent_dim", "generator_width", "discriminator_width", "batch_size",
                     "steps", "log_every", "num_workers", "max_attempts", "num_samples"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be a positive integer")
        for name in ("lr_g", "lr_d", "fid_threshold", "relative_factor"):
            if not float(getattr(self, name)) > 0:
                raise bad(name, "must be a positive number")
        for name in ("beta1", "beta2", "ema_decay"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise bad(name, "must be in [0, 1)")
        if self.loss not in VALID_LOSSES:
            raise bad("loss", f"choose one of {', '.join(VALID_LOSSES)}")
        for policy in self.augment_policies:
            if policy not in VALID_AUGMENTS:
                raise bad("diffaugment", f"comma-separated subset of {', '.join(VALID_AUGMENTS)}, or empty")
        if self.device not in VALID_DEVICES and not self.device.startswith("cuda:"):
            raise bad("device", f"choose one of {', '.join(VALID_DEVICES)} or cuda:N")
        if self.threshold_mode not in VALID_THRESHOLD_MODES:
            raise bad("threshold_mode", f"choose one of {', '.join(VALID_THRESHOLD_MODES)}")
        if self.fid_num_fake < 0:
            raise bad("fid_num_fake", "0 (as many as real images) or a positive count")
        if not 0.0 <= self.memorization_threshold:
            raise bad("memorization_threshold", "must be >= 0")
        if self.threshold_rule not in VALID_THRESHOLD_RULES:
            raise bad("threshold_rule", f"choose one of {', '.join(VALID_THRESHOLD_RULES)}")
        low, high = MIN_SEPARATION_BOUNDS
        if not low <= float(self.min_separation) <= high:
            raise bad("min_separation", f"must be between {low:g} and {high:g}")
        if not 0.0 <= float(self.max_near_copy_fraction) <= 1.0:
            raise bad("max_near_copy_fraction", "must be a fraction between 0 and 1")

    @property
    def augment_policies(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.diffaugment.split(",") if p.strip())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a (possibly older) stored config; unknown keys are an error, missing take defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown gan_config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def config_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """Fields whose value changed, as ``{field: [before, after]}`` (sorted, JSON-able)."""
    keys = sorted(set(before) | set(after))
    return {k: [before.get(k), after.get(k)] for k in keys if before.get(k) != after.get(k)}


DEFAULTS = TrainConfig()
TRAIN_CONFIG_FIELDS = tuple(f.name for f in fields(TrainConfig))
