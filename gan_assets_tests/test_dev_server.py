"""`make dev` (``python -m gan_assets.demo dev``) stops on SIGTERM even when started in the background.

A shell starts a background job with SIGINT ignored; an ignored signal stays ignored across
exec, and `dagster dev` maps SIGTERM onto SIGINT's handler, so it used to ignore both. Here the
command starts exactly so (SIGINT and SIGQUIT ignored, its own session), serves the UI, and one
SIGTERM must end it with its webserver, daemon and code server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gan_assets.demo.data import generate_landing_zone
from gan_assets_tests.ui_harness import REPO_ROOT, free_port, prepare_dagster_home, session_pids, wait_for

STOP_WITHIN_SECONDS = 45.0


def _like_a_background_job() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def _server_info(port: int) -> dict | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_dev_started_in_the_background_stops_on_sigterm(tmp_path: Path) -> None:
    zone = tmp_path / "landing_zone"
    generate_landing_zone(zone, seed=0, files_per_month=4, months=["2026-01"], sizes=(64,), workers=1)
    home = prepare_dagster_home(tmp_path / "home")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "GAN_ASSETS_ENV": "local",
           "GAN_ASSETS_LANDING_ZONE": str(zone), "GAN_ASSETS_ARTIFACTS_DIR": str(tmp_path / "artifacts")}
    log_path = tmp_path / "dev.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gan_assets.demo", "dev", "--port", str(port)],
                                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_like_a_background_job)
    try:
        wait_for("the dagster dev webserver", lambda: proc.poll() is None and _server_info(port), timeout_s=180)
        assert len(session_pids(proc.pid)) >= 3  # dagster dev, its webserver, daemon and code server
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WITHIN_SECONDS
        while (proc.poll() is None or session_pids(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert proc.poll() is not None, f"dagster dev ignored SIGTERM:\n{log_path.read_text()[-2000:]}"
        assert session_pids(proc.pid) == [], "processes of dagster dev outlived it"
    finally:
        if proc.poll() is None or session_pids(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
