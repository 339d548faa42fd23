"""The config schemas: one per concern, bounded, with the dangerous values refused by name."""

from __future__ import annotations

import math
from typing import Any

import dagster as dg
import pytest
from pydantic import ValidationError

from gan_assets.model.config import LEGACY_FIELDS, ConfigError, EvaluationConfig, GenerationConfig, TrainConfig
from gan_assets.resources import EvaluationBar, GanConfig, GenerationSettings, PreprocessConfig
from gan_assets_tests.factories import tiny_training

# Each value was accepted before the schemas had bounds, and each is dangerous: a bar that
# passes everything, a retrain loop without end, allocations no machine holds, a seed numpy
# refuses, a device string that fails only deep inside torch.
DANGEROUS: list[tuple[type[dg.ConfigurableResource], str, Any]] = [
    (EvaluationBar, "fid_threshold", math.inf),
    (EvaluationBar, "relative_factor", math.inf),
    (EvaluationBar, "max_attempts", 1000),
    (GanConfig, "latent_dim", 1e8),
    (GanConfig, "generator_width", 1e6),
    (GenerationSettings, "num_samples", 1e9),
    (GanConfig, "steps", 1e12),
    (GanConfig, "num_workers", 1000),
    (GanConfig, "seed", -5),
    (GanConfig, "device", "cuda:abc"),
]


@pytest.mark.parametrize(("resource", "name", "value"), DANGEROUS, ids=[f"{n}={v}" for _, n, v in DANGEROUS])
def test_a_dangerous_value_is_refused_naming_the_field(resource: type[dg.ConfigurableResource], name: str,
                                                        value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        resource(**{name: value})
    (error,) = info.value.errors()
    assert error["loc"] == (name,)
    assert name in str(info.value)
    # Control: the field's default is accepted by the same resource.
    assert getattr(resource(), name) == resource.model_fields[name].default


@pytest.mark.parametrize(("resource", "name", "value"), DANGEROUS, ids=[f"{n}={v}" for _, n, v in DANGEROUS])
def test_every_bound_says_why_in_its_description(resource: type[dg.ConfigurableResource], name: str,
                                                  value: Any) -> None:
    description = resource.model_fields[name].description or ""
    assert len(description) > 40, name


def test_a_dangerous_value_in_run_config_fails_the_run_before_the_step(tmp_path: Any) -> None:
    """The launchpad path: run config builds the resource, and the bound stops the run there."""

    @dg.asset
    def probe(gan_config: GanConfig) -> None:
        raise AssertionError("the step must not run with an out-of-bounds config")

    with pytest.raises(dg.DagsterResourceFunctionError) as info:
        dg.materialize([probe], resources={"gan_config": GanConfig()},
                       run_config={"resources": {"gan_config": {"config": {"steps": 10**12}}}})
    assert "steps" in str(info.value.__cause__)


def test_choices_are_enums_in_the_launchpad() -> None:
    fields = GanConfig.to_config_schema().as_field().config_type.fields
    assert [v.config_value for v in fields["loss"].config_type.enum_values] == ["bce", "hinge"]
    assert {v.config_value for v in fields["diffaugment"].config_type.enum_values} >= {"", "translation,cutout"}
    bar = EvaluationBar.to_config_schema().as_field().config_type.fields
    assert [v.config_value for v in bar["threshold_rule"].config_type.enum_values] == ["controls", "absolute",
                                                                                     "relative_floor"]
    with pytest.raises(dg.DagsterInvalidConfigError, match="loss"):
        @dg.asset
        def probe(gan_config: GanConfig) -> None:
            pass

        dg.materialize([probe], resources={"gan_config": GanConfig()},
                       run_config={"resources": {"gan_config": {"config": {"loss": "wasserstein"}}}})


def test_the_resources_inherit_the_core_schemas_instead_of_repeating_them() -> None:
    for resource, core in ((GanConfig, TrainConfig), (EvaluationBar, EvaluationConfig),
                           (GenerationSettings, GenerationConfig)):
        assert issubclass(resource, core) and set(resource.model_fields) == set(core.model_fields)
        assert not {name for name in vars(resource).get("__annotations__", {}) if not name.startswith("_")}, resource
    # The cores get a plain core object, not the Dagster resource.
    plain = GanConfig(**tiny_training()).to_train_config()
    assert type(plain) is TrainConfig and plain == TrainConfig(**tiny_training())
    assert type(EvaluationBar(max_attempts=2).to_evaluation_config()) is EvaluationConfig
    assert type(GenerationSettings(num_samples=3).to_generation_config()) is GenerationConfig


def test_the_concerns_do_not_overlap() -> None:
    train, bar, generation = (set(c.model_fields) for c in (TrainConfig, EvaluationConfig, GenerationConfig))
    assert not train & bar and not train & generation and not bar & generation
    # What used to live in the one mixed config: the bar, generation and two superseded fields.
    assert bar | generation | {"threshold_mode", "fid_num_fake"} == LEGACY_FIELDS


def test_a_stored_config_of_an_earlier_version_still_loads() -> None:
    """Attempt records and generator bundles hold the old mixed config; reading one drops the bar."""
    old = {**tiny_training(), "fid_threshold": 50.0, "threshold_mode": "absolute", "relative_factor": 3.0,
           "max_attempts": 3, "fid_num_fake": 0, "memorization_threshold": 0.05, "threshold_rule": "controls",
           "min_separation": 2.0, "max_near_copy_fraction": 0.01, "num_samples": 64, "sample_seed": 1234,
           "write_sample_dicoms": False}
    assert TrainConfig.from_dict(old) == TrainConfig(**tiny_training())
    with pytest.raises(ConfigError, match=r"unknown gan_config field\(s\) \['step'\]"):
        TrainConfig.from_dict({**old, "step": 50})
    with pytest.raises(ConfigError, match=r"gan_config.steps=1000000000000 is invalid"):
        TrainConfig.from_dict({**old, "steps": 10**12})


def test_replace_validates_like_construction() -> None:
    config = TrainConfig(**tiny_training())
    assert config.replace(steps=6).steps == 6
    with pytest.raises(ConfigError, match="gan_config.seed=-5"):
        config.replace(seed=-5)
    with pytest.raises(ConfigError, match="image_size"):
        config.replace(image_size=48)


def test_preprocess_choices_and_limits_are_refused_by_name() -> None:
    for name, value in (("voi_policy", "guess"), ("geometry", "stretch"), ("workers", 10_000),
                        ("decode_seconds", math.inf), ("min_side", 0)):
        with pytest.raises(ValidationError) as info:
            PreprocessConfig(**{name: value})
        assert info.value.errors()[0]["loc"] == (name,)


def test_preprocess_choices_are_the_decoders_choices() -> None:
    from typing import get_args

    from gan_assets.dicom.config import MissingBurnedInPolicy, VoiPreset
    from gan_assets.dicom.preprocess import VOI_PRESETS
    from gan_assets.dicom.vocabulary import MISSING_BURNED_IN_POLICIES

    assert set(get_args(VoiPreset)) == set(VOI_PRESETS)
    assert get_args(MissingBurnedInPolicy) == MISSING_BURNED_IN_POLICIES
    options = PreprocessConfig(voi_policy="preset", voi_preset="lung", workers=1).options(32)
    assert (options.image_size, options.voi_preset, options.limits.decode_seconds) == (32, "lung", 60.0)


def test_the_feature_extractor_choices_and_sizes_are_refused_by_name() -> None:
    from gan_assets.resources import FidExtractor

    for name, value in (("kind", "inception"), ("resize_filter", "lanczos"), ("input_range", "0..65535"),
                        ("kid_subsets", 0), ("kid_subset_size", 1), ("feature_dim", 10**6), ("device", "gpu")):
        with pytest.raises(ValidationError) as info:
            FidExtractor(**{name: value})
        assert info.value.errors()[0]["loc"] == (name,)
    assert FidExtractor(kind="random_conv", kid_subsets=5, kid_subset_size=8).build().feature_dim == 512


def test_a_generator_stored_with_the_old_mixed_config_still_loads() -> None:
    """trained_generator bundles of earlier versions carry the bar and generation fields in attrs['config']."""
    import torch

    from gan_assets.model.artifact import generator_from_bundle
    from gan_assets.model.dcgan import build_generator
    from gan_assets.storage import TensorBundle

    config = TrainConfig(**tiny_training())
    torch.manual_seed(0)
    state = build_generator(config).state_dict()
    old = {**config.to_dict(), "fid_threshold": 50.0, "max_attempts": 3, "threshold_mode": "absolute",
           "fid_num_fake": 0, "num_samples": 64, "sample_seed": 1234, "write_sample_dicoms": False}
    generator = generator_from_bundle(TensorBundle(tensors=state, attrs={"config": old}))
    assert all(torch.equal(generator.state_dict()[k], v) for k, v in state.items())
