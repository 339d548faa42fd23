"""The production instance (deploy/dagster.yaml) against a real PostgreSQL server.

A module fixture runs Debian's PostgreSQL binaries (initdb + pg_ctl) in a temporary data
directory on 127.0.0.1; the instance is loaded from deploy/dagster.yaml itself with the
DAGSTER_PG_* variables pointing at it, an ECS endpoint and S3 served by moto on 127.0.0.1.
A month runs through the real ``gan_pipeline`` job; the rows it leaves are read back with
psycopg2, not only through Dagster's API.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gan_assets_tests.factories import MOTO_CREDENTIALS, free_port, gate_that_sees

REPO = Path(__file__).resolve().parents[1]
DEPLOY_YAML = REPO / "deploy" / "dagster.yaml"
PG_TIMEOUT_S = 60


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    db: str

    def env(self) -> dict[str, str]:
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db,
        }

    def connect(self) -> Any:
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            dbname=self.db, connect_timeout=10,
        )


def _as_server_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root (CI runs as root): drop to the `postgres` OS user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server on 127.0.0.1 with password auth and one database."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries absent (/usr/lib/postgresql/*/bin/initdb); "
                    "install Debian's `postgresql` package (.ci/run does)")
    import psycopg2

    root = Path(tempfile.mkdtemp(prefix="gan-pg-"))
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    sockets.mkdir()
    pwfile = root / "pw"
    user, password = "gan_dagster", "s3cret-for-test"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        for path in (sockets, pwfile):
            shutil.chown(path, "postgres")
    port = free_port()
    run = lambda cmd: subprocess.run(  # noqa: E731
        _as_server_user(cmd), check=True, capture_output=True, text=True, timeout=PG_TIMEOUT_S
    )
    started = False
    try:
        run([str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"])
        run([str(bindir / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w",
             "-t", str(PG_TIMEOUT_S),
             "-o", f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off -c full_page_writes=off"])
        started = True
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password,
                                dbname="postgres", connect_timeout=10)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE gan_dagster")
        conn.close()
        yield PostgresServer("127.0.0.1", port, user, password, "gan_dagster")
    except subprocess.CalledProcessError as err:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL failed: {err.cmd}\n{err.stderr}\n{tail}") from err
    finally:
        if started:
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "stop", "-D", str(data),
                                            "-m", "fast", "-w", "-t", str(PG_TIMEOUT_S)]),
                           capture_output=True, timeout=PG_TIMEOUT_S + 10)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _prod_instance(postgres_server: PostgresServer, moto_endpoint: str, s3_bucket: str, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """deploy/dagster.yaml, unedited, with its env vars pointing at the test servers."""
    import boto3
    import dagster as dg

    for name, value in postgres_server.env().items():
        monkeypatch.setenv(name, value)
    # boto3 sends every AWS client of this process (ECS launcher, S3 compute logs) to moto.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("GAN_ASSETS_S3_BUCKET", s3_bucket)
    ecs = boto3.client("ecs", endpoint_url=moto_endpoint, region_name="us-east-1")
    ecs.register_task_definition(
        family="gan-assets-run",
        containerDefinitions=[{"name": "run", "image": "gan-assets:test", "memory": 512}],
    )
    monkeypatch.setenv("DAGSTER_ECS_TASK_DEFINITION", "gan-assets-run")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()


@pytest.fixture
def prod_instance(
    postgres_server: PostgresServer, moto_endpoint: str, s3_bucket: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, aws_env: None,
) -> Iterator[Any]:
    with _prod_instance(postgres_server, moto_endpoint, s3_bucket, tmp_path, monkeypatch) as instance:
        yield instance


def test_deploy_yaml_builds_the_production_instance(prod_instance: Any, postgres_server: PostgresServer) -> None:
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_aws.ecs import EcsRunLauncher
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    from gan_assets.assets.common import TRAINING_TAG

    instance = prod_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert f":{postgres_server.port}/{postgres_server.db}" in instance.run_storage.postgres_url
    coordinator = instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    concurrency = instance.get_concurrency_config()
    limits = concurrency.run_queue_config.tag_concurrency_limits
    assert {"key": TRAINING_TAG, "value": "true", "limit": 1} in limits
    assert concurrency.pool_config.default_pool_limit == 1
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert not instance.run_retries_retry_on_asset_or_op_failure
    assert instance.run_monitoring_enabled
    assert not instance.telemetry_enabled
    assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
    # The launcher resolves its task definition on the ECS endpoint when it is built.
    launcher = instance.run_launcher
    assert isinstance(launcher, EcsRunLauncher)
    assert launcher.task_definition.endswith("task-definition/gan-assets-run:1")
    assert launcher.container_name == "run"


MONTH = "2026-02-01"
# The tiny config and an absolute threshold every model passes (the largest the bar allows),
# under a gate told that it sees (conftest.gate_that_sees), so every asset of the month materializes.
PASSING_BAR = {"threshold_rule": "absolute", "fid_threshold": 1e6}
ASSETS = ("landing_zone_index", "dicom_manifest", "preprocessed_images", "fid_feature_extractor", "trained_generator",
          "fid_score",
          "generated_samples", "monthly_report")


def _month_defs(landing_zone: Path) -> Any:
    """The project's graph and jobs with its S3 deployment's resources (S3 = moto via env)."""
    import dagster as dg

    from gan_assets import definitions
    from gan_assets.jobs import gan_pipeline
    from gan_assets.resources import DicomSource, FidExtractor
    from gan_assets_tests.factories import tiny_config_resources

    return dg.Definitions(
        assets=list(definitions.defs.assets or []),
        asset_checks=list(definitions.defs.asset_checks or []),
        jobs=[gan_pipeline],
        resources={
            **definitions.resources_for("s3"),
            "dicom_source": DicomSource(location=str(landing_zone)),
            **tiny_config_resources(evaluation=PASSING_BAR),
            # The default (domain) extractor, trained for a few steps only.
            "fid_extractor": FidExtractor(domain_steps=8),
        },
    )


def _load_code_location(instance: Any) -> Any:
    """A daemon-style workspace over the real code location (gan_assets.definitions), in-process."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="gan_assets.definitions", attribute="defs", working_directory=str(REPO))
    )
    return create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance)


@dataclass
class MonthThroughPostgres:
    """One month run through gan_pipeline on the production instance, then one daemon iteration."""
    instance: Any
    server: PostgresServer
    s3_client: Any
    bucket: str
    run_id: str
    artifact_keys: set[str]
    schedule: Any
    sensor: Any
    sensor_state: Any
    sensor_ticks: list[Any]


@pytest.fixture(scope="module")
def month_through_postgres(postgres_server: PostgresServer, moto_endpoint: str,
                           tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonthThroughPostgres]:
    import logging

    import boto3
    from dagster._core.test_utils import load_remote_repo
    from dagster._daemon.sensor import execute_sensor_iteration

    from gan_assets.demo.data import generate_landing_zone

    tmp_path = tmp_path_factory.mktemp("postgres_month")
    s3_client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS)
    s3_bucket = f"gan-test-{uuid.uuid4().hex[:12]}"  # as the s3_bucket fixture names one
    s3_client.create_bucket(Bucket=s3_bucket)
    landing = tmp_path / "landing_zone"
    generate_landing_zone(landing, seed=3, files_per_month=10, months=[MONTH[:7]], sizes=(64,), workers=1)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with _prod_instance(postgres_server, moto_endpoint, s3_bucket, tmp_path, monkeypatch) as instance:
            monkeypatch.setenv("GAN_ASSETS_S3_ENDPOINT_URL", moto_endpoint)
            monkeypatch.setenv("GAN_ASSETS_S3_PREFIX", "prod-test")
            with gate_that_sees():
                result = _month_defs(landing).resolve_job_def("gan_pipeline").execute_in_process(
                    partition_key=MONTH, instance=instance, raise_on_error=True,
                )
            assert result.success
            keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="prod-test/")["Contents"]}

            # The daemon's side, against the same database: start the schedule, tick the sensors once.
            with _load_code_location(instance) as workspace:
                repo = load_remote_repo(workspace, "__repository__")
                schedule = repo.get_schedule("monthly_pipeline_schedule")
                instance.start_schedule(schedule)
                list(execute_sensor_iteration(workspace, logging.getLogger("test.sensor"), None, None))
                sensor = repo.get_sensor("retrain_on_fid_failure")
                state = instance.get_instigator_state(sensor.get_remote_origin_id(), sensor.selector_id)
                ticks = instance.get_ticks(sensor.get_remote_origin_id(), sensor.selector_id)
            yield MonthThroughPostgres(instance, postgres_server, s3_client, s3_bucket, result.run_id, keys,
                                       schedule, sensor, state, ticks)


@pytest.mark.slow
def test_the_month_run_succeeds_as_a_training_run_of_its_partition(month_through_postgres: MonthThroughPostgres) -> None:
    import dagster as dg

    from gan_assets.assets.common import TRAINING_TAG

    run = month_through_postgres.instance.get_run_by_id(month_through_postgres.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags.get(TRAINING_TAG) == "true" and run.tags.get("dagster/partition") == MONTH


@pytest.mark.slow
def test_each_asset_of_the_month_is_materialized_by_the_run(month_through_postgres: MonthThroughPostgres) -> None:
    import dagster as dg

    for name in ASSETS:
        event = month_through_postgres.instance.get_latest_materialization_event(dg.AssetKey(name))
        assert event is not None and event.run_id == month_through_postgres.run_id, name
        assert event.dagster_event.partition == (None if name == "landing_zone_index" else MONTH), name


@pytest.mark.slow
def test_the_artifacts_go_to_s3_under_the_configured_prefix(month_through_postgres: MonthThroughPostgres) -> None:
    keys = month_through_postgres.artifact_keys
    assert f"prod-test/trained_generator/{MONTH}.safetensors" in keys and f"prod-test/fid_score/{MONTH}.json" in keys


@pytest.mark.slow
def test_the_daemon_records_the_retrain_sensor_and_its_tick(month_through_postgres: MonthThroughPostgres) -> None:
    from dagster._core.scheduler.instigation import InstigatorStatus

    state = month_through_postgres.sensor_state
    assert state is not None and state.status == InstigatorStatus.DECLARED_IN_CODE
    assert month_through_postgres.sensor_ticks, "the sensor tick was not recorded"


@pytest.mark.slow
def test_the_run_and_its_events_are_rows_in_postgres(month_through_postgres: MonthThroughPostgres) -> None:
    import dagster as dg

    run_id = month_through_postgres.run_id
    # Straight from the tables, with psycopg2: what the instance wrote is in this database.
    conn = month_through_postgres.server.connect()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchone() == ("SUCCESS",)
        cur.execute(
            "SELECT DISTINCT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (run_id,),
        )
        stored = {row[0] for row in cur.fetchall()}
        assert stored == {dg.AssetKey(name).to_string() for name in ASSETS}
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (run_id,))
        assert cur.fetchone()[0] > 20  # step starts, outputs, logs, checks...
    conn.close()


@pytest.mark.slow
def test_the_schedule_and_sensor_states_are_rows_in_postgres(month_through_postgres: MonthThroughPostgres) -> None:
    schedule, sensor = month_through_postgres.schedule, month_through_postgres.sensor
    conn = month_through_postgres.server.connect()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT selector_id, instigator_type, status FROM instigators")
        instigators = {selector: (kind, status) for selector, kind, status in cur.fetchall()}
        assert instigators[schedule.selector_id] == ("SCHEDULE", "RUNNING")
        assert instigators[sensor.selector_id] == ("SENSOR", "DECLARED_IN_CODE")
        cur.execute("SELECT count(*) FROM job_ticks WHERE selector_id = %s AND type = 'SENSOR'", (sensor.selector_id,))
        assert cur.fetchone()[0] >= 1
    conn.close()


@pytest.mark.slow
def test_step_logs_go_to_s3_through_the_compute_log_manager(month_through_postgres: MonthThroughPostgres) -> None:
    # The run task is ephemeral: its step logs must outlive it.
    logs = month_through_postgres.s3_client.list_objects_v2(
        Bucket=month_through_postgres.bucket, Prefix=f"dagster-compute-logs/storage/{month_through_postgres.run_id}/")
    assert logs.get("KeyCount", 0) >= 2
