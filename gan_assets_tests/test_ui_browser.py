"""The Dagster UI as a user drives it, in a real browser (Debian's chromium via Playwright).

`dagster dev` runs the repo's workspace.yaml against a temporary DAGSTER_HOME that holds the
repo's dagster.yaml, a small landing zone and a tiny gan_config. The browser checks the asset
graph (every asset, the lineage edges, the groups), the sensor and schedule pages, then
materializes one month from the graph's launch dialog, waits for the run to end at the honest
FID gate (a tiny model cannot pass it) and checks the stored artifacts and the failed check in
the UI. Screenshots go to
``$GAN_ASSETS_TEST_ARTIFACTS/ui`` (else the test's tmp dir); every process started here is
ended by session, and the test fails if one survives.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gan_assets_tests.factories import tiny_config_overrides
from gan_assets_tests.ui_harness import (
    CHROMIUM_ARGS,
    CHROMIUM_PATH,
    REPO_ROOT,
    DagsterDev,
    UITimeout,
    chromium_available,
    dagster_dev,
    launch_partition_from_graph,
    open_expanded_asset_graph,
    page_excerpt,
    prepare_dagster_home,
    read_asset_graph,
    run_failure_summary,
    runs_for_partition,
    wait_for,
)

pytestmark = pytest.mark.slow

CODE_LOCATION = "gan_assets.definitions"  # workspace.yaml's python_module
MONTH = "2026-03"
PARTITION = f"{MONTH}-01"
CHAIN = ["dicom_source", "landing_zone_index", "dicom_manifest", "preprocessed_images", "trained_generator",
         "fid_score", "generated_samples", "monthly_report"]
ASSETS = [*CHAIN, "fid_feature_extractor"]
EDGES = [*zip(CHAIN, CHAIN[1:]), ("preprocessed_images", "fid_feature_extractor"),
         ("fid_feature_extractor", "fid_score")]
GROUPS = {"ingest": ["dicom_manifest", "dicom_source", "landing_zone_index", "preprocessed_images"],
          "model": ["fid_feature_extractor", "fid_score", "trained_generator"],
          "delivery": ["generated_samples", "monthly_report"]}
# The brief's tiny config under the honest default gate (40 images: enough for the default domain
# encoder to make the gate discriminative): a 4-step model cannot pass it, so the run ends at the
# blocking check, the daemon's retrain sensor retrains it once, and with two attempts the month
# ends rejected; the UI must show each step (delivery is test_report's job).
FILES_PER_MONTH = 40
SERVER_START_S = 240.0
RUN_S = 300.0


def _artifacts_root(tmp_path: Path) -> Path:
    base = os.environ.get("GAN_ASSETS_TEST_ARTIFACTS")
    root = Path(base) / "ui" if base else tmp_path / "screenshots"
    root.mkdir(parents=True, exist_ok=True)
    return root


class Browser:
    """One headless chromium page plus the bookkeeping that turns a failure into a readable report."""

    def __init__(self, page: Any, shots: Path, server: DagsterDev) -> None:
        self.page = page
        self.shots = shots
        self.server = server

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Run one user step; on failure add the page's text, a screenshot and the server log."""
        try:
            yield
        except Exception as err:
            try:
                where = self.shot(f"FAILED-{what.replace(' ', '_')[:40]}")
            except Exception as shot_err:
                where = Path(f"<no screenshot: {shot_err!r}>")
            raise AssertionError(
                f"UI step failed: {what}: {err}\n--- page showed ---\n{page_excerpt(self.page)}\n"
                f"--- screenshot: {where}\n--- dagster dev log tail ---\n{self.server.log_tail(3000)}"
            ) from err


def _ui_env(tmp_path: Path) -> dict[str, str]:
    """Landing zone with one small month, artifacts folder, tiny gan_config: the code location's env."""
    from gan_assets.demo.data import generate_landing_zone

    landing = tmp_path / "landing_zone"
    generate_landing_zone(landing, seed=0, files_per_month=FILES_PER_MONTH, months=[MONTH], workers=1)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    return {
        "GAN_ASSETS_ENV": "local",
        "GAN_ASSETS_LANDING_ZONE": str(landing),
        "GAN_ASSETS_ARTIFACTS_DIR": str(artifacts),
        "GAN_ASSETS_CONFIG_OVERRIDES": json.dumps(tiny_config_overrides(max_attempts=2)),
        # no webhook, no CloudWatch: nothing leaves the machine
        "GAN_ASSETS_WEBHOOK_URL": "",
    }


def asset_descriptions(server: DagsterDev) -> dict[str, str]:
    """Asset name -> description (the asset's docstring), as the UI's GraphQL API serves them."""
    nodes = server.graphql("{ assetNodes { assetKey { path } description } }")["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): (n["description"] or "").strip() for n in nodes}


def show_markdown_image(page: Any, url: str, label: str) -> None:
    """Open the markdown metadata entry ``label`` of the latest event; assert its image is drawn."""
    page.goto(url)
    row = page.locator(f"xpath=//tr[td[1][normalize-space()='{label}']]")
    row.first.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()

    def drawn() -> bool:
        return bool(dialog.evaluate(
            "d => Array.from(d.querySelectorAll('img')).some(i => i.complete && i.naturalWidth >= 32"
            " && i.naturalHeight >= 32 && i.src.startsWith('data:image/png'))"))

    wait_for(f"the {label} PNG to be drawn in its dialog", drawn, 30)


def _add_late_file(zone: Path) -> None:
    """One more CT slice of MONTH, arriving after the month was ingested."""
    from gan_assets.demo.phantom import SliceSpec, ct_dataset

    ds = ct_dataset(SliceSpec(7, 77, dt.date(int(MONTH[:4]), int(MONTH[5:]), 27), 1, 64, False, False))
    (zone / "late").mkdir(exist_ok=True)
    ds.save_as(zone / "late" / "late_arrival.dcm", enforce_file_format=True)


def _launch_job(server: DagsterDev, job: str) -> str:
    """Launch an unpartitioned job of the code location through the UI's GraphQL API; its run id."""
    mutation = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
      ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
    params = {"selector": {"repositoryLocationName": CODE_LOCATION, "repositoryName": "__repository__",
                           "jobName": job}, "runConfigData": {}}
    result = server.graphql(mutation, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def _run_status(server: DagsterDev, run_id: str) -> str:
    data = server.graphql("query R($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id})
    return data["runOrError"].get("status", "")


def _stale(server: DagsterDev, asset: str) -> tuple[str, list[str]]:
    """(staleStatus, stale cause reasons) of PARTITION of ``asset``, as the UI reads them."""
    query = """query S($key: AssetKeyInput!, $p: String) { assetNodeOrError(assetKey: $key) {
      ... on AssetNode { staleStatus(partition: $p) staleCauses(partition: $p) { reason } } } }"""
    node = server.graphql(query, {"key": {"path": [asset]}, "p": PARTITION})["assetNodeOrError"]
    return node.get("staleStatus", ""), [c["reason"] for c in node.get("staleCauses") or []]


def _wait_for_run(server: DagsterDev, timeout_s: float, job: str | None = None) -> dict[str, Any]:
    """The run of PARTITION launched from the UI (or the first of ``job``), once it is finished."""

    def mine(run: dict[str, Any]) -> bool:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        return run["jobName"] == job if job else tags.get("dagster/from_ui") == "true"

    def finished() -> dict[str, Any] | None:
        runs = [run for run in runs_for_partition(server, PARTITION) if mine(run)]
        if runs and runs[-1]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return runs[-1]
        return None

    return wait_for(f"the {job or 'UI'} run of {PARTITION} to finish", finished, timeout_s, interval_s=2.0)


GRAPH = "asset graph shows every asset, edge and group"
DESCRIPTIONS = "every asset has a description; fid_score's page shows it and the blocking check"
AUTOMATION = "automation page lists the sensors and the schedule"
MATERIALIZE = f"materialize {PARTITION} from the graph"
GATED_RUN = f"the run of {PARTITION} ends at the blocking gate"
CHECK_SHOWN = "the FID check result is shown, with why"
PLOTS = "fid_score's numeric metadata is plotted across partitions"
RETRAINED = f"the daemon retrains {PARTITION} once, then shows it rejected"
UNSYNCED = f"a new file of {MONTH} makes {PARTITION}'s manifest unsynced"
PREVIEW = "preprocessed_images's preview image renders"
LOSS_CURVE = "trained_generator's loss_curve image renders"


@dataclass
class Journey:
    """The user's journey through the UI, run once: each step's failure report (None if it passed;
    the steps after a failed one are not run), and what the month's first run stored."""
    outcomes: dict[str, str | None] = field(default_factory=dict)
    stored: list[str] | None = None
    score: dict[str, Any] | None = None

    def require(self, step: str) -> None:
        """Fail with the step's report (its error, the page's text, a screenshot, the server log)."""
        report = self.outcomes.get(step, f"the journey never reached {step!r}")
        if report is not None:
            pytest.fail(report, pytrace=False)


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Journey:
    if not chromium_available():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM_PATH} missing: .ci/run installs Debian's chromium with apt-get")
        pytest.skip(f"{CHROMIUM_PATH} missing: apt-get install chromium (never `playwright install`)")
    from playwright.sync_api import sync_playwright

    tmp_path = tmp_path_factory.mktemp("ui")
    ui_env = _ui_env(tmp_path)
    shots = _artifacts_root(tmp_path)
    home = prepare_dagster_home(tmp_path / "dagster_home")
    artifacts = Path(ui_env["GAN_ASSETS_ARTIFACTS_DIR"])
    started = time.monotonic()
    journey = Journey()

    with dagster_dev(workspace=REPO_ROOT / "workspace.yaml", dagster_home=home, env=ui_env,
                     log_path=shots / "dagster_dev.log") as server:
        locations = server.wait_until_loaded(SERVER_START_S)
        assert locations == [CODE_LOCATION], locations

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(30_000)
                ui = Browser(page, shots, server)
                failed: list[str] = []

                @contextmanager
                def step(what: str) -> Iterator[bool]:
                    """ui.step, recorded in the journey: the body runs (True) unless an earlier step failed."""
                    if failed:
                        journey.outcomes[what] = f"not run: the earlier step {failed[0]!r} failed"
                        yield False
                        return
                    try:
                        with ui.step(what):
                            yield True
                    except AssertionError as err:
                        journey.outcomes[what] = str(err)
                        failed.append(what)
                    else:
                        journey.outcomes[what] = None

                with step(GRAPH) as run:
                    if run:
                        open_expanded_asset_graph(page, server.url)

                        def graph_complete() -> bool:
                            nodes, edges, groups = read_asset_graph(page, ASSETS)
                            return len(nodes) == len(ASSETS) and groups == GROUPS and all(e in edges for e in EDGES)

                        try:  # nodes, then edges, are drawn as the layout settles
                            wait_for("the whole graph to be drawn", graph_complete, 45)
                        except UITimeout:
                            pass  # the assertions below say what is missing
                        nodes, edges, groups = read_asset_graph(page, ASSETS)
                        assert sorted(nodes) == sorted(ASSETS), f"asset nodes drawn: {sorted(nodes)}"
                        missing_edges = [edge for edge in EDGES if edge not in edges]
                        assert not missing_edges, f"lineage edges not drawn: {missing_edges}; drawn: {edges}"
                        assert groups == GROUPS, groups
                        ui.shot("01_asset_graph")

                with step(DESCRIPTIONS) as run:
                    if run:
                        descriptions = asset_descriptions(server)
                        assert sorted(descriptions) == sorted(ASSETS), descriptions
                        assert all(descriptions.values()), f"assets without a description: {descriptions}"
                        page.goto(f"{server.url}/assets/fid_score")
                        page.get_by_text(descriptions["fid_score"].splitlines()[0][:60]).first.wait_for()
                        page.goto(f"{server.url}/assets/fid_score?view=checks")
                        page.get_by_text("fid_within_threshold").first.wait_for()
                        page.get_by_text("blocking").first.wait_for()

                with step(AUTOMATION) as run:
                    if run:
                        page.goto(f"{server.url}/automation")
                        for name in ("retrain_on_fid_failure", "notify_on_run_failure", "monthly_pipeline_schedule"):
                            page.get_by_text(name, exact=True).first.wait_for()
                        # rows fill in (kind, cron, on/off switch) once the instigator states load
                        page.get_by_text("Run status sensor").first.wait_for()
                        page.get_by_text("on day 1 of the month").first.wait_for()
                        ui.shot("02_automation")

                with step(MATERIALIZE) as run:
                    if run:
                        open_expanded_asset_graph(page, server.url)
                        launch_partition_from_graph(page, PARTITION)
                        ui.shot("03_launched")

                with step(GATED_RUN) as run:
                    if run:
                        first_run = _wait_for_run(server, RUN_S)
                        tags = {t["key"]: t["value"] for t in first_run["tags"]}
                        assert tags.get("dagster/from_ui") == "true", tags
                        page.goto(f"{server.url}/runs/{first_run['runId']}")
                        failure = run_failure_summary(server, first_run["runId"])
                        assert first_run["status"] == "FAILURE" and "fid_within_threshold" in failure, (
                            f"run {first_run['runId']} ended {first_run['status']}:\n{failure}")
                        page.get_by_text("Failure", exact=True).first.wait_for(timeout=60_000)
                        ui.shot("04_run")

                if journey.outcomes[GATED_RUN] is None:
                    journey.stored = sorted(p.relative_to(artifacts).as_posix() for p in artifacts.rglob("*") if p.is_file())
                    score_path = artifacts / f"fid_score/{PARTITION}.json"
                    journey.score = json.loads(score_path.read_text()) if score_path.is_file() else None

                with step(CHECK_SHOWN) as run:
                    if run:
                        page.goto(f"{server.url}/assets/fid_score?view=checks")
                        page.get_by_text("fid_within_threshold").first.wait_for()
                        page.get_by_text("Failed", exact=True).first.wait_for(timeout=60_000)
                        ui.shot("05_fid_check")

                with step(PLOTS) as run:
                    if run:
                        page.goto(f"{server.url}/assets/fid_score")
                        page.get_by_role("button", name="Plots").first.click()
                        for label in ("fid", "kid_mean", "threshold"):
                            page.get_by_text(label, exact=True).first.wait_for(timeout=60_000)
                        wait_for("plot canvases", lambda: page.locator("canvas").count() >= 3, 30)
                        ui.shot("06_fid_plots")

                with step(RETRAINED) as run:
                    if run:
                        retrain = _wait_for_run(server, RUN_S, job="retrain_job")
                        tags = {t["key"]: t["value"] for t in retrain["tags"]}
                        assert tags.get("gan/attempt") == "2" and "failed" in tags.get("gan/reason", ""), tags
                        failure = run_failure_summary(server, retrain["runId"])
                        assert retrain["status"] == "FAILURE" and "REJECTED" in failure, failure
                        page.goto(f"{server.url}/assets/fid_score?view=partitions&partition={PARTITION}")
                        page.get_by_text("Failed (1)").first.wait_for(timeout=60_000)
                        ui.shot("09_rejected_month")

                with step(UNSYNCED) as run:
                    if run:
                        _add_late_file(Path(ui_env["GAN_ASSETS_LANDING_ZONE"]))
                        index_run = _launch_job(server, "index_landing_zone")
                        wait_for("the index run to succeed", lambda: _run_status(server, index_run) == "SUCCESS"
                                 or None, RUN_S, interval_s=2.0)
                        stale = wait_for("dicom_manifest's stale status", lambda: _stale(server, "dicom_manifest")
                                         if _stale(server, "dicom_manifest")[0] == "STALE" else None, 60)
                        assert any("data version" in cause for cause in stale[1]), stale
                        # A partitioned asset shows it on the partition's own panel, not on the overview.
                        page.goto(f"{server.url}/assets/dicom_manifest?view=partitions&partition={PARTITION}")
                        page.get_by_text("Unsynced").first.wait_for(timeout=60_000)
                        ui.shot("10_unsynced_manifest")

                # Long markdown (an inline PNG) sits behind "[Show Markdown]", which opens it in a dialog.
                for what, asset, label, shot in ((PREVIEW, "preprocessed_images", "preview", "07_preprocessed_images_preview"),
                                                 (LOSS_CURVE, "trained_generator", "loss_curve", "08_loss_curve")):
                    with step(what) as run:
                        if run:
                            show_markdown_image(page, f"{server.url}/assets/{asset}?view=events", label)
                            ui.shot(shot)
                            page.keyboard.press("Escape")
            finally:
                browser.close()
    print(f"UI test took {time.monotonic() - started:.0f}s; screenshots in {shots}")
    return journey


def test_the_asset_graph_shows_every_asset_edge_and_group(journey: Journey) -> None:
    journey.require(GRAPH)


def test_every_asset_has_a_description_and_fid_score_shows_its_blocking_check(journey: Journey) -> None:
    journey.require(DESCRIPTIONS)


def test_the_automation_page_lists_the_sensors_and_the_schedule(journey: Journey) -> None:
    journey.require(AUTOMATION)


def test_a_month_is_materialized_from_the_graphs_launch_dialog(journey: Journey) -> None:
    journey.require(MATERIALIZE)


def test_the_months_run_ends_at_the_blocking_gate(journey: Journey) -> None:
    journey.require(GATED_RUN)


def test_the_gated_run_stores_every_upstream_artifact_and_nothing_downstream(journey: Journey) -> None:
    journey.require(GATED_RUN)
    stored = journey.stored
    for expected in ("landing_zone_index.parquet", f"dicom_manifest/{PARTITION}.parquet",
                     f"preprocessed_images/{PARTITION}.npz",
                     f"fid_feature_extractor/{PARTITION}.", f"trained_generator/{PARTITION}.",
                     f"fid_score/{PARTITION}.json"):
        assert any(key.startswith(expected) for key in stored), f"{expected}* not stored; stored: {stored}"
    assert not any(key.startswith(("generated_samples/", "monthly_report/")) for key in stored), stored


def test_the_stored_score_failed_a_discriminative_gate_with_its_controls(journey: Journey) -> None:
    journey.require(GATED_RUN)
    score = journey.score
    assert score is not None, "fid_score was not stored"
    # Attempt 1 of 2 failed (the retrain sensor may already have replaced it with attempt 2).
    assert score["gate"]["discriminative"] and score["status"] in ("failed", "rejected"), score["status"]
    assert {c["name"] for c in score["controls"]} >= {"held_out_real", "flipped_vertical", "inverted"}


def test_the_fid_check_result_is_shown_with_why(journey: Journey) -> None:
    journey.require(CHECK_SHOWN)


def test_fid_scores_numeric_metadata_is_plotted_across_partitions(journey: Journey) -> None:
    journey.require(PLOTS)


def test_the_daemon_retrains_the_month_once_then_shows_it_rejected(journey: Journey) -> None:
    journey.require(RETRAINED)


def test_a_new_file_of_the_month_makes_its_manifest_unsynced(journey: Journey) -> None:
    journey.require(UNSYNCED)


def test_preprocessed_images_preview_renders(journey: Journey) -> None:
    journey.require(PREVIEW)


def test_trained_generators_loss_curve_renders(journey: Journey) -> None:
    journey.require(LOSS_CURVE)
