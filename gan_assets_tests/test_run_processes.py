"""A run started through the real instance and daemon leaves no process behind.

The ingest assets fan out over a process pool (a forkserver and its workers). A run worker
joins its live child processes before it exits, so a pool that outlived the step kept the run
worker (hundreds of MB), the forkserver and the pool workers alive after Dagster reported the
run finished. Here a real `dagster-daemon` dequeues an ingest run of the project's own code
location, the default launcher starts its run worker, and the test watches that worker's
process tree until the run ends, then requires every process of it to be gone within seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from gan_assets.demo.data import generate_landing_zone
from gan_assets.dicom.batch import DECODE_POOL_MIN_FILES
from gan_assets_tests.daemon_harness import (
    command_line,
    log_excerpt,
    parent_of,
    processes_with_home,
    stop_process_group,
    write_instance,
    write_workspace,
)

REPO = Path(__file__).resolve().parents[1]
MONTH = "2026-01-01"
RUN_DEADLINE_SECONDS = 180.0
GONE_WITHIN_SECONDS = 15.0
# Processes of the run: the run worker (spawned by the code server) and everything below it.
RUN_WORKER_MARKERS = ("multiprocessing.spawn", "execute_run")


def _run_tree(home: Path, run_workers: set[int]) -> set[int]:
    """The run worker(s) of this home and every live descendant of them."""
    live = processes_with_home(home)
    for pid in live:
        line = command_line(pid)
        if any(marker in line for marker in RUN_WORKER_MARKERS):
            run_workers.add(pid)
    tree = set(run_workers)
    grew = True
    while grew:
        grew = False
        for pid in live:
            if pid not in tree and parent_of(pid) in tree:
                tree.add(pid)
                grew = True
    return {pid for pid in tree if Path(f"/proc/{pid}").exists()}


@dataclass
class IngestRunUnderDaemon:
    """An ingest run launched with `dagster job launch`, dequeued by a running `dagster-daemon`, and
    the processes of the run watched until it ended, then until they were gone or time ran out."""
    log_excerpt: str
    run_id: str
    launch: subprocess.CompletedProcess
    run_status: Any
    materialized_by: list[str]
    run_workers: set[int]
    left: set[int]
    left_commands: list[str]
    forkservers_while_daemon_runs: list[int]
    left_after_daemon_stopped: list[int]


@pytest.fixture(scope="module")
def ingest_run(tmp_path_factory: pytest.TempPathFactory) -> IngestRunUnderDaemon:
    tmp_path = tmp_path_factory.mktemp("run_processes")
    home = write_instance(tmp_path / "dagster_home")
    workspace = write_workspace(tmp_path / "workspace.yaml", REPO)
    zone = tmp_path / "landing_zone"
    # Enough files that both the header scan and the decode use the process pool.
    generate_landing_zone(str(zone), seed=0, files_per_month=DECODE_POOL_MIN_FILES + 6, sizes=[64], workers=1)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "GAN_ASSETS_ENV": "local",
        "GAN_ASSETS_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "GAN_ASSETS_LANDING_ZONE": str(zone),
        "PYTHONUNBUFFERED": "1",
    }
    bin_dir = Path(sys.executable).parent
    log_path = tmp_path / "daemon.log"
    run_id = "5e1f0000-0000-4000-8000-000000000001"
    # Create the instance's databases once, before two processes race to migrate them.
    dg.DagsterInstance.from_config(str(home)).dispose()
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)], cwd=REPO,
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    run_status, materialized_by, left, forkservers = None, [], set(), []
    run_workers: set[int] = set()
    try:
        launch = subprocess.run(
            [str(bin_dir / "dagster"), "job", "launch", "-w", str(workspace), "-j", "gan_pipeline",
             "-o", "landing_zone_index,dicom_manifest,preprocessed_images", "--run-id", run_id,
             "--tags", f'{{"dagster/partition": "{MONTH}"}}'],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        if launch.returncode == 0:
            seen: set[int] = set()
            with dg.DagsterInstance.from_config(str(home)) as instance:
                started = time.monotonic()
                while True:
                    assert daemon.poll() is None, f"dagster-daemon exited early:\n{log_excerpt(log_path)}"
                    seen |= _run_tree(home, run_workers)
                    run = instance.get_run_by_id(run_id)
                    if run is not None and run.is_finished:
                        break
                    assert time.monotonic() - started < RUN_DEADLINE_SECONDS, f"run not finished:\n{log_excerpt(log_path)}"
                    time.sleep(0.2)
                run_status = run.status
                materialized_by = [r.run_id for r in instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey("preprocessed_images"), asset_partitions=[MONTH]),
                    limit=1).records]
            deadline = time.monotonic() + GONE_WITHIN_SECONDS
            while (left := _run_tree(home, run_workers) | {pid for pid in seen if Path(f"/proc/{pid}").exists()}) \
                    and time.monotonic() < deadline:
                time.sleep(0.5)
            forkservers = [pid for pid in processes_with_home(home) if "forkserver" in command_line(pid)]
        left_commands = [command_line(pid)[:120] for pid in sorted(left)]
    finally:
        stop_process_group(daemon, home)
    return IngestRunUnderDaemon(log_excerpt(log_path), run_id, launch, run_status, materialized_by, run_workers,
                                left, left_commands, forkservers, processes_with_home(home))


@pytest.mark.slow
def test_the_launched_ingest_run_succeeds(ingest_run: IngestRunUnderDaemon) -> None:
    assert ingest_run.launch.returncode == 0, ingest_run.launch.stderr[-3000:]
    assert ingest_run.run_status == dg.DagsterRunStatus.SUCCESS, ingest_run.log_excerpt
    assert ingest_run.materialized_by == [ingest_run.run_id]


@pytest.mark.slow
def test_the_watch_saw_the_run_worker(ingest_run: IngestRunUnderDaemon) -> None:
    # So it would see it stay.
    assert ingest_run.run_workers, f"never saw the run worker of {ingest_run.run_id}:\n{ingest_run.log_excerpt}"


@pytest.mark.slow
def test_no_process_of_the_run_outlives_it(ingest_run: IngestRunUnderDaemon) -> None:
    assert ingest_run.run_workers
    assert not ingest_run.left, (
        f"{len(ingest_run.left)} process(es) of run {ingest_run.run_id} still alive {GONE_WITHIN_SECONDS:.0f}s "
        "after it ended: " + "; ".join(ingest_run.left_commands))


@pytest.mark.slow
def test_no_forkserver_is_left_while_the_daemon_runs(ingest_run: IngestRunUnderDaemon) -> None:
    # The daemon and its code server stay, as they should; nothing else of this home runs a pool.
    assert ingest_run.run_workers
    assert ingest_run.forkservers_while_daemon_runs == []


@pytest.mark.slow
def test_stopping_the_daemon_leaves_no_process_of_its_home(ingest_run: IngestRunUnderDaemon) -> None:
    assert ingest_run.left_after_daemon_stopped == []
