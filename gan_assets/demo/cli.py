"""Command line for the demo: ``data`` writes the landing zone, ``run`` runs the graph for a month.

    python -m gan_assets.demo data [--out DIR | s3://bucket/prefix] [--seed 0] [--files-per-month N] [--if-missing]
    python -m gan_assets.demo run [--month 2026-03-01] [--no-retrain]

The default landing zone is ``$GAN_ASSETS_LANDING_ZONE`` or ``./data/landing_zone``, resolved by
the same function that gives the ``dicom_source`` resource its location, S3 endpoint and region.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gan_assets.dicom.landing_zone import SourceSpec

logger = logging.getLogger("gan_assets.demo")


def landing_zone_spec(location: str | None = None) -> SourceSpec:
    """Where the demo writes and the product reads: a folder or an s3:// prefix."""
    from gan_assets.resources import dicom_source_from_env

    return dicom_source_from_env(location).source_spec()


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    from gan_assets.demo.data import DEFAULT_FILES_PER_MONTH, DEFAULT_MONTHS

    data = sub.add_parser("data", help="write the synthetic DICOM landing zone (real files, a few bad ones)")
    data.add_argument("--out", default=None, help="landing zone: a folder or s3://bucket/prefix (default: "
                      "$GAN_ASSETS_LANDING_ZONE or ./data/landing_zone); S3 uses GAN_ASSETS_S3_ENDPOINT_URL and AWS_REGION")
    data.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    data.add_argument("--files-per-month", type=int, default=DEFAULT_FILES_PER_MONTH,
                      help=f"good CT slices per month (default {DEFAULT_FILES_PER_MONTH}); 5 bad files are added per month")
    data.add_argument("--months", default=",".join(DEFAULT_MONTHS),
                      help=f"comma-separated YYYY-MM months (default {','.join(DEFAULT_MONTHS)})")
    data.add_argument("--sizes", default="256,512", help="comma-separated matrix sizes; studies alternate (default 256,512)")
    data.add_argument("--workers", type=int, default=0, help="writer processes (0 = one per CPU)")
    data.add_argument("--if-missing", action="store_true",
                      help="do nothing when the folder already holds .dcm files")
    data.set_defaults(handler=_run_data)


def _run_data(args: argparse.Namespace) -> int:
    from gan_assets.demo.data import landing_zone_has_files, publish_landing_zone

    spec = landing_zone_spec(args.out)
    if args.if_missing and landing_zone_has_files(spec):
        logger.info("landing zone %s already holds DICOM files; leaving it as it is", spec.location)
        return 0
    months = [m.strip() for m in args.months.split(",") if m.strip()]
    summary = publish_landing_zone(spec, seed=args.seed, files_per_month=args.files_per_month, months=months,
                                   sizes=[int(s) for s in args.sizes.split(",") if s.strip()], workers=args.workers)
    logger.info("wrote %d files (%d good, %d bad) to %s", summary.total_files, summary.good_files,
                summary.bad_files, summary.out)
    return 0


DEMO_MONTH = "2026-03-01"
# Dagster's console logger prints every engine event at DEBUG; a newcomer wants the stages.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="make demo data if missing, then materialize the whole graph for one month")
    run.add_argument("--month", default=DEMO_MONTH, help=f"partition key YYYY-MM-01 (default {DEMO_MONTH})")
    run.add_argument("--no-retrain", action="store_true",
                     help="do not play the retrain sensor's part in-process when the FID check fails")
    run.set_defaults(handler=_run_pipeline)


def _run_pipeline(args: argparse.Namespace) -> int:
    """Ingest the training window, run gan_pipeline for the month, retrain as the sensor would."""
    import dagster as dg

    from gan_assets.demo.data import landing_zone_has_files, publish_landing_zone
    from gan_assets.partitions import TRAINING_WINDOW_MONTHS, monthly_partitions

    spec = landing_zone_spec()
    os.environ.setdefault("GAN_ASSETS_LANDING_ZONE", spec.location)
    os.environ.setdefault("GAN_ASSETS_ARTIFACTS_DIR", os.path.abspath("artifacts"))
    if not landing_zone_has_files(spec):
        logger.info("writing demo DICOM data to %s", spec.location)
        publish_landing_zone(spec, seed=0)

    from gan_assets.definitions import defs  # reads the env above

    keys = monthly_partitions.get_partition_keys()
    if args.month not in keys:
        raise SystemExit(f"--month {args.month} is not a partition; pick one of {keys[0]} .. {keys[-1]}")
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    pipeline = defs.resolve_job_def("gan_pipeline")
    index = keys.index(args.month)
    window = keys[max(0, index - TRAINING_WINDOW_MONTHS + 1):index]
    ingest = [dg.AssetKey("landing_zone_index"), dg.AssetKey("dicom_manifest"), dg.AssetKey("preprocessed_images")]
    for month in window:
        logger.info("== ingest %s (training window)", month)
        pipeline.execute_in_process(partition_key=month, instance=instance, asset_selection=ingest,
                                    run_config=QUIET_LOGS)

    logger.info("== gan_pipeline %s", args.month)
    result = pipeline.execute_in_process(
        partition_key=args.month, instance=instance, raise_on_error=False, run_config=QUIET_LOGS
    )
    if not args.no_retrain:
        result = _retrain_like_the_sensor(defs, instance, result)
    complete = _print_summary(defs, instance, args.month)
    # The demo succeeds only when every asset of the month is materialized.
    return 0 if result.success and complete else 1


def _retrain_like_the_sensor(defs, instance, result):  # noqa: ANN001, ANN202 - dagster objects
    """Without a daemon, tick ``retrain_on_fid_failure`` in-process and run what it requests."""
    import dagster as dg

    sensor = defs.resolve_sensor_def("retrain_on_fid_failure")
    cursor = None
    for _ in range(20):  # bounded: the sensor itself stops at max_attempts
        # A context with resources must be entered: that is what initialises them (an S3
        # artifact store opens its client there).
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
        ) as context:
            data = sensor.evaluate_tick(context)
        cursor = data.cursor
        requests = list(data.run_requests or [])
        if not requests:
            return result
        for request in requests:
            logger.info("== retrain %s attempt %s (as the sensor requests)", request.partition_key,
                        request.tags.get("gan/attempt"))
            job = defs.resolve_job_def(request.job_name or "retrain_job")
            result = job.execute_in_process(
                partition_key=request.partition_key, instance=instance,
                run_config={**dict(request.run_config or {}), **QUIET_LOGS},
                tags=request.tags, raise_on_error=False,
            )
    return result


def _print_summary(defs, instance, month: str) -> bool:  # noqa: ANN001 - dagster objects
    """Print what the month holds and where; True when every asset of the month is materialized."""
    import dagster as dg

    store = defs.resources["artifact_store"].object_store()
    lines = [f"\ngan-assets demo, month {month}"]
    complete = True
    latest: dict[str, Any] = {}
    graph = defs.resolve_asset_graph()
    # dicom_source is the landing zone itself: observed, never materialized.
    keys = [key for key in graph.toposorted_asset_keys if graph.get(key).is_materializable]
    width = max(len(key.to_user_string()) for key in keys)
    for key in keys:
        node = key.to_user_string()
        partitions = [month] if graph.get(key).is_partitioned else None  # the index covers every month
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=partitions), limit=1
        ).records
        stamp = "materialized" if records else "not materialized"
        complete = complete and bool(records)
        latest[node] = records[0].asset_materialization if records else None
        lines.append(f"  {node:<{width}} {stamp}")
    score_event = latest.get("fid_score")
    # A month out of attempts fails its fid_score step; its verdict is an observation.
    verdicts = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("fid_score"), asset_partitions=[month]), limit=1).records
    scores = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("fid_score"), asset_partitions=[month]), limit=1).records
    if verdicts and (not scores or verdicts[0].storage_id > scores[0].storage_id):
        score_event = verdicts[0].event_log_entry.asset_observation
    if score_event is not None:
        values = {name: value.value for name, value in score_event.metadata.items()}
        lines.append(f"fid_score: {values.get('status')}, FID {values.get('fid', float('nan')):.4f} vs threshold "
                     f"{values.get('threshold', float('nan')):.4f} ({values.get('gate_rule', '')}); "
                     f"gate discriminative: {values.get('discriminative')}")
    lines.append(f"artifacts under {store.root_uri}:")
    for key in store.list(""):
        if month in key or key.startswith("landing_zone_index."):
            lines.append(f"  {store.uri(key)}")
    if os.environ.get("DAGSTER_HOME"):
        lines.append(f"runs and events: DAGSTER_HOME={os.environ['DAGSTER_HOME']} (open them with `make dev`)")
    sys.stdout.write("\n".join(lines) + "\n")
    return complete


def _add_dev_parser(sub: argparse._SubParsersAction) -> None:
    dev = sub.add_parser("dev", help="make demo data if missing, then start `dagster dev` (what `make dev` calls)")
    dev.add_argument("--host", default="127.0.0.1", help="address the UI listens on (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=3000, help="port of the UI (default 3000)")
    dev.add_argument("--workspace", default="workspace.yaml", help="workspace file (default workspace.yaml)")
    dev.set_defaults(handler=_run_dev)


def _run_dev(args: argparse.Namespace) -> int:
    """Write the demo zone if it is empty, then become `dagster dev` with stoppable signals."""
    import signal

    from gan_assets.demo.data import landing_zone_has_files, publish_landing_zone

    spec = landing_zone_spec()
    if not landing_zone_has_files(spec):
        logger.info("writing demo DICOM data to %s", spec.location)
        publish_landing_zone(spec, seed=0)
    # A job started in the background by a shell (`make dev &`) inherits SIGINT ignored, and an
    # ignored signal stays ignored across exec; `dagster dev` maps SIGTERM onto SIGINT's handler,
    # so it would then ignore both and could only be killed. Default dispositions restore
    # Ctrl-C and `kill` (SIGTERM) as clean shutdowns of the webserver, daemon and code servers.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    os.execv(dagster, [dagster, "dev", "-h", args.host, "-p", str(args.port), "-w", args.workspace])
    return 1  # not reached: execv replaces this process


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan-assets-demo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_parser(sub)
    _add_run_parser(sub)
    _add_dev_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)

