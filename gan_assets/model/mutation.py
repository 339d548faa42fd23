"""The retrain loop's mutation policy: how a failed attempt's config becomes the next one.

Plain Python, no Dagster: the sensor (``gan_assets.sensors.retrain_on_fid_failure``) calls
:func:`mutate_config` with the config the failing attempt actually used, so mutations chain
(attempt 3 starts from attempt 2's config, not from the defaults).

The default policy (:data:`DEFAULT_POLICY`), one rule per attempt to be trained, ordered by
what measurably helped (``benchmarks/bench_ladder.py``: every candidate applied to the same base
config, same seeds, same step budget, scored by FID on the demo window; a rung's extra steps are
measured apart from its other change):

=========  ======================================================================
attempt 2  DiffAugment ``translation,cutout`` on (merged with the policies already on)
           and 50% more ``steps`` -- the two changes that lowered FID most; with
           the default config (augmentation already on) this is the budget alone
attempt 3  50% more ``steps`` again (a longer run kept helping where a shorter
           one had not converged)
attempt 4+ the last rule again (more steps each time)
=========  ======================================================================

Candidates measured and left out because they made FID worse than the base at the same budget:
halving both learning rates (the old first rung: the classic remedy of an *unstable* GAN, but
the failing runs measured were unconverged ones -- more steps helped, smaller steps hurt), the
hinge loss with spectral normalisation (alone, and on top of DiffAugment), and a two time-scale
rule (``lr_d = 2 x lr_g``). Rerun the benchmark on your own data before changing the order; a
policy of your own goes in the environment (below).

Every rule is deterministic: the same config and attempt always give the same result. A rule
that would change nothing (e.g. one that only turns on DiffAugment, already on) additionally bumps ``seed`` by
one, so that a retry never repeats a run that is known to fail.

Configurable without code: the ``retrain_policy`` resource (set by the deployment's
``GAN_ASSETS_MUTATION_POLICY``) holds a JSON list of rules (or the path of a ``.json`` file
holding one), parsed by :func:`parse_policy`, where rule ``i`` produces attempt ``i + 2`` and
attempts past the end reuse the last rule. A rule is an object with any of

- ``"scale"``: ``{field: factor}`` multiplies a numeric field (integers round up, stay >= 1);
- ``"set"``: ``{field: value}`` sets a field (``diffaugment`` values are merged with the
  policies already on, so a rule never turns augmentation off by accident);
- ``"description"``: text shown in logs.

For example ``[{"scale": {"lr_g": 0.5}}, {"set": {"loss": "hinge"}}]``. A rule names training
fields only: the evaluation bar (threshold, attempts) is another schema that no rule can reach,
and the data shape (``image_size``) and where training runs stay fixed: changing the bar or the
data between attempts would make the attempts incomparable.

A rule never takes a field past its bound in :class:`TrainConfig` (e.g. ``steps`` at most
1,000,000): the attempt that would is refused with a :class:`MutationPolicyError` naming the
field, and the retrain sensor reports the month as needing a person, instead of clamping and
retraining the same budget again.

A month that failed because its generator *memorized* training images (status ``memorized``)
is retrained with :data:`MEMORIZATION_RULE` instead of the ladder (``mutate_config(...,
cause="memorized")``): DiffAugment ``translation,cutout`` on (the discriminator no longer sees
the exact training pixels, so it stops rewarding their reproduction) and a quarter fewer
``steps`` (memorization grows with training time on a small set). More steps or a lower
learning rate, the ladder's remedies for poor quality, would make copying worse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gan_assets.model.config import LEGACY_FIELDS, TRAIN_CONFIG_FIELDS, ConfigError, TrainConfig

# Training fields a rule may not touch: the data shape and where training runs. (The
# evaluation bar is not a training field at all: a rule naming it is an unknown field.)
FROZEN_FIELDS = frozenset({"image_size", "device", "num_workers"})
_NUMERIC_FIELDS = {
    name for name, value in TrainConfig().to_dict().items()
    if isinstance(value, (int, float)) and not isinstance(value, bool)
}


class MutationPolicyError(ValueError):
    """A mutation policy is malformed; the message names the rule and field."""


@dataclass(frozen=True)
class MutationRule:
    """One step of the policy: multiply some fields, set others."""

    scale: Mapping[str, float] = field(default_factory=dict)
    set: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def validate(self, where: str = "rule") -> None:
        for name, factor in self.scale.items():
            self._check_field(name, where, "scale")
            if name not in _NUMERIC_FIELDS:
                raise MutationPolicyError(f"{where}: scale.{name}: only numeric fields can be scaled")
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
                raise MutationPolicyError(f"{where}: scale.{name}={factor!r}: use a positive number")
        for name in self.set:
            self._check_field(name, where, "set")
        if not self.scale and not self.set:
            raise MutationPolicyError(f"{where}: a rule needs 'scale' and/or 'set'")

    @staticmethod
    def _check_field(name: str, where: str, op: str) -> None:
        if name in LEGACY_FIELDS:
            raise MutationPolicyError(f"{where}: {op}.{name}: not a training field (the evaluation bar and the "
                                      "generation settings are separate configs); a rule changes training fields only")
        if name not in TRAIN_CONFIG_FIELDS:
            raise MutationPolicyError(f"{where}: {op}.{name}: unknown gan_config field; known: {sorted(TRAIN_CONFIG_FIELDS)}")
        if name in FROZEN_FIELDS:
            raise MutationPolicyError(f"{where}: {op}.{name}: this field must stay fixed between attempts")

    def apply(self, config: TrainConfig) -> TrainConfig:
        values = config.to_dict()
        for name, factor in self.scale.items():
            current = values[name]
            if isinstance(current, int):
                # Round up so a small budget still grows (4 steps x 1.5 -> 6), never below 1.
                values[name] = max(1, math.ceil(round(current * factor, 9)))
            else:
                values[name] = float(current) * float(factor)
        for name, value in self.set.items():
            if name == "diffaugment":
                values[name] = _merge_augment(values[name], str(value))
            else:
                values[name] = value
        return TrainConfig.from_dict(values)

    def describe(self) -> str:
        if self.description:
            return self.description
        parts = [f"{k} x{v:g}" for k, v in self.scale.items()] + [f"{k}={v!r}" for k, v in self.set.items()]
        return ", ".join(parts)


def _merge_augment(current: str, wanted: str) -> str:
    policies = [p.strip() for p in current.split(",") if p.strip()]
    for policy in (p.strip() for p in wanted.split(",")):
        if policy and policy not in policies:
            policies.append(policy)
    return ",".join(policies)


@dataclass(frozen=True)
class MutationPolicy:
    """Rules for attempts 2, 3, ...; attempts past the last rule reuse the last rule."""

    rules: tuple[MutationRule, ...]

    def __post_init__(self) -> None:
        if not self.rules:
            raise MutationPolicyError("a mutation policy needs at least one rule")
        for index, rule in enumerate(self.rules):
            rule.validate(f"mutation rule {index} (attempt {index + 2})")

    def rule_for(self, next_attempt: int) -> MutationRule:
        if next_attempt < 2:
            raise ValueError(f"attempt {next_attempt}: only retrains (attempt >= 2) are mutated")
        return self.rules[min(next_attempt - 2, len(self.rules) - 1)]

    @classmethod
    def from_json(cls, value: Sequence[Mapping[str, Any]] | str) -> "MutationPolicy":
        """Parse a JSON list of rules (text or already-decoded)."""
        raw: Any = json.loads(value) if isinstance(value, str) else value
        if not isinstance(raw, list):
            raise MutationPolicyError("a mutation policy is a JSON list of rules, e.g. [{\"scale\": {\"lr_g\": 0.5}}]")
        rules = []
        for index, item in enumerate(raw):
            if not isinstance(item, dict):
                raise MutationPolicyError(f"mutation rule {index}: expected an object, got {item!r}")
            unknown = sorted(set(item) - {"scale", "set", "description"})
            if unknown:
                raise MutationPolicyError(f"mutation rule {index}: unknown key(s) {unknown}; use scale, set, description")
            rules.append(MutationRule(scale=dict(item.get("scale", {})), set=dict(item.get("set", {})),
                                      description=str(item.get("description", ""))))
        return cls(tuple(rules))

    def to_json(self) -> list[dict[str, Any]]:
        return [{"scale": dict(r.scale), "set": dict(r.set), "description": r.description} for r in self.rules]


DEFAULT_POLICY = MutationPolicy((
    MutationRule(scale={"steps": 1.5}, set={"diffaugment": "translation,cutout"},
                 description="DiffAugment translation,cutout on, 50% more steps"),
    MutationRule(scale={"steps": 1.5}, description="50% more steps"),
))


MEMORIZATION_RULE = MutationRule(
    scale={"steps": 0.75}, set={"diffaugment": "translation,cutout"},
    description="memorized: DiffAugment translation,cutout on, 25% fewer steps",
)

# A training whose loss became NaN or infinite: the step was too large for this data. Halving
# both learning rates is the textbook remedy (the ladder's 'more steps' would diverge again).
DIVERGENCE_RULE = MutationRule(
    scale={"lr_g": 0.5, "lr_d": 0.5}, set={},
    description="diverged: learning rates halved",
)

MutationCause = Literal["quality", "memorized", "diverged"]
MUTATION_CAUSES: tuple[MutationCause, ...] = ("quality", "memorized", "diverged")


def rule_for_cause(next_attempt: int, policy: MutationPolicy | None = None, cause: MutationCause = "quality") -> MutationRule:
    """The rule that makes ``next_attempt``: the policy's ladder rung, or the memorization rule."""
    if cause not in MUTATION_CAUSES:
        raise MutationPolicyError(f"mutation cause {cause!r} is unknown; use one of {', '.join(MUTATION_CAUSES)}")
    if cause in ("memorized", "diverged"):
        if next_attempt < 2:
            raise ValueError(f"attempt {next_attempt}: only retrains (attempt >= 2) are mutated")
        return MEMORIZATION_RULE if cause == "memorized" else DIVERGENCE_RULE
    return (policy or DEFAULT_POLICY).rule_for(next_attempt)


def parse_policy(raw: str) -> MutationPolicy:
    """The policy in ``raw``: a JSON list of rules or the path of a .json file; empty = the default."""
    raw = raw.strip()
    if not raw:
        return DEFAULT_POLICY
    if not raw.startswith(("[", "{")):
        path = Path(raw)
        if not path.is_file():
            raise MutationPolicyError(f"mutation policy {raw!r}: neither a JSON list nor an existing .json file")
        raw = path.read_text()
    try:
        return MutationPolicy.from_json(raw)
    except json.JSONDecodeError as err:
        raise MutationPolicyError(f"mutation policy is not valid JSON: {err}") from err


def mutate_config(
    config: TrainConfig | Mapping[str, Any], next_attempt: int, policy: MutationPolicy | None = None,
    *, cause: MutationCause = "quality",
) -> TrainConfig:
    """The config for ``next_attempt`` (>= 2), from the config the previous attempt used.

    ``cause="memorized"`` applies :data:`MEMORIZATION_RULE`, ``cause="diverged"``
    :data:`DIVERGENCE_RULE`, instead of the policy's rung.
    """
    base = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    rule = rule_for_cause(next_attempt, policy, cause)
    try:
        mutated = rule.apply(base)
    except ConfigError as err:
        raise MutationPolicyError(f"mutation rule for attempt {next_attempt} ({rule.describe()}) gives an invalid config: {err}") from err
    if mutated == base:
        # A retry with an identical config would reproduce the failure; vary the seed instead.
        mutated = mutated.replace(seed=base.seed + 1)
    return mutated
