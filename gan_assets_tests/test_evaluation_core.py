"""The evaluation core without Dagster: thresholds, the blind-gate test, statuses, the JSON contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan_assets.metrics.controls import NEGATIVE_CONTROLS, split_reference
from gan_assets.metrics.evaluation import (
    ControlScore,
    EvaluationSettings,
    FidScore,
    ScoreFormatError,
    TrainingSet,
    evaluate_month,
    gate_verdict,
    status_for,
)
from gan_assets.metrics.extractors import FeatureExtractor
from gan_assets.storage.images import pack_images, unpack_images


class ProbeExtractor(FeatureExtractor):
    """Hand-made features a test can reason about: 4 x 4 average-pooled pixels (where things are,
    and their polarity) plus the mean vertical gradient (fine detail). ``symmetric`` folds the
    pooled map onto its upside-down copy: an extractor blind to orientation."""

    def __init__(self, symmetric: bool = False) -> None:
        self.name = "probe-symmetric" if symmetric else "probe"
        self.symmetric = symmetric
        self.resize_filter, self.input_range, self.batch_size = "bilinear", "-1..1", 64
        self.device = torch.device("cpu")
        self._sha, self._feature_dim = ("1" if symmetric else "0") * 64, 17

    def input_size_for(self, image_size: int) -> int:
        return image_size

    def _channels(self) -> int:
        return 1

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(batch, batch.shape[-1] // 4)
        if self.symmetric:
            pooled = pooled + pooled.flip(-2)
        gradient = (batch[..., 1:, :] - batch[..., :-1, :]).abs().mean(dim=(1, 2, 3))[:, None] * 10
        return torch.cat([pooled.flatten(1), gradient], dim=1)


def phantoms(count: int, seed: int) -> np.ndarray:
    """Oriented images: bright top fading down, a blob in the upper left, fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    out = np.empty((count, 32, 32), np.float32)
    for i in range(count):
        cx, cy = rng.uniform(0.2, 0.5), rng.uniform(0.15, 0.35)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 0.08 ** 2)) * rng.uniform(0.6, 1.0)
        out[i] = -0.6 + 0.8 * (1 - yy) + blob + rng.normal(0, 0.08, (32, 32))
    return unpack_images(pack_images(np.clip(out, -1, 1)))


REAL = phantoms(120, 0)


def training_set(extractor: FeatureExtractor) -> TrainingSet:
    return TrainingSet(extractor.extract(REAL), REAL, tuple(f"img{i}" for i in range(len(REAL))), ("2026-01-01",))


def evaluate(samples: np.ndarray, extractor: FeatureExtractor | None = None, attempt: int = 1, **settings: object):
    extractor = extractor or ProbeExtractor()
    config = EvaluationSettings(kid_num_subsets=10, **settings)  # type: ignore[arg-type]
    return evaluate_month(extractor, REAL, samples, training_set(extractor), config, attempt).score


def controls(positive: float, negatives: list[float]) -> list[ControlScore]:
    return ([ControlScore(f"negative{i}", "negative", fid, 0.0, False) for i, fid in enumerate(negatives)]
            + [ControlScore("held_out_real", "positive", positive, 0.0, False)])


def test_thresholds_of_each_rule_by_hand() -> None:
    scores = controls(4.0, [100.0, 16.0, 25.0])
    gate = gate_verdict(scores, EvaluationSettings(threshold_rule="controls"), floor_fid=2.0)
    assert gate.threshold == pytest.approx(8.0)  # sqrt(4 x 16)
    assert gate.separation == pytest.approx(4.0) and gate.discriminative and gate.reasons == ()
    assert "sqrt(4 x 16) = 8" in gate.rule and "negative1" in gate.rule
    absolute = gate_verdict(scores, EvaluationSettings(threshold_rule="absolute", fid_threshold=20.0), floor_fid=2.0)
    assert absolute.threshold == 20.0 and "fid_threshold = 20" in absolute.rule
    # negative1 scores 16 <= 20: the gate would pass it, so it is blind.
    assert not absolute.discriminative and any("negative1 passes" in r for r in absolute.reasons)
    relative = gate_verdict(scores, EvaluationSettings(threshold_rule="relative_floor", relative_factor=3.0), floor_fid=2.0)
    assert relative.threshold == pytest.approx(6.0) and relative.discriminative
    assert "3 x the real-vs-real floor FID 2 = 6" in relative.rule
    # A floor so low that the threshold falls under the positive control: the positive fails.
    low = gate_verdict(scores, EvaluationSettings(threshold_rule="relative_floor", relative_factor=1.5), floor_fid=2.0)
    assert low.threshold == pytest.approx(3.0) and not low.discriminative
    assert any("held_out_real fails" in r for r in low.reasons)


def test_separation_is_required_beyond_negatives_failing() -> None:
    # Negatives fail and the positive passes under the geometric mean as soon as N > P.
    close = controls(10.0, [13.0, 50.0])
    gate = gate_verdict(close, EvaluationSettings(min_separation=2.0), floor_fid=9.0)
    assert gate.threshold == pytest.approx(math.sqrt(130.0))
    assert all(c.fid > gate.threshold for c in close if c.kind == "negative") and 10.0 <= gate.threshold
    assert not gate.discriminative and gate.separation == pytest.approx(1.3)
    assert any("min_separation is 2" in r for r in gate.reasons)
    assert gate_verdict(close, EvaluationSettings(min_separation=1.25), floor_fid=9.0).discriminative


def test_status_precedence() -> None:
    assert status_for(discriminative=False, memorized=True, fid_passed=True, attempt=1, max_attempts=3) == "not_discriminative"
    assert status_for(discriminative=False, memorized=False, fid_passed=False, attempt=3, max_attempts=3) == "not_discriminative"
    assert status_for(discriminative=True, memorized=True, fid_passed=True, attempt=1, max_attempts=3) == "memorized"
    assert status_for(discriminative=True, memorized=True, fid_passed=True, attempt=3, max_attempts=3) == "rejected"
    assert status_for(discriminative=True, memorized=False, fid_passed=True, attempt=3, max_attempts=3) == "passed"
    assert status_for(discriminative=True, memorized=False, fid_passed=False, attempt=2, max_attempts=3) == "failed"
    assert status_for(discriminative=True, memorized=False, fid_passed=False, attempt=3, max_attempts=3) == "rejected"


def test_new_real_like_images_pass_and_noise_fails_with_every_control_scored_alike() -> None:
    split = split_reference(len(REAL), 0)
    good = evaluate(phantoms(200, 1))
    assert good.status == "passed" and good.gate.discriminative
    assert good.n_fake == len(split.held_out_index) == 60 and good.n_reference == 60
    assert [c.name for c in good.negatives] == list(NEGATIVE_CONTROLS) and good.positive.name == "held_out_real"
    assert all(not c.passed for c in good.negatives) and good.positive.passed
    lowest = min(c.fid for c in good.negatives)
    assert good.threshold == pytest.approx(math.sqrt(good.positive.fid * lowest))
    assert good.gate.separation == pytest.approx(lowest / good.positive.fid)
    assert good.memorization.near_copy_fraction == 0.0 and not good.memorization.memorized

    noise = evaluate(np.random.default_rng(3).uniform(-1, 1, (60, 32, 32)), attempt=1)
    assert noise.status == "failed" and noise.fid > noise.threshold
    assert evaluate(np.random.default_rng(3).uniform(-1, 1, (60, 32, 32)), attempt=3).status == "rejected"
    # The same controls and threshold every attempt: the bar does not move with the generator.
    assert noise.controls == good.controls and noise.threshold == good.threshold


def test_an_extractor_blind_to_orientation_makes_the_month_not_discriminative() -> None:
    blind = evaluate(phantoms(200, 1), extractor=ProbeExtractor(symmetric=True))
    assert blind.status == "not_discriminative" and not blind.passed and not blind.gate.discriminative
    flipped = next(c for c in blind.controls if c.name == "flipped_vertical")
    assert flipped.passed or blind.gate.separation < blind.gate.min_separation
    assert any("flipped_vertical" in reason for reason in blind.gate.reasons)


def test_copies_of_training_images_are_memorized_then_rejected_on_the_last_attempt() -> None:
    copies = REAL[::-1].copy()
    memorized = evaluate(copies, attempt=1)
    # Copies score like real images (FID passes) but they are the training images themselves.
    assert memorized.fid <= memorized.threshold and memorized.gate.discriminative
    assert memorized.memorization.near_copy_fraction == 1.0 and memorized.status == "memorized"
    assert evaluate(copies, attempt=3).status == "rejected"
    # One copy among 60 samples (1/60 = 0.017) exceeds the default limit 0.01, not a limit of 0.02.
    one_copy = np.concatenate([REAL[:1], phantoms(59, 5)])
    assert evaluate(one_copy).status == "memorized"
    assert evaluate(one_copy, max_near_copy_fraction=0.02).status == "passed"


def test_json_contract_round_trips() -> None:
    score = evaluate(phantoms(60, 1))
    stored = json.loads(json.dumps(score.to_dict(), allow_nan=False))
    for key in ("fid", "kid_mean", "kid_std", "floor_fid", "floor_kid", "status", "attempt", "max_attempts",
                "memorization", "fingerprint", "config", "config_diff", "threshold", "threshold_rule", "passed"):
        assert key in stored
    assert len(stored["controls"]) == 8
    for control in stored["controls"]:
        assert set(control) == {"name", "kind", "fid", "kid", "passed"}
        assert control["kind"] in ("negative", "positive") and isinstance(control["passed"], bool)
    assert {"threshold", "rule", "discriminative"} <= set(stored["gate"])
    assert stored["gate"]["rule"].startswith("controls: geometric mean")
    assert stored["memorization"]["memorized"] is False and "closest" in stored["memorization"]
    assert FidScore.from_dict(stored) == score
    with pytest.raises(ScoreFormatError, match="lacks"):
        FidScore.from_dict({k: v for k, v in stored.items() if k != "controls"})
    with pytest.raises(ScoreFormatError, match="status"):
        FidScore.from_dict({**stored, "status": "maybe"})
