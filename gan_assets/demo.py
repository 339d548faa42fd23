"""Command line for the demo: ``python -m gan_assets.demo data`` writes the landing zone.

    python -m gan_assets.demo data --out data/landing_zone [--seed 0] [--files-per-month N] [--if-missing]

The default landing zone is ``$GAN_ASSETS_LANDING_ZONE`` or ``./data/landing_zone`` (the same
default ``definitions.py`` gives the ``dicom_source`` resource).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

logger = logging.getLogger("gan_assets.demo")


def default_landing_zone() -> str:
    return os.environ.get("GAN_ASSETS_LANDING_ZONE", os.path.abspath("data/landing_zone"))


# ---- data subcommand (issue: DICOM ingest / demo data) ------------------------------------
def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    from gan_assets.dicom.demo_data import DEFAULT_FILES_PER_MONTH, DEFAULT_MONTHS

    data = sub.add_parser("data", help="write the synthetic DICOM landing zone (real files, a few bad ones)")
    data.add_argument("--out", default=None, help="landing zone folder (default: $GAN_ASSETS_LANDING_ZONE or ./data/landing_zone)")
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
    from gan_assets.dicom.demo_data import generate_landing_zone, landing_zone_has_files

    out = args.out or default_landing_zone()
    if args.if_missing and landing_zone_has_files(out):
        logger.info("landing zone %s already holds DICOM files; leaving it as it is", out)
        return 0
    months = [m.strip() for m in args.months.split(",") if m.strip()]
    summary = generate_landing_zone(out, seed=args.seed, files_per_month=args.files_per_month,
                                    months=months, sizes=[int(s) for s in args.sizes.split(",") if s.strip()],
                                    workers=args.workers)
    logger.info("wrote %d files (%d good, %d bad) to %s", summary.total_files, summary.good_files,
                summary.bad_files, summary.out)
    return 0
# ---- end data subcommand ------------------------------------------------------------------


# ---- run subcommand (lead: materialize the graph for one month) ---------------------------
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

    from gan_assets.dicom.demo_data import generate_landing_zone, landing_zone_has_files
    from gan_assets.partitions import TRAINING_WINDOW_MONTHS, monthly_partitions

    landing_zone = default_landing_zone()
    os.environ.setdefault("GAN_ASSETS_LANDING_ZONE", landing_zone)
    os.environ.setdefault("GAN_ASSETS_ARTIFACTS_DIR", os.path.abspath("artifacts"))
    if not landing_zone_has_files(landing_zone):
        logger.info("writing demo DICOM data to %s", landing_zone)
        generate_landing_zone(landing_zone, seed=0)

    from gan_assets.definitions import defs  # reads the env above

    keys = monthly_partitions.get_partition_keys()
    if args.month not in keys:
        raise SystemExit(f"--month {args.month} is not a partition; pick one of {keys[0]} .. {keys[-1]}")
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    pipeline = defs.resolve_job_def("gan_pipeline")
    index = keys.index(args.month)
    window = keys[max(0, index - TRAINING_WINDOW_MONTHS + 1):index]
    ingest = [dg.AssetKey("dicom_manifest"), dg.AssetKey("preprocessed_images")]
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
    _print_summary(defs, instance, args.month)
    return 0 if result.success else 1


def _retrain_like_the_sensor(defs, instance, result):  # noqa: ANN001, ANN202 - dagster objects
    """Without a daemon, tick ``retrain_on_fid_failure`` in-process and run what it requests."""
    import dagster as dg

    sensor = defs.resolve_sensor_def("retrain_on_fid_failure")
    cursor = None
    for _ in range(20):  # bounded: the sensor itself stops at max_attempts
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
        )
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


def _print_summary(defs, instance, month: str) -> None:  # noqa: ANN001 - dagster objects
    import dagster as dg

    store = defs.resources["artifact_store"].object_store()
    lines = [f"\ngan-assets demo, month {month}"]
    for node in ("dicom_manifest", "preprocessed_images", "trained_generator", "fid_score",
                 "generated_samples", "monthly_report"):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(node), asset_partitions=[month]), limit=1
        ).records
        stamp = "materialized" if records else "not materialized"
        lines.append(f"  {node:<20} {stamp}")
    scored = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("fid_score"), asset_partitions=[month]), limit=1
    ).records
    score_event = scored[0].asset_materialization if scored else None
    if score_event is not None:
        values = {name: value.value for name, value in score_event.metadata.items()}
        lines.append(f"fid_score: {values.get('status')}, FID {values.get('fid', float('nan')):.4f} vs threshold "
                     f"{values.get('threshold', float('nan')):.4f} ({values.get('gate_rule', '')}); "
                     f"gate discriminative: {values.get('discriminative')}")
    lines.append(f"artifacts under {store.root_uri}:")
    for key in store.list(""):
        if month in key:
            lines.append(f"  {store.uri(key)}")
    if os.environ.get("DAGSTER_HOME"):
        lines.append(f"runs and events: DAGSTER_HOME={os.environ['DAGSTER_HOME']} (open them with `make dev`)")
    sys.stdout.write("\n".join(lines) + "\n")
# ---- end run subcommand -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan-assets-demo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_parser(sub)
    _add_run_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
