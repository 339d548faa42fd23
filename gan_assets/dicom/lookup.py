"""Operators' tool: map pseudonymous file references (or image ids) back to landing-zone files.

    python -m gan_assets.dicom.lookup --location data/landing_zone f3a9... 71be...

Artifacts, metadata and logs name files only by ``file_ref`` (an HMAC of the path) and images
by ``id`` (an HMAC of the SOPInstanceUID). With the same ``GAN_ASSETS_PSEUDONYM_KEY`` this
tool recomputes the references of every file in the zone and prints the matching paths; it
runs locally, writes nothing, and its output stays with the operator.
An image id is matched by reading headers, so give ``--ids`` only when you need it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from gan_assets.dicom.landing_zone import LandingZone, SourceSpec
from gan_assets.dicom.pseudonym import file_ref, image_id, pseudonym_key
from gan_assets.storage import S3Settings

logger = logging.getLogger("gan_assets.dicom.lookup")


def find_files(zone: LandingZone, refs: Sequence[str], *, key: bytes, match_ids: bool = False) -> dict[str, list[str]]:
    """``{reference or id: [locations]}`` for every reference found in the zone."""
    wanted = {r.split("-f")[0] for r in refs}  # a multi-frame image id ends in -fNNNN
    found: dict[str, list[str]] = {}
    for entry in zone.list_files():
        ref = file_ref(entry.relative_path, key)
        if ref in wanted:
            found.setdefault(ref, []).append(zone.describe(entry))
        if match_ids:
            from pydicom import dcmread

            from gan_assets.dicom.preprocess import quiet_pydicom

            try:
                with quiet_pydicom(), zone.open_header(entry) as handle:
                    uid = str(dcmread(handle, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).get("SOPInstanceUID", ""))
            except Exception:  # not DICOM or unreadable: it has no image id
                continue
            if uid and image_id(uid, key) in wanted:
                found.setdefault(image_id(uid, key), []).append(zone.describe(entry))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m gan_assets.dicom.lookup", description=__doc__.splitlines()[0])
    parser.add_argument("refs", nargs="+", help="file_ref values (from dicom_manifest) or image ids (with --ids)")
    parser.add_argument("--location", default=os.environ.get("GAN_ASSETS_LANDING_ZONE", "data/landing_zone"),
                        help="landing zone folder or s3://bucket/prefix (default: $GAN_ASSETS_LANDING_ZONE)")
    parser.add_argument("--endpoint-url", default=None, help="S3 endpoint (MinIO, local server)")
    parser.add_argument("--ids", action="store_true", help="also match image ids (reads every header)")
    args = parser.parse_args(argv)
    zone = LandingZone(SourceSpec(args.location, S3Settings(endpoint_url=args.endpoint_url)))
    # The command line is this tool's boundary: it takes the deployment's key from its environment.
    found = find_files(zone, args.refs, key=pseudonym_key(os.environ.get("GAN_ASSETS_PSEUDONYM_KEY", "")),
                       match_ids=args.ids)
    for ref in args.refs:
        for location in found.get(ref.split("-f")[0], []):
            sys.stdout.write(f"{ref}\t{location}\n")
    missing = [r for r in args.refs if r.split("-f")[0] not in found]
    if missing:
        logger.error("not found in %s (other key or file moved?): %s", args.location, ", ".join(missing))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
