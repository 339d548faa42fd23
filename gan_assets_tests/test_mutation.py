"""The retrain loop's mutation policy: deterministic, chained, documented, configurable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gan_assets.model.config import TrainConfig, config_diff
from gan_assets.model.mutation import (
    DEFAULT_POLICY,
    MutationPolicy,
    MutationPolicyError,
    mutate_config,
    parse_policy,
)
from gan_assets_tests.factories import tiny_train_config

TINY = tiny_train_config(lr_g=2e-4, lr_d=4e-4, ema=False)


def test_attempt_2_turns_diffaugment_on_with_50_percent_more_steps() -> None:
    plain = TINY.replace(diffaugment="")
    second = mutate_config(plain, 2)
    assert config_diff(plain.to_dict(), second.to_dict()) == {
        "diffaugment": ["", "translation,cutout"], "steps": [4, 6]}


def test_attempt_2_on_the_default_config_is_the_budget_alone() -> None:
    # Augmentation is on by default, so the rung's only change is 50% more steps (no seed bump).
    assert TrainConfig().diffaugment == "translation,cutout"
    assert config_diff(TINY.to_dict(), mutate_config(TINY, 2).to_dict()) == {"steps": [4, 6]}


def test_attempts_chain_and_never_touch_the_rungs_that_measured_worse() -> None:
    current = TINY.replace(diffaugment="")
    budgets = []
    for attempt in range(2, 7):
        nxt = mutate_config(current, attempt)
        # Halving the learning rates, hinge + spectral norm and TTUR made FID worse: never applied.
        assert (nxt.lr_g, nxt.lr_d, nxt.loss, nxt.spectral_norm) == (TINY.lr_g, TINY.lr_d, "bce", False)
        assert nxt.diffaugment == "translation,cutout"
        budgets.append(nxt.steps)
        current = nxt
    assert budgets == [6, 9, 14, 21, 32]  # x1.5 each attempt, rounded up
    # The default budget: 400 steps -> 600 -> 900.
    assert [mutate_config(TrainConfig(), 2).steps, mutate_config(mutate_config(TrainConfig(), 2), 3).steps] == [600, 900]


def test_augmentation_is_merged_not_replaced() -> None:
    assert mutate_config(TINY.replace(diffaugment="cutout"), 2).diffaugment == "cutout,translation"


def test_a_rule_that_changes_nothing_varies_the_seed_instead() -> None:
    policy = MutationPolicy.from_json([{"set": {"ema": True}}])
    on = TINY.replace(ema=True, seed=7)
    assert config_diff(on.to_dict(), mutate_config(on, 2, policy).to_dict()) == {"seed": [7, 8]}


def test_deterministic_and_the_data_shape_untouched() -> None:
    current = TrainConfig()
    for attempt in range(2, 7):
        nxt = mutate_config(current.to_dict(), attempt)
        assert nxt == mutate_config(current, attempt)
        assert nxt.image_size == 64
        current = nxt


def test_a_config_stored_with_the_old_evaluation_fields_mutates_to_training_fields_only() -> None:
    stored = {**TINY.to_dict(), "fid_threshold": 12.5, "max_attempts": 6, "threshold_mode": "absolute",
              "fid_num_fake": 16, "num_samples": 8}
    mutated = mutate_config(stored, 2)
    assert mutated.to_dict() == mutate_config(TINY, 2).to_dict()
    assert set(mutated.to_dict()) == set(TrainConfig.model_fields)


def test_parse_policy_json_and_file(tmp_path: Path) -> None:
    assert parse_policy("") is DEFAULT_POLICY
    text = json.dumps([{"scale": {"lr_g": 0.1}, "description": "cut lr_g"}])
    policy = parse_policy(text)
    assert mutate_config(TINY, 2, policy).lr_g == pytest.approx(2e-5)
    assert mutate_config(TINY, 3, policy).lr_d == TINY.lr_d  # only lr_g is in that policy
    assert policy.rule_for(5).describe() == "cut lr_g"
    path = tmp_path / "policy.json"
    path.write_text(json.dumps([{"set": {"loss": "hinge"}}]))
    assert mutate_config(TINY, 2, parse_policy(str(path))).loss == "hinge"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('[{"scale": {"fid_threshold": 2}}]', "fid_threshold: not a training field"),
        ('[{"set": {"max_attempts": 9}}]', "max_attempts: not a training field"),
        ('[{"set": {"image_size": 64}}]', "image_size: this field must stay fixed"),
        ('[{"scale": {"lr_gg": 0.5}}]', "lr_gg: unknown gan_config field"),
        ('[{"scale": {"loss": 0.5}}]', "only numeric fields"),
        ('[{"scale": {"lr_g": -1}}]', "positive number"),
        ('[{"bump": {}}]', "unknown key(s) ['bump']"),
        ("[]", "at least one rule"),
        ('{"scale": {}}', "JSON list of rules"),
        ("[{", "not valid JSON"),
        ("/nonexistent/policy.json", "neither a JSON list nor an existing .json file"),
    ],
)
def test_bad_policies_are_refused_with_a_clear_message(raw: str, message: str) -> None:
    with pytest.raises(MutationPolicyError, match=None) as info:
        parse_policy(raw)
    assert message in str(info.value)


def test_a_rule_producing_an_invalid_config_names_the_attempt() -> None:
    policy = MutationPolicy.from_json([{"set": {"loss": "wasserstein"}}])
    with pytest.raises(MutationPolicyError, match="attempt 2.*loss"):
        mutate_config(TINY, 2, policy)
    with pytest.raises(ValueError, match="attempt >= 2"):
        mutate_config(TINY, 1)


def test_memorization_takes_its_own_rule_not_the_ladder() -> None:
    from gan_assets.model.mutation import FROZEN_FIELDS, MEMORIZATION_RULE

    base = TrainConfig(steps=400, diffaugment="")
    mutated = mutate_config(base, 2, cause="memorized")
    # Fewer steps (400 x 0.75) and both DiffAugment policies on; learning rates untouched.
    assert mutated.steps == 300 and mutated.augment_policies == ("translation", "cutout")
    assert (mutated.lr_g, mutated.lr_d) == (base.lr_g, base.lr_d)
    assert mutate_config(base, 2) != mutated  # the quality ladder is something else
    assert not set(MEMORIZATION_RULE.scale) & FROZEN_FIELDS and not set(MEMORIZATION_RULE.set) & FROZEN_FIELDS
    with pytest.raises(ValueError, match="unknown"):
        mutate_config(base, 2, cause="boredom")  # type: ignore[arg-type]


def test_the_evaluation_bar_is_out_of_reach() -> None:
    from gan_assets.model.config import EvaluationConfig

    # No field of the bar is a training field, so no rule can name it (see the refusals above).
    assert not set(EvaluationConfig.model_fields) & set(TrainConfig.model_fields)


def test_the_ladder_stops_at_the_steps_bound_with_a_clear_refusal() -> None:
    near = TINY.replace(steps=900_000)
    with pytest.raises(MutationPolicyError, match=r"attempt 3 .*gan_config.steps=1350000 is invalid.*1000000"):
        mutate_config(near, 3)
    # Just inside the bound the rung still applies.
    assert mutate_config(TINY.replace(steps=600_000), 3).steps == 900_000
