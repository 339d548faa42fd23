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
def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    """The lead adds ``run`` here (generate data if missing, materialize one month)."""
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
