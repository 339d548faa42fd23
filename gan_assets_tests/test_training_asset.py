"""trained_generator materializes from stored preprocessed_images and its weights load back safely."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

from gan_assets.assets.common import TRAINING_TAG
from gan_assets.assets.training import pack_window, trained_generator, training_window
from gan_assets.io_managers import ArtifactStorage
from gan_assets.jobs import retrain_job
from gan_assets.model.artifact import generator_from_bundle, sample_images
from gan_assets.model.history import list_attempts
from gan_assets.partitions import monthly_partitions
from gan_assets.storage import ArrayBundle, TensorBundle, decode, store_from_uri
from gan_assets.storage.digest import state_dict_sha256
from gan_assets.storage.images import grid_png
from gan_assets_tests.factories import seed_images, tiny_config_resources, tiny_train_config

UPSTREAM = dg.AssetSpec("preprocessed_images", partitions_def=monthly_partitions)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def seed_month(root: Path, partition: str, n: int, size: int = 32) -> np.ndarray:
    """Write a preprocessed_images partition exactly as the ingest stage stores it."""
    rng = np.random.default_rng(len(partition) + n)
    return seed_images(root, partition, rng.uniform(-1, 1, (n, size, size)).astype(np.float32)).arrays["images"]


def materialize(root: Path, partition: str, **config: object) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [UPSTREAM, trained_generator],
        partition_key=partition,
        resources={"io_manager": ArtifactStorage(root=str(root)),
                   "artifact_store": ArtifactStorage(root=str(root)),
                   **tiny_config_resources(training=dict(config))},
        tags={"gan/attempt": "2"},
        raise_on_error=False,
    )


def test_materializes_over_the_window_and_weights_reload_exactly(artifacts_dir: Path) -> None:
    january = seed_month(artifacts_dir, "2026-01-01", 10)
    march = seed_month(artifacts_dir, "2026-03-01", 14)  # February is missing: allowed
    result = materialize(artifacts_dir, "2026-03-01")
    assert result.success

    stored = (artifacts_dir / "trained_generator" / "2026-03-01.safetensors").read_bytes()
    bundle = decode("safetensors", stored)  # no pickle: safetensors.torch.load inside
    assert isinstance(bundle, TensorBundle)
    attrs = bundle.attrs
    assert attrs["config"] == tiny_train_config().to_dict()
    assert attrs["attempt"] == 2
    fingerprint = attrs["data_fingerprint"]
    assert fingerprint["partitions"] == {"2026-01-01": 10, "2026-03-01": 14}
    assert fingerprint["n_images"] == 24
    assert len(fingerprint["sha256"]) == 64
    assert attrs["loss_history"]["step"] == [1, 2, 3, 4]
    assert attrs["device"] == "cpu" and attrs["fixed_noise_seed"] == 0

    # A fresh generator from the stored bundle reproduces the fixed-noise grid shown in the UI.
    generator = generator_from_bundle(bundle)
    again = generator_from_bundle(decode("safetensors", stored))
    samples = sample_images(generator, 64, seed=attrs["fixed_noise_seed"])
    assert np.array_equal(samples, sample_images(again, 64, seed=attrs["fixed_noise_seed"]))
    materialization = result.asset_materializations_for_node("trained_generator")[0]
    metadata = materialization.metadata
    shown = re.search(r"base64,([A-Za-z0-9+/=]+)\)", metadata["samples"].value).group(1)  # type: ignore[union-attr]
    assert base64.b64decode(shown) == grid_png(samples, columns=8)

    assert metadata["steps"].value == 4 and metadata["attempt"].value == 2
    assert metadata["device"].value == "cpu"
    assert metadata["images_per_second"].value > 0 and metadata["wall_seconds"].value > 0
    assert metadata["generator_parameters"].value == sum(p.numel() for p in generator.parameters())
    assert "data:image/png;base64," in metadata["loss_curve"].value  # type: ignore[operator]
    assert np.isfinite(metadata["final_loss_d"].value)
    # The attempt is kept in the month's history under a key naming it, with the weights' hash,
    # and the hash is the materialization's data version.
    history = list_attempts(store_from_uri(str(artifacts_dir)), "2026-03-01")
    assert history == [attrs["history_key"]] and f"attempt-02-{result.run_id[:8]}" in history[0]
    kept = decode("safetensors", (artifacts_dir / history[0]).read_bytes())
    assert state_dict_sha256(kept.tensors) == attrs["weights_sha256"] == state_dict_sha256(bundle.tensors)
    assert metadata["weights_sha256"].value == attrs["weights_sha256"]
    assert materialization.tags["dagster/data_version"] == attrs["weights_sha256"][:32]
    again_run = materialize(artifacts_dir, "2026-03-01", seed=7)
    assert len(list_attempts(store_from_uri(str(artifacts_dir)), "2026-03-01")) == 2  # the first attempt survives
    assert again_run.success
    # the same packed bytes give the same fingerprint (what a reader checks against)
    _, same = pack_window({"2026-01-01": ArrayBundle({"images": january}),
                           "2026-03-01": ArrayBundle({"images": march})}, 32)
    assert same == fingerprint


def test_empty_window_fails_with_a_clear_error(artifacts_dir: Path) -> None:
    result = materialize(artifacts_dir, "2026-05-01")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None
    assert "no training images in the window" in failure.to_string()


def test_training_window_names_every_month_and_leaves_out_missing_ones() -> None:
    jan, mar = ArrayBundle({"images": np.zeros((1, 4, 4), np.uint8)}), ArrayBundle({"images": np.ones((2, 4, 4), np.uint8)})
    # Several months: in month order, a month the IO manager could not load is left out.
    window = training_window({"2026-03-01": mar, "2026-02-01": None, "2026-01-01": jan},
                             ["2026-01-01", "2026-02-01", "2026-03-01"], "2026-03-01")
    assert list(window) == ["2026-01-01", "2026-03-01"] and window["2026-03-01"] is mar
    # One month arrives as a bare bundle: named by the partition it records first ...
    recorded = ArrayBundle({"images": np.zeros((1, 4, 4), np.uint8)}, attrs={"partition": "2026-02-01"})
    assert list(training_window(recorded, ["2026-03-01"], "2026-03-01")) == ["2026-02-01"]
    # ... else by the input's last key, else by the month being materialized (never a placeholder).
    assert list(training_window(mar, ["2026-03-01", "2026-01-01"], "2026-04-01")) == ["2026-03-01"]
    assert list(training_window(mar, [], "2026-04-01")) == ["2026-04-01"]
    assert training_window(None, ["2026-03-01"], "2026-03-01") == {}


def test_image_size_mismatch_names_the_partition() -> None:
    with pytest.raises(ValueError, match=r"2026-04-01 has 64x64 images but gan_config.image_size=32"):
        pack_window({"2026-04-01": ArrayBundle({"images": np.zeros((2, 64, 64), np.uint8)})}, 32)


def test_training_runs_are_tagged() -> None:
    assert trained_generator.op.tags[TRAINING_TAG] == "true"
    assert trained_generator.op.pool == "gan_training"
    assert trained_generator.group_names_by_key[trained_generator.key] == "model"


@dataclass
class DivergedMonth:
    """A month whose training diverges (a NaN loss from the training core) on attempt 1 and on its
    last attempt (3), with the retrain sensor ticked after each."""
    artifacts: Path
    first: dg.ExecuteInProcessResult
    request: dg.RunRequest
    history_scores: list[str]
    last: dg.ExecuteInProcessResult
    final: Any


@pytest.fixture(scope="module")
def diverged_month(tmp_path_factory: pytest.TempPathFactory) -> DivergedMonth:
    from gan_assets.model.train import DivergenceError
    from gan_assets.resources import Notifier
    from gan_assets.sensors import notify_on_run_failure, retrain_on_fid_failure

    def diverges(images: Any, config: Any, logger: Any) -> Any:
        raise DivergenceError(3, float("nan"), float("inf"))

    artifacts_dir = tmp_path_factory.mktemp("diverged") / "artifacts"
    with pytest.MonkeyPatch.context() as monkeypatch, dg.DagsterInstance.ephemeral() as instance:
        monkeypatch.setattr("gan_assets.assets.training._train", diverges)
        seed_month(artifacts_dir, "2026-03-01", 12)
        defs = dg.Definitions(
            assets=[UPSTREAM, trained_generator], jobs=[retrain_job], sensors=[retrain_on_fid_failure],
            resources={"io_manager": ArtifactStorage(root=str(artifacts_dir)),
                       "artifact_store": ArtifactStorage(root=str(artifacts_dir)),
                       **tiny_config_resources(evaluation={"max_attempts": 3}), "notifier": Notifier()})
        first = dg.materialize([UPSTREAM, trained_generator], partition_key="2026-03-01", instance=instance,
                               resources=defs.resources, tags={"gan/attempt": "1"}, raise_on_error=False)
        # The failure notifier leaves it to the retrain loop.
        context = dg.build_run_status_sensor_context(
            sensor_name="notify_on_run_failure", dagster_instance=instance, dagster_run=first.dagster_run,
            dagster_event=first.get_run_failure_event(), resources={"notifier": Notifier(webhook_url="http://127.0.0.1:9/x")},
        ).for_run_failure()
        notify_on_run_failure(context)  # would fail to post (port 9) and log a warning if it tried
        with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
            data = retrain_on_fid_failure.evaluate_tick(context)
        (request,) = data.run_requests
        scores = [k for k in store_from_uri(str(artifacts_dir)).list("trained_generator/2026-03-01.history/")
                  if k.endswith(".score.json")]

        last = dg.materialize([UPSTREAM, trained_generator], partition_key="2026-03-01", instance=instance,
                              resources=defs.resources, tags={"gan/attempt": "3"},
                              raise_on_error=False)
        with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources,
                                     cursor=data.cursor) as context:
            final = retrain_on_fid_failure.evaluate_tick(context)
    # The patch ends with the story: the module's other tests train for real.
    return DivergedMonth(artifacts_dir, first, request, scores, last, final)


def test_a_diverged_training_fails_its_step_saying_what_comes_next(diverged_month: DivergedMonth) -> None:
    assert not diverged_month.first.success
    error = diverged_month.first.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert "diverged at step 3" in error and "halved learning rates" in error


def test_the_retrain_sensor_halves_both_learning_rates_after_a_divergence(diverged_month: DivergedMonth) -> None:
    config = diverged_month.request.run_config["resources"]["gan_config"]["config"]
    tiny = tiny_train_config()
    assert (config["lr_g"], config["lr_d"]) == (tiny.lr_g / 2, tiny.lr_d / 2)


def test_the_retrain_after_a_divergence_is_attempt_2_of_the_month_with_its_reason(diverged_month: DivergedMonth) -> None:
    request = diverged_month.request
    assert request.tags["gan/attempt"] == "2" and "diverged in training" in request.tags["gan/reason"]
    assert request.partition_key == "2026-03-01"


def test_the_diverged_attempt_is_recorded_in_the_months_history(diverged_month: DivergedMonth) -> None:
    scores = diverged_month.history_scores
    assert len(scores) == 1 and json.loads((diverged_month.artifacts / scores[0]).read_text())["status"] == "diverged"


def test_a_divergence_on_the_last_attempt_rejects_the_month(diverged_month: DivergedMonth) -> None:
    assert not diverged_month.last.success
    final = diverged_month.final
    assert not final.run_requests and "rejected" in (final.skip_message or "")
