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


def test_attempt_2_halves_both_learning_rates_only() -> None:
    second = mutate_config(TINY, 2)
    assert second.lr_g == pytest.approx(1e-4) and second.lr_d == pytest.approx(2e-4)
    assert config_diff(TINY.to_dict(), second.to_dict()) == {"lr_d": [4e-4, 2e-4], "lr_g": [2e-4, 1e-4]}


def test_attempt_3_chains_from_attempt_2_halving_again_with_50_percent_more_steps() -> None:
    third = mutate_config(mutate_config(TINY, 2), 3)
    assert third.lr_g == pytest.approx(5e-5) and third.lr_d == pytest.approx(1e-4)
    assert third.steps == 6  # 4 x 1.5
    assert set(config_diff(TINY.to_dict(), third.to_dict())) == {"lr_g", "lr_d", "steps"}
    # 400 steps (the default budget) -> 600.
    assert TrainConfig().steps == 400 and mutate_config(TrainConfig(), 3).steps == 600


def test_attempt_4_and_5_turn_on_augmentation_ema_then_hinge_spectral_norm() -> None:
    third = mutate_config(mutate_config(TINY, 2), 3)
    fourth = mutate_config(third, 4)
    assert fourth.diffaugment == "translation,cutout" and fourth.ema is True
    assert fourth.steps == 9 and fourth.lr_g == third.lr_g
    fifth = mutate_config(fourth, 5)
    assert fifth.loss == "hinge" and fifth.spectral_norm is True and fifth.steps == 14
    # Past the last rule the last rule repeats; it then changes only steps.
    sixth = mutate_config(fifth, 6)
    assert config_diff(fifth.to_dict(), sixth.to_dict()) == {"steps": [14, 21]}


def test_augmentation_is_merged_not_replaced() -> None:
    assert mutate_config(TINY.replace(diffaugment="cutout"), 4).diffaugment == "cutout,translation"


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
