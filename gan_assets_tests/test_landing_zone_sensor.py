"""landing_zone_sensor: a changed zone requests the index; a month whose files changed requests its run."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import dagster as dg
import pytest

from gan_assets.demo.phantom import SliceSpec, ct_dataset
from gan_assets.dicom.index import month_fingerprints
from gan_assets.jobs import gan_pipeline, index_job
from gan_assets.sensors import FINGERPRINT_TAG, TRIGGER_TAG, landing_zone_sensor
from gan_assets.storage import decode
from gan_assets_tests.factories import ingest_assets, ingest_resources

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _write(zone: Path, rel: str, day: dt.date, patient: int) -> None:
    ds = ct_dataset(SliceSpec(3, patient, day, patient, 32, False, False))
    path = zone / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    stamp = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.timezone.utc).timestamp()
    os.utime(path, (stamp, stamp))


def _tick(instance: dg.DagsterInstance, zone: Path, artifacts: Path, cursor: str | None) -> dg.SensorExecutionData:
    resources = ingest_resources(zone, artifacts)
    # The project's definitions (jobs, partitions) with this test's zone and storage.
    defs = dg.Definitions(assets=ingest_assets(), jobs=[gan_pipeline, index_job], sensors=[landing_zone_sensor],
                          resources=resources)
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources={
            "dicom_source": resources["dicom_source"], "artifact_store": resources["artifact_store"]}) as context:
        return landing_zone_sensor.evaluate_tick(context)


def _index(artifacts: Path) -> object:
    return decode("parquet", (artifacts / "landing_zone_index.parquet").read_bytes())


def test_new_files_request_the_index_then_their_month(tmp_path: Path) -> None:
    zone, artifacts = tmp_path / "zone", tmp_path / "artifacts"
    for i in range(6):
        _write(zone, f"feb/{i}.dcm", dt.date(2026, 2, 3 + i), i + 1)
        _write(zone, f"mar/{i}.dcm", dt.date(2026, 3, 3 + i), i + 11)
    with dg.instance_for_test() as instance:
        first = _tick(instance, zone, artifacts, None)
        assert not first.run_requests and "no landing_zone_index yet" in (first.skip_message or "")

        assert dg.materialize(ingest_assets(), partition_key="2026-02-01", instance=instance,
                              resources=ingest_resources(zone, artifacts)).success
        # The first look records the months as they are: no backfill of what is already there.
        look = _tick(instance, zone, artifacts, None)
        assert not look.run_requests and "first look" in (look.skip_message or "")
        assert json.loads(look.cursor) == month_fingerprints(_index(artifacts), {"2026-02", "2026-03"})
        quiet = _tick(instance, zone, artifacts, look.cursor)
        assert not quiet.run_requests and "matches the index" in (quiet.skip_message or "")

        # A late March file arrives: the index is requested first (its month is in its header).
        _write(zone, "late/mar_late.dcm", dt.date(2026, 3, 28), 30)
        changed = _tick(instance, zone, artifacts, quiet.cursor)
        assert [r.job_name for r in changed.run_requests] == ["index_landing_zone"]
        assert "1 new, 0 changed, 0 deleted" in changed.run_requests[0].tags["gan/reason"]
        again = _tick(instance, zone, artifacts, quiet.cursor)
        assert again.run_requests[0].run_key == changed.run_requests[0].run_key  # one index run per change

        assert dg.materialize(ingest_assets(), selection=["landing_zone_index"], instance=instance,
                              resources=ingest_resources(zone, artifacts)).success
        month = _tick(instance, zone, artifacts, quiet.cursor)
        fingerprint = month_fingerprints(_index(artifacts), {"2026-03"})["2026-03"]
        assert [(r.job_name, r.partition_key, r.run_key) for r in month.run_requests] == [
            ("gan_pipeline", "2026-03-01", f"2026-03-01:{fingerprint}")]
        request = month.run_requests[0]
        assert request.tags[TRIGGER_TAG] == "landing_zone" and request.tags[FINGERPRINT_TAG] == fingerprint
        # February did not change: no run for it; the next tick asks for nothing more.
        after = _tick(instance, zone, artifacts, month.cursor)
        assert not after.run_requests

        # A February file replaced and February ingested again before the tick: nothing to run.
        _write(zone, "feb/0.dcm", dt.date(2026, 2, 3), 41)
        assert dg.materialize(ingest_assets(), partition_key="2026-02-01", instance=instance,
                              resources=ingest_resources(zone, artifacts)).success
        done = _tick(instance, zone, artifacts, after.cursor)
        assert not done.run_requests and "already ingested with these files" in (done.skip_message or "")


def test_a_tampered_index_is_not_trusted(tmp_path: Path) -> None:
    """The sensor loads the index through the IO manager: bytes changed after it was written (here one
    flipped byte) are refused with the SHA-256 check, and the tick asks for a rebuild, requesting nothing."""
    zone, artifacts = tmp_path / "zone", tmp_path / "artifacts"
    for i in range(3):
        _write(zone, f"feb/{i}.dcm", dt.date(2026, 2, 3 + i), i + 1)
    with dg.instance_for_test() as instance:
        assert dg.materialize(ingest_assets(), partition_key="2026-02-01", instance=instance,
                              resources=ingest_resources(zone, artifacts)).success
        assert "first look" in (_tick(instance, zone, artifacts, None).skip_message or "")
        stored = artifacts / "landing_zone_index.parquet"
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0xFF
        stored.write_bytes(bytes(data))
        tick = _tick(instance, zone, artifacts, None)
        assert not tick.run_requests
        assert "cannot be read" in (tick.skip_message or "") and "landing_zone_index" in (tick.skip_message or "")
