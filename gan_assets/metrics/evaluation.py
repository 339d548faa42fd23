"""One month's evaluation as a plain function: the generator and the controls, one typed score.

:func:`evaluate_month` is the whole protocol; the ``fid_score`` asset only gathers its inputs.

1. The month's real images are split once (:func:`~gan_assets.metrics.controls.split_reference`,
   seed :data:`EVAL_SEED`) into a *reference* set and a *held-out* set. The reference set is the
   FID/KID reference of every candidate.
2. The candidates are the generator and the controls of :mod:`gan_assets.metrics.controls`
   (seven negatives, and ``held_out_real`` as the positive), every one with exactly
   ``len(held_out)`` images, so sample-size bias is the same for all of them. Every candidate
   goes through the same uint8 quantisation as the stored real images.
3. The threshold comes from ``threshold_rule``:

   ``controls`` (default)
       the geometric mean of the positive control's FID and the lowest negative control's FID,
       ``sqrt(FID(held_out_real) x min FID(negatives))``: the gate sits midway (on a log scale,
       which is how FID scales between extractors) between what real images score and what the
       best garbage scores. It needs no calibration per extractor or modality, and a generator
       passes only if it is closer to real images than to any garbage by the same factor.
   ``absolute``
       ``fid_threshold``, set by hand; meaningful only for one extractor on one kind of data.
   ``relative_floor``
       ``relative_factor`` x the real-vs-real floor (FID between two random halves of the month).

4. The gate is *discriminative* when every negative control fails, the positive control passes,
   and the lowest negative FID is at least ``min_separation`` times the positive's FID. The
   third condition is needed because the first two are nearly empty under the ``controls`` rule:
   with ``t = sqrt(P x N)`` every negative fails and the positive passes as soon as ``N > P``,
   by any margin, even when the extractor barely tells real images from garbage. Requiring
   ``N / P >= s`` puts the threshold at least ``sqrt(s)`` above what real images score and
   ``sqrt(s)`` below the best garbage (``sqrt(2) = 1.41`` on each side at the default ``s = 2``),
   so a month-to-month wobble of the positive's FID cannot flip the verdict on real data, and a
   generator that passes is closer to real images than to any control by that factor. Under the
   other rules the same condition says whether the extractor separates real from garbage at all.
5. Memorization: the scored samples are compared with the images the generator was trained on
   (:func:`~gan_assets.metrics.memorization.memorization_report`); a near-copy fraction (feature
   space) above ``max_near_copy_fraction`` fails the month.

Status, in order of precedence: ``not_discriminative`` (the metric is blind: the extractor or
too few images is at fault, not the model; no retrain can fix it); ``memorized`` (near-copies of
training images; ``rejected`` on the last attempt); ``passed`` (FID <= threshold); ``failed``
(a retrain may follow); ``rejected`` (failed on the last attempt).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
from pydantic import Field

from gan_assets.metrics.controls import build_controls, split_reference
from gan_assets.metrics.extractors import FeatureExtractor, compare_fingerprints
from gan_assets.metrics.frechet import feature_statistics, frechet_distance_stats
from gan_assets.metrics.kid import DEFAULT_NUM_SUBSETS, DEFAULT_SUBSET_SIZE, kernel_inception_distance
from gan_assets.metrics.memorization import memorization_report
from gan_assets.metrics.score import MIN_REAL_IMAGES, real_floor
from gan_assets.model.config import THRESHOLD_RULES, EvaluationConfig, ThresholdRule
from gan_assets.storage.images import pack_images, unpack_images

Status = Literal["passed", "failed", "rejected", "not_discriminative", "memorized"]
STATUSES: tuple[Status, ...] = ("passed", "failed", "rejected", "not_discriminative", "memorized")
ControlKind = Literal["negative", "positive"]
# The reference/held-out split, the floor and the KID subsets use one fixed seed, so every
# attempt of a month is scored against the same reference and the same controls.
EVAL_SEED = 0
# A positive control's FID of exactly 0 would make the separation infinite (not JSON).
_MIN_POSITIVE_FID = 1e-12


class ScoreFormatError(ValueError):
    """A stored fid_score lacks a field or has a wrong value; the message says what to do."""


class EvaluationSettings(EvaluationConfig):
    """The evaluation bar (EvaluationConfig) and how KID is sampled: what evaluate_month needs."""

    kid_num_subsets: int = Field(default=DEFAULT_NUM_SUBSETS, ge=1)
    kid_subset_size: int = Field(default=DEFAULT_SUBSET_SIZE, ge=2)
    seed: int = EVAL_SEED

    @classmethod
    def from_config(cls, bar: EvaluationConfig, *, kid_num_subsets: int = DEFAULT_NUM_SUBSETS,
                    kid_subset_size: int = DEFAULT_SUBSET_SIZE) -> EvaluationSettings:
        return cls(**bar.model_dump(), kid_num_subsets=int(kid_num_subsets), kid_subset_size=int(kid_subset_size))


@dataclass(frozen=True)
class TrainingSet:
    """The images the generator was trained on: features, float pixels, ids, months."""

    features: np.ndarray
    pixels: np.ndarray
    ids: tuple[str, ...]
    partitions: tuple[str, ...]


@dataclass(frozen=True)
class ControlScore:
    """One control scored against the reference set, and the gate's verdict on it."""

    name: str
    kind: ControlKind
    fid: float
    kid: float
    passed: bool

    @property
    def verdict_correct(self) -> bool:
        """A good gate passes the positive control and fails every negative one."""
        return self.passed == (self.kind == "positive")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "fid": self.fid, "kid": self.kid, "passed": self.passed}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ControlScore:
        kind = str(values["kind"])
        if kind not in ("negative", "positive"):
            raise ScoreFormatError(f"fid_score control {values.get('name')!r} has kind {kind!r}; expected negative or positive")
        return cls(str(values["name"]), cast(ControlKind, kind), float(values["fid"]), float(values["kid"]),
                   bool(values["passed"]))


@dataclass(frozen=True)
class GateVerdict:
    """The threshold, the sentence saying how it was set, and whether the gate can discriminate."""

    threshold: float
    threshold_rule: ThresholdRule
    rule: str
    discriminative: bool
    # Lowest negative control's FID / positive control's FID.
    separation: float
    min_separation: float
    # Why the gate is not discriminative (empty when it is).
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "threshold_rule": self.threshold_rule, "rule": self.rule,
                "discriminative": self.discriminative, "separation": self.separation,
                "min_separation": self.min_separation, "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GateVerdict:
        rule_name = str(values.get("threshold_rule", "controls"))
        if rule_name not in THRESHOLD_RULES:
            raise ScoreFormatError(f"fid_score gate.threshold_rule {rule_name!r} is not one of {THRESHOLD_RULES}")
        return cls(float(values["threshold"]), cast(ThresholdRule, rule_name), str(values["rule"]),
                   bool(values["discriminative"]), float(values.get("separation", 0.0)),
                   float(values.get("min_separation", 1.0)), tuple(str(r) for r in values.get("reasons") or ()))


@dataclass(frozen=True)
class MemorizationVerdict:
    """Near-copies of training images among the scored samples, and whether they block the month."""

    near_copy_fraction: float
    max_near_copy_fraction: float
    memorized: bool
    # The full report of memorization_report (per space, closest pairs) plus training_partitions.
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**dict(self.details), "near_copy_fraction": self.near_copy_fraction,
                "max_near_copy_fraction": self.max_near_copy_fraction, "memorized": self.memorized}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MemorizationVerdict:
        typed = {"near_copy_fraction", "max_near_copy_fraction", "memorized"}
        fraction = float(values.get("near_copy_fraction", 0.0))
        limit = float(values.get("max_near_copy_fraction", EvaluationConfig.model_fields["max_near_copy_fraction"].default))
        return cls(fraction, limit, bool(values.get("memorized", fraction > limit)),
                   {k: v for k, v in values.items() if k not in typed})


@dataclass(frozen=True)
class PreviousScore:
    """The month's previous attempt, as the event log recorded it, and whether it is comparable."""

    attempt: int | None
    fid: float | None
    kid_mean: float | None
    status: str | None
    comparable: bool
    fingerprint_differences: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "fid": self.fid, "kid_mean": self.kid_mean, "status": self.status,
                "comparable": self.comparable, "fingerprint_differences": list(self.fingerprint_differences)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PreviousScore:
        return cls(_opt_int(values.get("attempt")), _opt_float(values.get("fid")), _opt_float(values.get("kid_mean")),
                   None if values.get("status") is None else str(values["status"]), bool(values.get("comparable")),
                   tuple(str(d) for d in values.get("fingerprint_differences") or ()))


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class FidScore:
    """Everything fid_score decides and records; stored as ``fid_score/<month>.json``."""

    fid: float
    kid_mean: float
    kid_std: float
    kid_subsets: int
    kid_subset_size: int
    floor_fid: float
    floor_kid: float
    floor_kid_std: float
    floor_half_size: int
    threshold: float
    threshold_rule: ThresholdRule
    status: Status
    attempt: int
    max_attempts: int
    n_real: int
    n_reference: int
    n_fake: int
    feature_dim: int
    small_sample: bool
    controls: tuple[ControlScore, ...]
    gate: GateVerdict
    memorization: MemorizationVerdict
    fingerprint: Mapping[str, Any]
    extractor: str
    eval_seed: int = EVAL_SEED
    partition: str | None = None
    fake_seed: int | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    config_diff: Mapping[str, Any] = field(default_factory=dict)
    real_features: Mapping[str, Any] = field(default_factory=dict)
    timings: Mapping[str, Any] = field(default_factory=dict)
    previous_score: PreviousScore | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def positive(self) -> ControlScore:
        return next(c for c in self.controls if c.kind == "positive")

    @property
    def negatives(self) -> tuple[ControlScore, ...]:
        return tuple(c for c in self.controls if c.kind == "negative")

    def to_dict(self) -> dict[str, Any]:
        """The JSON artifact (strict JSON: finite numbers, lists, strings)."""
        values: dict[str, Any] = {
            "fid": self.fid, "kid_mean": self.kid_mean, "kid_std": self.kid_std, "kid_subsets": self.kid_subsets,
            "kid_subset_size": self.kid_subset_size, "floor_fid": self.floor_fid, "floor_kid": self.floor_kid,
            "floor_kid_std": self.floor_kid_std, "floor_half_size": self.floor_half_size,
            "threshold": self.threshold, "threshold_rule": self.threshold_rule, "passed": self.passed,
            "status": self.status, "attempt": self.attempt, "max_attempts": self.max_attempts,
            "n_real": self.n_real, "n_reference": self.n_reference, "n_fake": self.n_fake,
            "feature_dim": self.feature_dim, "small_sample": self.small_sample,
            "controls": [c.to_dict() for c in self.controls], "gate": self.gate.to_dict(),
            "memorization": self.memorization.to_dict(), "fingerprint": dict(self.fingerprint),
            "extractor": self.extractor, "eval_seed": self.eval_seed, "partition": self.partition,
            "fake_seed": self.fake_seed, "config": dict(self.config), "config_diff": dict(self.config_diff),
            "real_features": dict(self.real_features), "timings": dict(self.timings),
        }
        if self.previous_score is not None:
            values["previous_score"] = self.previous_score.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FidScore:
        """Parse a stored fid_score (raises ScoreFormatError naming a missing or bad field)."""
        required = ("fid", "kid_mean", "kid_std", "floor_fid", "threshold", "threshold_rule", "status", "attempt",
                    "max_attempts", "controls", "gate", "memorization", "fingerprint")
        missing = [k for k in required if k not in values]
        if missing:
            raise ScoreFormatError(
                f"fid_score lacks {missing} (written by an older version?); re-materialize fid_score for this month")
        status = str(values["status"])
        if status not in STATUSES:
            raise ScoreFormatError(f"fid_score status {status!r} is not one of {STATUSES}")
        rule = str(values["threshold_rule"])
        if rule not in THRESHOLD_RULES:
            raise ScoreFormatError(f"fid_score threshold_rule {rule!r} is not one of {THRESHOLD_RULES}")
        fingerprint = values["fingerprint"] if isinstance(values["fingerprint"], Mapping) else {}
        previous = values.get("previous_score")
        try:
            return cls(
                fid=float(values["fid"]), kid_mean=float(values["kid_mean"]), kid_std=float(values["kid_std"]),
                kid_subsets=int(values.get("kid_subsets", 0)), kid_subset_size=int(values.get("kid_subset_size", 0)),
                floor_fid=float(values["floor_fid"]), floor_kid=float(values.get("floor_kid", 0.0)),
                floor_kid_std=float(values.get("floor_kid_std", 0.0)),
                floor_half_size=int(values.get("floor_half_size", 0)), threshold=float(values["threshold"]),
                threshold_rule=cast(ThresholdRule, rule), status=cast(Status, status),
                attempt=int(values["attempt"]), max_attempts=int(values["max_attempts"]),
                n_real=int(values.get("n_real", 0)), n_reference=int(values.get("n_reference", 0)),
                n_fake=int(values.get("n_fake", 0)), feature_dim=int(values.get("feature_dim", 0)),
                small_sample=bool(values.get("small_sample", False)),
                controls=tuple(ControlScore.from_dict(c) for c in values["controls"]),
                gate=GateVerdict.from_dict(values["gate"]),
                memorization=MemorizationVerdict.from_dict(values["memorization"] or {}),
                fingerprint=dict(fingerprint), extractor=str(values.get("extractor") or fingerprint.get("extractor", "")),
                eval_seed=int(values.get("eval_seed", EVAL_SEED)), partition=values.get("partition"),
                fake_seed=_opt_int(values.get("fake_seed")), config=dict(values.get("config") or {}),
                config_diff=dict(values.get("config_diff") or {}), real_features=dict(values.get("real_features") or {}),
                timings=dict(values.get("timings") or {}),
                previous_score=PreviousScore.from_dict(previous) if isinstance(previous, Mapping) else None,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ScoreFormatError(f"fid_score has a malformed field ({err!r}); re-materialize fid_score for this month") from err


@dataclass(frozen=True)
class MonthEvaluation:
    """The score, and the samples it was computed from (for previews)."""

    score: FidScore
    samples: np.ndarray


def gate_verdict(controls: Sequence[ControlScore], settings: EvaluationSettings, floor_fid: float) -> GateVerdict:
    """Threshold by ``settings.threshold_rule``, and whether the controls show the gate can discriminate.

    ``controls`` carry their FIDs; their ``passed`` flags are ignored here (set from the threshold
    returned). See the module docstring for the rules and the separation condition.
    """
    positives = [c for c in controls if c.kind == "positive"]
    negatives = [c for c in controls if c.kind == "negative"]
    if len(positives) != 1 or not negatives:
        raise ValueError(f"the gate needs one positive and at least one negative control, got "
                         f"{len(positives)} and {len(negatives)}")
    positive = positives[0]
    best_negative = min(negatives, key=lambda c: c.fid)
    if settings.threshold_rule == "controls":
        threshold = math.sqrt(max(positive.fid, 0.0) * max(best_negative.fid, 0.0))
        rule = (f"controls: geometric mean of the positive control's FID ({positive.name}, {positive.fid:.4g}) "
                f"and the lowest negative control's FID ({best_negative.name}, {best_negative.fid:.4g}): "
                f"sqrt({positive.fid:.4g} x {best_negative.fid:.4g}) = {threshold:.4g}")
    elif settings.threshold_rule == "absolute":
        threshold = float(settings.fid_threshold)
        rule = (f"absolute: fid_threshold = {threshold:.4g}, set by hand (meaningful only for this extractor "
                "on this kind of data)")
    else:
        threshold = float(settings.relative_factor) * float(floor_fid)
        rule = (f"relative_floor: relative_factor {settings.relative_factor:g} x the real-vs-real floor FID "
                f"{floor_fid:.4g} = {threshold:.4g}")
    separation = best_negative.fid / max(positive.fid, _MIN_POSITIVE_FID)
    reasons = [f"negative control {c.name} passes (FID {c.fid:.4g} <= threshold {threshold:.4g})"
               for c in negatives if c.fid <= threshold]
    if positive.fid > threshold:
        reasons.append(f"positive control {positive.name} fails (FID {positive.fid:.4g} > threshold {threshold:.4g})")
    if separation < settings.min_separation:
        reasons.append(f"the lowest negative control ({best_negative.name}, FID {best_negative.fid:.4g}) is only "
                       f"{separation:.3g}x the positive control's FID {positive.fid:.4g}; min_separation is "
                       f"{settings.min_separation:g}")
    return GateVerdict(threshold=float(threshold), threshold_rule=settings.threshold_rule, rule=rule,
                       discriminative=not reasons, separation=float(separation),
                       min_separation=float(settings.min_separation), reasons=tuple(reasons))


def status_for(*, discriminative: bool, memorized: bool, fid_passed: bool, attempt: int, max_attempts: int) -> Status:
    """The month's status, by the precedence of the module docstring."""
    last = attempt >= max_attempts
    if not discriminative:
        return "not_discriminative"
    if memorized:
        return "rejected" if last else "memorized"
    if fid_passed:
        return "passed"
    return "rejected" if last else "failed"


def compare_previous(previous: Mapping[str, Any] | None, fingerprint: Mapping[str, Any]) -> PreviousScore | None:
    """The previous attempt's figures (from the event log) and whether its fingerprint matches."""
    if not previous or not isinstance(previous.get("fingerprint"), Mapping):
        return None
    differences = compare_fingerprints(dict(previous["fingerprint"]), dict(fingerprint))
    return PreviousScore(
        attempt=_opt_int(previous.get("attempt")), fid=_opt_float(previous.get("fid")),
        kid_mean=_opt_float(previous.get("kid_mean")),
        status=None if previous.get("status") is None else str(previous["status"]),
        comparable=not differences, fingerprint_differences=tuple(differences),
    )


def _quantised(images: np.ndarray) -> np.ndarray:
    # The stored real images are uint8; every candidate goes through the same rounding so that
    # quantisation itself never shows up as a distance.
    return unpack_images(pack_images(images))


def _fid_kid(reference: np.ndarray, reference_stats: Any, candidate: np.ndarray,
             settings: EvaluationSettings) -> tuple[float, float, float, int]:
    fid = frechet_distance_stats(reference_stats, feature_statistics(candidate))
    kid = kernel_inception_distance(reference, candidate, settings.kid_num_subsets, settings.kid_subset_size,
                                    seed=settings.seed)
    return float(fid), kid.mean, kid.std, kid.subset_size


def evaluate_month(
    extractor: FeatureExtractor,
    real_images: np.ndarray,
    samples: np.ndarray | Callable[[int], np.ndarray],
    training_set: TrainingSet,
    settings: EvaluationSettings,
    attempt: int,
    *,
    real_features: np.ndarray | None = None,
    previous: Mapping[str, Any] | None = None,
    partition: str | None = None,
    config: Mapping[str, Any] | None = None,
    config_diff: Mapping[str, Any] | None = None,
    fake_seed: int | None = None,
    real_features_record: Mapping[str, Any] | None = None,
) -> MonthEvaluation:
    """Score a generator's samples and the controls against the month's reference set.

    ``real_images``: the month's real images, float N x H x W in [-1, 1]; ``real_features``
    their features when already known (the per-month cache), else extracted here.
    ``samples``: a sampler ``count -> images`` (called with ``len(held_out)``) or images (at
    least that many; the first ``len(held_out)`` are scored). ``previous``: the month's previous
    fid_score figures (``attempt``, ``fid``, ``kid_mean``, ``status``, ``fingerprint``), to say
    whether the two are comparable. The remaining keywords are recorded as they are.
    """
    started = time.perf_counter()
    real = np.asarray(real_images, dtype=np.float32)
    if real.ndim != 3 or len(real) < MIN_REAL_IMAGES:
        raise ValueError(f"evaluate_month needs at least {MIN_REAL_IMAGES} real images N x H x W, got shape {real.shape}; "
                         "ingest more images for this month")
    if attempt < 1 or settings.max_attempts < 1:
        raise ValueError(f"attempt {attempt} of {settings.max_attempts}: both must be >= 1")
    t0 = time.perf_counter()
    features = extractor.extract(real) if real_features is None else np.asarray(real_features)
    if len(features) != len(real):
        raise ValueError(f"real_features has {len(features)} rows for {len(real)} real images; recompute the cache")
    real_seconds = time.perf_counter() - t0

    split = split_reference(len(real), settings.seed)
    count = len(split.held_out_index)
    reference = features[split.reference_index]
    reference_stats = feature_statistics(reference)

    t0 = time.perf_counter()
    drawn = samples(count) if callable(samples) else np.asarray(samples)
    if len(drawn) < count:
        raise ValueError(f"the generator gave {len(drawn)} samples; scoring needs {count} (the held-out half of the month)")
    fakes = _quantised(np.asarray(drawn[:count], dtype=np.float32))
    if fakes.shape[1:] != real.shape[1:]:
        raise ValueError(f"generated images are {fakes.shape[1:]} but the month's real images are {real.shape[1:]}: "
                         "re-materialize trained_generator at this image size")
    sample_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    fake_features = extractor.extract(fakes)
    fake_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    fid, kid_mean, kid_std, kid_size = _fid_kid(reference, reference_stats, fake_features, settings)
    floor = real_floor(features, settings.seed, settings.kid_num_subsets, settings.kid_subset_size)
    control_sets = build_controls(real, real[split.held_out_index], settings.seed)
    raw_controls = []
    for control in control_sets:
        # held_out_real is a subset of the month's images: its features are already known.
        control_features = (features[split.held_out_index] if control.name == "held_out_real"
                            else extractor.extract(_quantised(control.images)))
        c_fid, c_kid, _, _ = _fid_kid(reference, reference_stats, control_features, settings)
        raw_controls.append(ControlScore(control.name, control.kind, c_fid, c_kid, passed=False))
    gate = gate_verdict(raw_controls, settings, floor.fid)
    controls = tuple(ControlScore(c.name, c.kind, c.fid, c.kid, passed=bool(c.fid <= gate.threshold))
                     for c in raw_controls)
    score_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    report = memorization_report(fake_features, training_set.features, fakes, training_set.pixels,
                                 threshold=settings.memorization_threshold, train_ids=list(training_set.ids),
                                 seed=settings.seed)
    report["training_partitions"] = list(training_set.partitions)
    fraction = float(report["near_copy_fraction"])
    memorization = MemorizationVerdict(fraction, float(settings.max_near_copy_fraction),
                                       bool(fraction > settings.max_near_copy_fraction),
                                       {k: v for k, v in report.items() if k != "near_copy_fraction"})
    memorization_seconds = time.perf_counter() - t0

    status = status_for(discriminative=gate.discriminative, memorized=memorization.memorized,
                        fid_passed=bool(fid <= gate.threshold), attempt=attempt, max_attempts=settings.max_attempts)
    image_size = int(real.shape[-1])
    fingerprint = extractor.fingerprint(image_size, len(reference), count)
    dim = int(features.shape[1])
    score = FidScore(
        fid=fid, kid_mean=kid_mean, kid_std=kid_std, kid_subsets=int(settings.kid_num_subsets),
        kid_subset_size=kid_size, floor_fid=floor.fid, floor_kid=floor.kid_mean, floor_kid_std=floor.kid_std,
        floor_half_size=floor.half_size, threshold=gate.threshold, threshold_rule=settings.threshold_rule,
        status=status, attempt=int(attempt), max_attempts=int(settings.max_attempts), n_real=len(real),
        n_reference=len(reference), n_fake=count, feature_dim=dim,
        # Covariances of fewer samples than dimensions are singular and FID is strongly biased.
        small_sample=bool(min(len(reference), count, floor.half_size) < dim),
        controls=controls, gate=gate, memorization=memorization, fingerprint=fingerprint,
        extractor=str(fingerprint["extractor"]), eval_seed=settings.seed, partition=partition, fake_seed=fake_seed,
        config=dict(config or {}), config_diff=dict(config_diff or {}),
        real_features=dict(real_features_record or {}),
        timings={
            "real_features_seconds": round(real_seconds, 4),
            "sample_seconds": round(sample_seconds, 4),
            "fake_features_seconds": round(fake_seconds, 4),
            "fake_features_images_per_second": round(count / fake_seconds, 2) if fake_seconds > 0 else None,
            "score_seconds": round(score_seconds, 4),
            "memorization_seconds": round(memorization_seconds, 4),
            "total_seconds": round(time.perf_counter() - started, 4),
        },
        previous_score=compare_previous(previous, fingerprint),
    )
    return MonthEvaluation(score=score, samples=fakes)
