"""The retrain loop under the real daemon: `dagster-daemon run` retrains a failing month.

A temporary DAGSTER_HOME (SQLite, default run launcher), the project's own code location
(gan_assets.definitions) configured by env vars: artifacts and landing zone under tmp, a tiny
gan_config with an impossible FID threshold. Attempt 1 is materialized in this process into
the same instance; the running daemon must then tick retrain_on_fid_failure (running by
default) and launch retrain_job for the month as attempt 2 with the default ladder's first rung (50% more steps).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from gan_assets.assets.common import ATTEMPT_TAG, PARENT_RUN_TAG
from gan_assets_tests.daemon_harness import (
    log_excerpt,
    processes_with_home,
    stop_process_group,
    write_instance,
    write_workspace,
)
from gan_assets_tests.factories import loop_defs, seed_preprocessed_images, tiny_config_overrides

MONTH = "2026-03-01"
REPO = Path(__file__).resolve().parents[1]
DEADLINE_SECONDS = 150.0


def _fid_events(instance: dg.DagsterInstance, run_id: str) -> list[dg.EventLogRecord]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("fid_score"), asset_partitions=[MONTH]), limit=20).records
    return [r for r in records if r.run_id == run_id]


@dataclass
class RetrainUnderDaemon:
    """Attempt 1 materialized in-process into the daemon's instance; the daemon's retrain of it."""
    first: dg.ExecuteInProcessResult
    first_score: dict[str, Any]
    retrain: Any
    second: list[dg.EventLogRecord]
    processes_left: list[int]


@pytest.fixture(scope="module")
def retrain_under_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RetrainUnderDaemon]:
    tmp_path = tmp_path_factory.mktemp("daemon_e2e")
    home = write_instance(tmp_path / "dagster_home")
    artifacts = tmp_path / "artifacts"
    landing = tmp_path / "landing_zone"
    landing.mkdir()
    daemon_env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "GAN_ASSETS_ENV": "local",
        "GAN_ASSETS_ARTIFACTS_DIR": str(artifacts),
        "GAN_ASSETS_LANDING_ZONE": str(landing),
        # The default, data-derived threshold: a 4-step model fails it, so attempt 2 must follow.
        "GAN_ASSETS_CONFIG_OVERRIDES": json.dumps(tiny_config_overrides()),
        # The images seeded below were made for the random conv net's honest gate to see.
        "GAN_ASSETS_FID_EXTRACTOR_OVERRIDES": json.dumps({"kind": "random_conv"}),
        "PYTHONUNBUFFERED": "1",
    }
    daemon_env.pop("GAN_ASSETS_MUTATION_POLICY", None)
    daemon_env.pop("GAN_ASSETS_WEBHOOK_URL", None)
    # Enough oriented, textured images that the honest default gate can discriminate: the tiny
    # model then fails on quality (not a blind gate), which is what the daemon must retrain.
    seed_preprocessed_images(artifacts, [MONTH], n=200, oriented=True)
    workspace = write_workspace(tmp_path / "workspace.yaml", REPO)
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in ("GAN_ASSETS_ENV", "GAN_ASSETS_ARTIFACTS_DIR", "GAN_ASSETS_LANDING_ZONE",
                     "GAN_ASSETS_CONFIG_OVERRIDES", "GAN_ASSETS_FID_EXTRACTOR_OVERRIDES", "DAGSTER_HOME"):
            monkeypatch.setenv(name, daemon_env[name])
        monkeypatch.delenv("GAN_ASSETS_MUTATION_POLICY", raising=False)

        with dg.DagsterInstance.from_config(str(home)) as instance:
            # Attempt 1, in this process, into the daemon's instance.
            defs = loop_defs(artifacts)
            first = defs.resolve_job_def("retrain_job").execute_in_process(
                instance=instance, partition_key=MONTH, raise_on_error=False)
            (event,) = first.asset_materializations_for_node("fid_score")
            first_score = {k: v.value for k, v in event.metadata.items()}
            if first_score["status"] != "failed":  # nothing for the daemon to retrain: the first rule says why
                yield RetrainUnderDaemon(first, first_score, None, [], [])
                return

            log_path = tmp_path / "daemon.log"
            with open(log_path, "wb") as log:
                daemon = subprocess.Popen(
                    [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                    cwd=REPO, env=daemon_env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, stopped with killpg below
                )
            try:
                retrain, second = None, []
                started = time.monotonic()
                while time.monotonic() - started < DEADLINE_SECONDS:
                    assert daemon.poll() is None, f"dagster-daemon exited early:\n{log_excerpt(log_path)}"
                    runs = instance.get_runs(filters=dg.RunsFilter(tags={ATTEMPT_TAG: "2"}))
                    if runs:
                        retrain = runs[0]
                        # Done once the retrain has scored its model (its check step may still run).
                        second = _fid_events(instance, retrain.run_id)
                        if second:
                            break
                        assert not retrain.is_finished, (
                            f"attempt-2 run {retrain.run_id} ended {retrain.status} without scoring:\n{log_excerpt(log_path)}")
                    time.sleep(2)
                elapsed = time.monotonic() - started
                assert second, (f"no attempt-2 fid_score within {DEADLINE_SECONDS}s (run: {retrain and retrain.run_id}); "
                                f"daemon log:\n{log_excerpt(log_path)}")
            finally:
                stop_process_group(daemon, home)
            print(f"daemon retrained {MONTH} as attempt 2 {elapsed:.0f}s after dagster-daemon started")
            yield RetrainUnderDaemon(first, first_score, retrain, second, processes_with_home(home))


@pytest.mark.slow
def test_attempt_1_fails_on_quality_not_on_a_blind_gate(retrain_under_daemon: RetrainUnderDaemon) -> None:
    score = retrain_under_daemon.first_score
    assert score["passed"] is False and score["attempt"] == 1
    assert score["status"] == "failed", score["status"]  # not a blind gate


@pytest.mark.slow
def test_the_daemon_launches_retrain_job_for_the_month_from_the_sensor(retrain_under_daemon: RetrainUnderDaemon) -> None:
    retrain, first = retrain_under_daemon.retrain, retrain_under_daemon.first
    assert retrain.job_name == "retrain_job"
    assert retrain.tags["dagster/partition"] == MONTH
    assert retrain.tags[PARENT_RUN_TAG] == first.run_id
    assert retrain.tags["dagster/run_key"] == f"{MONTH}:2:{first.run_id}"
    assert retrain.tags.get("dagster/sensor_name") == "retrain_on_fid_failure"


@pytest.mark.slow
def test_attempt_2_trains_half_as_many_steps_again_and_changes_nothing_else(
        retrain_under_daemon: RetrainUnderDaemon) -> None:
    used = retrain_under_daemon.first_score["config"]
    config = retrain_under_daemon.retrain.run_config["resources"]["gan_config"]["config"]
    assert config["steps"] == math.ceil(used["steps"] * 1.5)
    assert {k: v for k, v in config.items() if k != "steps"} == {k: v for k, v in used.items() if k != "steps"}


@pytest.mark.slow
def test_attempt_2_is_scored_once_with_that_config(retrain_under_daemon: RetrainUnderDaemon) -> None:
    used = retrain_under_daemon.first_score["config"]
    config = retrain_under_daemon.retrain.run_config["resources"]["gan_config"]["config"]
    second = retrain_under_daemon.second
    assert len(second) == 1
    metadata = second[0].asset_materialization.metadata
    assert metadata["attempt"].value == 2
    assert metadata["config"].value["steps"] == config["steps"]
    assert metadata["config_diff"].value == {"steps": [used["steps"], config["steps"]]}


@pytest.mark.slow
def test_stopping_the_daemon_leaves_no_process_of_its_home(retrain_under_daemon: RetrainUnderDaemon) -> None:
    assert retrain_under_daemon.processes_left == []
