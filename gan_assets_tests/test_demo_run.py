"""`python -m gan_assets.demo run` (what `make demo` calls), end to end in a subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gan_assets.dicom.demo_data import generate_landing_zone

TINY = {"image_size": 32, "latent_dim": 16, "generator_width": 8, "discriminator_width": 8,
        "batch_size": 8, "steps": 4, "log_every": 2, "num_samples": 8, "fid_num_fake": 16}


def _run_demo(tmp_path: Path, overrides: dict) -> tuple[subprocess.CompletedProcess, Path]:
    zone = tmp_path / "landing_zone"
    if not zone.exists():
        generate_landing_zone(str(zone), seed=0, files_per_month=6, sizes=[256], workers=1)
    artifacts = tmp_path / "artifacts"
    env = {
        **os.environ,
        "GAN_ASSETS_LANDING_ZONE": str(zone),
        "GAN_ASSETS_ARTIFACTS_DIR": str(artifacts),
        "GAN_ASSETS_CONFIG_OVERRIDES": json.dumps({**TINY, **overrides}),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    (tmp_path / "home").mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "gan_assets.demo", "run"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    return proc, artifacts


@pytest.mark.slow
def test_demo_run_materializes_the_month_and_prints_where_artifacts_are(tmp_path: Path) -> None:
    proc, artifacts = _run_demo(tmp_path, {"fid_threshold": 1e9})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for node in ("dicom_manifest", "preprocessed_images", "trained_generator", "fid_score",
                 "generated_samples", "monthly_report"):
        assert f"{node:<20} materialized" in proc.stdout
    report = artifacts / "monthly_report" / "2026-03-01.html"
    assert report.is_file() and str(report) in proc.stdout
    # The training window was ingested too.
    assert (artifacts / "preprocessed_images" / "2026-01-01.npz").is_file()
    assert "DEBUG" not in proc.stderr  # the console logger runs at INFO for newcomers


@pytest.mark.slow
def test_demo_run_plays_the_retrain_sensor_until_the_month_is_rejected(tmp_path: Path) -> None:
    proc, artifacts = _run_demo(tmp_path, {"fid_threshold": 1e-9, "max_attempts": 2})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "retrain 2026-03-01 attempt 2" in proc.stderr
    assert "attempt 3" not in proc.stderr
    score = json.loads((artifacts / "fid_score" / "2026-03-01.json").read_text())
    assert (score["attempt"], score["status"]) == (2, "rejected")
    assert score["config"]["steps"] == math.ceil(TINY["steps"] * 1.5)  # the ladder's first rung
    assert "generated_samples    not materialized" in proc.stdout
    assert not (artifacts / "monthly_report" / "2026-03-01.json").exists()
