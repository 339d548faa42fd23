"""The retrain loop's mutation policy: deterministic, chained, documented, configurable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gan_assets.model.config import TrainConfig, config_diff
from gan_assets.model.mutation import (
    DEFAULT_POLICY,
    POLICY_ENV_VAR,
    MutationPolicy,
    MutationPolicyError,
    mutate_config,
    policy_from_env,
)

TINY = TrainConfig(image_size=32, latent_dim=16, generator_width=8, discriminator_width=8,
                   batch_size=8, steps=4, log_every=2, num_samples=8, fid_num_fake=16,
                   lr_g=2e-4, lr_d=4e-4, ema=False)


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


def test_deterministic_and_evaluation_settings_untouched() -> None:
    config = TrainConfig(fid_threshold=12.5, max_attempts=6)
    current = config
    for attempt in range(2, 7):
        nxt = mutate_config(current.to_dict(), attempt)
        assert nxt == mutate_config(current, attempt)
        assert (nxt.fid_threshold, nxt.max_attempts, nxt.image_size) == (12.5, 6, 64)
        current = nxt


def test_policy_from_env_json_and_file(tmp_path: Path) -> None:
    assert policy_from_env({}) is DEFAULT_POLICY
    text = json.dumps([{"scale": {"lr_g": 0.1}, "description": "cut lr_g"}])
    policy = policy_from_env({POLICY_ENV_VAR: text})
    assert mutate_config(TINY, 2, policy).lr_g == pytest.approx(2e-5)
    assert mutate_config(TINY, 3, policy).lr_d == TINY.lr_d  # only lr_g is in that policy
    assert policy.rule_for(5).describe() == "cut lr_g"
    path = tmp_path / "policy.json"
    path.write_text(json.dumps([{"set": {"loss": "hinge"}}]))
    assert mutate_config(TINY, 2, policy_from_env({POLICY_ENV_VAR: str(path)})).loss == "hinge"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('[{"scale": {"fid_threshold": 2}}]', "fid_threshold: this field must stay fixed"),
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
        policy_from_env({POLICY_ENV_VAR: raw})
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


def test_the_evaluation_bar_is_frozen() -> None:
    from gan_assets.model.mutation import FROZEN_FIELDS

    for name in ("threshold_rule", "min_separation", "max_near_copy_fraction", "fid_threshold"):
        assert name in FROZEN_FIELDS
