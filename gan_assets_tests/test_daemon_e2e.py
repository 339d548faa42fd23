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
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from gan_assets.assets.common import ATTEMPT_TAG, PARENT_RUN_TAG
from gan_assets_tests.test_retrain_loop import MONTH, TINY_LOOP, loop_defs, seed_preprocessed_images

REPO = Path(__file__).resolve().parents[1]
DEADLINE_SECONDS = 150.0
DAGSTER_YAML = """\
telemetry:
  enabled: false
storage:
  sqlite:
    base_dir: {home}
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
run_launcher:
  module: dagster._core.launcher
  class: DefaultRunLauncher
"""


def _processes_with_home(home: Path) -> list[int]:
    """PIDs of processes whose environment names this test's DAGSTER_HOME (all were started here)."""
    pids = []
    marker = f"DAGSTER_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _stop(process: subprocess.Popen[bytes], home: Path) -> None:
    """SIGTERM the daemon's process group, then SIGKILL it and any straggler started with this home."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Code servers and run workers are in the same group; this catches any that were not, and
    # waits until the killed ones are gone.
    deadline = time.monotonic() + 15.0
    while (stragglers := _processes_with_home(home)) and time.monotonic() < deadline:
        for pid in stragglers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def _fid_events(instance: dg.DagsterInstance, run_id: str) -> list[dg.EventLogRecord]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("fid_score"), asset_partitions=[MONTH]), limit=20).records
    return [r for r in records if r.run_id == run_id]


def _log_excerpt(path: Path) -> str:
    """The daemon's own lines (ticks, launches, errors) and the log's tail, for a failure message."""
    lines = path.read_text(errors="replace").splitlines()
    daemon_lines = [line for line in lines if "dagster.daemon" in line or "Error" in line]
    return "\n".join(daemon_lines[-40:]) + "\n...\n" + "\n".join(lines[-30:])


@pytest.fixture
def daemon_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML.format(home=home))
    artifacts = tmp_path / "artifacts"
    landing = tmp_path / "landing_zone"
    landing.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "GAN_ASSETS_ENV": "local",
        "GAN_ASSETS_ARTIFACTS_DIR": str(artifacts),
        "GAN_ASSETS_LANDING_ZONE": str(landing),
        # Impossible threshold: attempt 2 must follow attempt 1.
        "GAN_ASSETS_CONFIG_OVERRIDES": json.dumps({**TINY_LOOP, "fid_threshold": 1e-9}),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("GAN_ASSETS_MUTATION_POLICY", None)
    env.pop("GAN_ASSETS_WEBHOOK_URL", None)
    yield env


@pytest.mark.slow
def test_running_daemon_retrains_a_failing_month_with_the_mutated_config(
        daemon_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path(daemon_env["DAGSTER_HOME"])
    artifacts = Path(daemon_env["GAN_ASSETS_ARTIFACTS_DIR"])
    seed_preprocessed_images(artifacts, [MONTH])
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: gan_assets.definitions\n"
        f"      working_directory: {REPO}\n"
    )
    for name in ("GAN_ASSETS_ENV", "GAN_ASSETS_ARTIFACTS_DIR", "GAN_ASSETS_LANDING_ZONE",
                 "GAN_ASSETS_CONFIG_OVERRIDES", "DAGSTER_HOME"):
        monkeypatch.setenv(name, daemon_env[name])
    monkeypatch.delenv("GAN_ASSETS_MUTATION_POLICY", raising=False)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Attempt 1, in this process, into the daemon's instance: it fails the threshold.
        defs = loop_defs(artifacts)
        first = defs.resolve_job_def("retrain_job").execute_in_process(
            instance=instance, partition_key=MONTH, raise_on_error=False)
        (event,) = first.asset_materializations_for_node("fid_score")
        assert event.metadata["passed"].value is False and event.metadata["attempt"].value == 1
        used = event.metadata["config"].value

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
                assert daemon.poll() is None, f"dagster-daemon exited early:\n{_log_excerpt(log_path)}"
                runs = instance.get_runs(filters=dg.RunsFilter(tags={ATTEMPT_TAG: "2"}))
                if runs:
                    retrain = runs[0]
                    # Done once the retrain has scored its model (its check step may still run).
                    second = _fid_events(instance, retrain.run_id)
                    if second:
                        break
                    assert not retrain.is_finished, (
                        f"attempt-2 run {retrain.run_id} ended {retrain.status} without scoring:\n{_log_excerpt(log_path)}")
                time.sleep(2)
            elapsed = time.monotonic() - started
            assert second, (f"no attempt-2 fid_score within {DEADLINE_SECONDS}s (run: {retrain and retrain.run_id}); "
                            f"daemon log:\n{_log_excerpt(log_path)}")
        finally:
            _stop(daemon, home)
        assert _processes_with_home(home) == []

        assert retrain.job_name == "retrain_job"
        assert retrain.tags["dagster/partition"] == MONTH
        assert retrain.tags[PARENT_RUN_TAG] == first.run_id
        assert retrain.tags["dagster/run_key"] == f"{MONTH}:2:{first.run_id}"
        assert retrain.tags.get("dagster/sensor_name") == "retrain_on_fid_failure"
        config = retrain.run_config["resources"]["gan_config"]["config"]
        assert config["steps"] == math.ceil(used["steps"] * 1.5)
        assert {k: v for k, v in config.items() if k != "steps"} == {k: v for k, v in used.items() if k != "steps"}
        # The retrain actually trained and scored as attempt 2 with that config.
        assert len(second) == 1
        print(f"daemon retrained {MONTH} as attempt 2 {elapsed:.0f}s after dagster-daemon started")
        metadata = second[0].asset_materialization.metadata
        assert metadata["attempt"].value == 2
        assert metadata["config"].value["steps"] == config["steps"]
        assert metadata["config_diff"].value == {"steps": [used["steps"], config["steps"]]}
