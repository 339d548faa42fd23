"""`python -m gan_assets.demo run` (what `make demo` calls), end to end in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gan_assets.demo.data import generate_landing_zone
from gan_assets_tests.factories import tiny_config_overrides


# The domain encoder at a test's budget: a few steps on the demo's 32 px images.
FAST_DOMAIN = {"domain_steps": 8}


def _run_demo(tmp_path: Path, overrides: dict, extractor: dict) -> tuple[subprocess.CompletedProcess, Path]:
    zone = tmp_path / "landing_zone"
    if not zone.exists():
        generate_landing_zone(str(zone), seed=0, files_per_month=6, sizes=[256], workers=1)
    artifacts = tmp_path / "artifacts"
    env = {
        **os.environ,
        "GAN_ASSETS_LANDING_ZONE": str(zone),
        "GAN_ASSETS_ARTIFACTS_DIR": str(artifacts),
        "GAN_ASSETS_CONFIG_OVERRIDES": json.dumps(tiny_config_overrides(**overrides)),
        "GAN_ASSETS_FID_EXTRACTOR_OVERRIDES": json.dumps(extractor),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    (tmp_path / "home").mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "gan_assets.demo", "run"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    return proc, artifacts


def _summary_status(stdout: str) -> dict[str, str]:
    """{asset: "materialized" | "not materialized"} from the demo's summary lines."""
    found = re.findall(r"^  (\w+) +(materialized|not materialized)$", stdout, flags=re.MULTILINE)
    return dict(found)


@pytest.mark.slow
def test_demo_run_materializes_the_month_and_stops_at_a_blind_gate(tmp_path: Path) -> None:
    # Six tiny files a month and a 4-step model: the controls show the default extractor cannot
    # tell these few 32 px images from garbage, so the honest gate is blind (the largest absolute
    # threshold changes nothing: it is ignored by the default rule). The month stops at fid_score, is not
    # retrained, and the summary says why. Delivery under a gate that sees is tested in-process
    # (test_evaluation_asset.py, test_retrain_loop.py).
    # The random conv net is blind on these (it cannot see orientation): a blind gate, for sure.
    proc, artifacts = _run_demo(tmp_path, {"fid_threshold": 1e6}, {"kind": "random_conv"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    status = _summary_status(proc.stdout)
    for node in ("landing_zone_index", "dicom_manifest", "preprocessed_images", "fid_feature_extractor",
                 "trained_generator", "fid_score"):
        assert status[node] == "materialized", proc.stdout
    for node in ("generated_samples", "monthly_report"):
        assert status[node] == "not materialized", proc.stdout
    assert "fid_score: not_discriminative" in proc.stdout and "gate discriminative: False" in proc.stdout
    assert "retrain 2026-03-01" not in proc.stderr  # a blind metric is never retrained
    score = json.loads((artifacts / "fid_score" / "2026-03-01.json").read_text())
    assert score["status"] == "not_discriminative" and score["gate"]["reasons"]
    assert {c["name"] for c in score["controls"]} >= {"uniform_noise", "inverted", "held_out_real"}
    # The training window was ingested too.
    assert (artifacts / "preprocessed_images" / "2026-01-01.npz").is_file()
    assert "DEBUG" not in proc.stderr  # the console logger runs at INFO for newcomers


@pytest.mark.slow
def test_the_whole_demo_runs_on_s3(tmp_path: Path, moto_endpoint: str, s3_bucket: str, s3_client) -> None:  # noqa: ANN001
    """`demo data` and `demo run` with an s3:// landing zone and GAN_ASSETS_ENV=s3, on moto's server."""
    env = {
        **os.environ,
        "GAN_ASSETS_ENV": "s3",
        "GAN_ASSETS_S3_BUCKET": s3_bucket,
        "GAN_ASSETS_S3_PREFIX": "artifacts",
        "GAN_ASSETS_S3_ENDPOINT_URL": moto_endpoint,
        "GAN_ASSETS_LANDING_ZONE": f"s3://{s3_bucket}/landing",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "GAN_ASSETS_CONFIG_OVERRIDES": json.dumps(tiny_config_overrides()),
        "GAN_ASSETS_FID_EXTRACTOR_OVERRIDES": json.dumps(FAST_DOMAIN),  # the default kind, quickly
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    (tmp_path / "home").mkdir()
    data = subprocess.run([sys.executable, "-m", "gan_assets.demo", "data", "--files-per-month", "6",
                           "--sizes", "64", "--workers", "1"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert data.returncode == 0, data.stderr[-3000:]
    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="landing/")["Contents"]
    assert len(listed) == 3 * (6 + 5)  # three months of good files plus the five bad kinds each
    assert all(obj["Key"].endswith(".dcm") for obj in listed)
    assert list(tmp_path.iterdir()) == [tmp_path / "home"]  # nothing written locally (no ./s3:/...)

    run = subprocess.run([sys.executable, "-m", "gan_assets.demo", "run"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    # A tiny model on six files a month cannot pass an honest gate: the month ends at fid_score
    # with its verdict (the retrain sensor's tick ran in-process, under S3), and the exit code
    # says the month was not delivered.
    status = _summary_status(run.stdout)
    for node in ("landing_zone_index", "dicom_manifest", "preprocessed_images", "fid_feature_extractor",
                 "trained_generator", "fid_score"):
        assert status[node] == "materialized", run.stdout
    score_key = "artifacts/fid_score/2026-03-01.json"
    score = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=score_key)["Body"].read())
    delivered = score["status"] == "passed"
    assert run.returncode == (0 if delivered else 1), run.stderr[-3000:]
    keys = {obj["Key"] for obj in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="artifacts/")["Contents"]}
    assert {score_key, "artifacts/preprocessed_images/2026-01-01.npz", "artifacts/dicom_manifest/2026-03-01.parquet",
            "artifacts/landing_zone_index.parquet",
            "artifacts/fid_feature_extractor/2026-03-01.safetensors"} <= keys
    assert f"s3://{s3_bucket}/artifacts/fid_score/2026-03-01.json" in run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # artifacts went to S3 only
