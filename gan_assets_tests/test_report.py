"""monthly_report: report.json against its schema, the HTML page, the trend, attempts, charts."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import jsonschema
import numpy as np
import pytest
from PIL import Image

from gan_assets.assets.generation import generated_samples
from gan_assets.assets.reporting import monthly_report
from gan_assets.io_managers import ArtifactStorage
from gan_assets.report.charts import chart_png, line_chart, loss_chart
from gan_assets.report.document import ReportError, report_schema, validate_report
from gan_assets.assets import reporting
from gan_assets.storage import store_from_uri
from gan_assets.storage.digest import arrays_sha256, state_dict_sha256
from gan_assets_tests.factories import delivery_resources, fid_score_value, seed_month, tiny_config_resources, upstream_specs

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "gan_assets" / "report" / "report.schema.json"


def materialize_month(root: Path, partition: str, instance: dg.DagsterInstance, **generation: Any) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*upstream_specs(), generated_samples, monthly_report],
        selection=["generated_samples", "monthly_report"],
        partition_key=partition, resources=delivery_resources(root, **generation), instance=instance,
    )


def read_report(root: Path, partition: str) -> tuple[dict[str, Any], str]:
    report = json.loads((root / "monthly_report" / f"{partition}.json").read_text())
    html = (root / "monthly_report" / f"{partition}.html").read_text()
    return report, html


@dataclass
class Delivered:
    """Two months delivered in turn (January, then February), each from its seeded upstream."""
    artifacts: Path
    seeded: dict[str, Any]
    result: dg.ExecuteInProcessResult
    first: dict[str, Any]
    report: dict[str, Any]
    html: str


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Delivered:
    artifacts_dir = tmp_path_factory.mktemp("delivered") / "artifacts"
    # An in-memory instance: the event log is only read for attempts, and sqlite files are slow here.
    with dg.DagsterInstance.ephemeral() as instance:
        seed_month(artifacts_dir, "2026-01-01", fid_score=fid_score_value("2026-01-01", fid=61.25, kid=0.0321))
        materialize_month(artifacts_dir, "2026-01-01", instance)
        seeded = seed_month(artifacts_dir, "2026-02-01", fid_score=fid_score_value("2026-02-01", fid=47.5, kid=0.0154),
                            seed=1)
        result = materialize_month(artifacts_dir, "2026-02-01", instance)
    first, _ = read_report(artifacts_dir, "2026-01-01")
    report, html = read_report(artifacts_dir, "2026-02-01")
    return Delivered(artifacts_dir, seeded, result, first, report, html)


def test_both_reports_follow_the_schema_file(delivered: Delivered) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for document in (delivered.first, delivered.report):
        jsonschema.validate(document, schema)  # the schema file in the repo, read independently


def test_the_trend_holds_every_month_delivered_so_far(delivered: Delivered) -> None:
    first, report = delivered.first, delivered.report
    assert [p["partition"] for p in first["trend"]] == ["2026-01-01"]
    assert [(p["partition"], p["fid"], p["status"]) for p in report["trend"]] == [
        ("2026-01-01", 61.25, "passed"), ("2026-02-01", 47.5, "passed"),
    ]
    assert report["trend"][0]["source"] == "monthly_report"


def test_the_report_holds_the_verdict_scores_config_memorization_and_fingerprint(delivered: Delivered) -> None:
    report = delivered.report
    assert report["status"] == "passed" and report["verdict"].startswith("Approved")
    assert report["evaluation"]["fid"] == 47.5 and report["evaluation"]["kid_mean"] == 0.0154
    assert report["evaluation"]["floor_fid"] == 12.25 and report["evaluation"]["extractor"] == "offline-default"
    assert report["configuration"]["image_size"] == 32 and report["configuration"]["latent_dim"] == 16
    assert report["memorization"]["feature_space"]["near_copies"] == 0 and report["fingerprint"]["id"] == "fp-test"


def test_the_report_counts_the_months_data_and_rejects_by_reason(delivered: Delivered) -> None:
    report = delivered.report
    assert report["data"]["files_seen"] == 4 and report["data"]["accepted"] == 3
    assert report["data"]["rejects_by_reason"] == {"unsupported photometric interpretation": 1}
    assert report["data"]["modalities"] == {"CT": 1, "MR": 2} and report["data"]["training_images"] == 24


def test_the_zone_wide_count_comes_from_the_landing_zone_index(delivered: Delivered) -> None:
    # The stored landing_zone_index is seeded empty here.
    assert delivered.report["data"]["landing_zone"] == {"files": 0, "unassigned": 0, "unassigned_by_reason": {}}
    assert 'id="landing-zone"' in delivered.html and "0 belong to no month" in delivered.html


def test_the_report_holds_timings_and_names_the_code_version(delivered: Delivered) -> None:
    report, html = delivered.report, delivered.html
    assert report["timings"]["training"]["train_seconds"] == 0.5
    assert report["timings"]["generation"]["sample_seconds"] > 0
    # The code is named by the assets' code version (no git checkout needed), in JSON and HTML.
    assert report["code_version"] == {"package": "0.1.0", "code": reporting.CODE_VERSION}
    assert f"(code {reporting.CODE_VERSION})" in html


def test_lineage_leads_from_the_images_to_the_promoted_weights_data_code_and_runs(delivered: Delivered) -> None:
    lineage, seeded, html = delivered.report["lineage"], delivered.seeded, delivered.html
    weights_sha = state_dict_sha256(seeded["trained_generator"].tensors)
    assert lineage["model"]["weights_sha256"] == weights_sha and lineage["model"]["attempt"] == 1
    assert lineage["model"]["weights"].endswith(".safetensors") and ".history/attempt-01-" in lineage["model"]["weights"]
    assert lineage["data"]["images_sha256"] == arrays_sha256(seeded["preprocessed_images"].arrays)
    assert lineage["data"]["training_window_sha256"] == "seeded-window"
    assert lineage["code_versions"]["reporting"] == reporting.CODE_VERSION
    assert lineage["runs"]["report"] == delivered.result.run_id == lineage["runs"]["generation"]
    assert weights_sha in html and 'id="lineage"' in html


def test_the_report_links_its_stored_objects_and_a_small_preview(delivered: Delivered) -> None:
    report = delivered.report
    metadata = delivered.result.asset_materializations_for_node("monthly_report")[0].metadata
    assert metadata["report_link"].value.startswith("file://")
    samples = report["generated_images"]
    assert samples["count"] == 8 and samples["seed"] == 1234
    assert Path(samples["objects"]["npz"]).is_file() and Path(samples["objects"]["grid_png"]).is_file()
    preview = Image.open(io.BytesIO(base64.b64decode(samples["preview"]["data_uri"].split(",", 1)[1])))
    assert preview.size[0] <= 4 * 50 + 2  # small: at most 16 thumbnails
    assert report["objects"]["report_html"].endswith("monthly_report/2026-02-01.html")


def test_the_page_is_self_contained_with_both_grids(delivered: Delivered) -> None:
    html = delivered.html
    assert 'id="sample-grid" src="data:image/png;base64,' in html
    assert 'id="real-grid" src="data:image/png;base64,' in html
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing fetched from elsewhere


def test_the_page_shows_the_numbers_the_trend_and_the_losses(delivered: Delivered) -> None:
    html = delivered.html
    assert 'id="fid">47.50<' in html and "61.25" in html and "0.0154" in html and "100.00" in html
    trend_svg = html.split('id="trend"', 1)[1].split("</div>", 1)[0]
    fid_chart = trend_svg.split("</figure>", 1)[0]
    assert len(re.findall(r"<title>FID 2026-0[12]: ", fid_chart)) == 2
    assert "Training losses" in html and html.count("<polyline") >= 4
    assert "<th>feature_space.near_copies</th>" in html and "<code>fp-test</code>" in html
    assert "<tr><td>2026-01</td>" in html and "<tr><td>2026-02</td>" in html


def test_the_report_holds_the_gate_and_its_controls(delivered: Delivered) -> None:
    controls = delivered.report["evaluation"]["controls"]
    assert [c["name"] for c in controls][-1] == "held_out_real" and len(controls) == 8
    assert {c["kind"] for c in controls} == {"negative", "positive"}
    assert controls[0] == {"name": "uniform_noise", "kind": "negative", "fid": 150.0, "kid": 0.2, "passed": False}
    gate = delivered.report["evaluation"]["gate"]
    assert gate["threshold"] == 100.0 and gate["discriminative"] is True and gate["rule"].startswith("absolute")


def test_the_page_shows_the_controls_as_a_table(delivered: Delivered) -> None:
    html = delivered.html
    table = html.split('id="controls"', 1)[1].split("</table>", 1)[0]
    assert "<code>uniform_noise</code>" in table and "<code>held_out_real</code>" in table
    assert table.count("<tr>") == 1 + 8 + 1  # header, the controls, the generator
    assert "150.0000" in table and 'id="gate-discriminative">discriminative<' in html


def test_the_materialization_holds_numbers_uris_and_the_trend_as_a_table(delivered: Delivered) -> None:
    metadata = delivered.result.asset_materializations_for_node("monthly_report")[0].metadata
    assert metadata["fid"].value == 47.5 and metadata["months_in_trend"].value == 2
    assert metadata["report_json"].value.endswith("monthly_report/2026-02-01.json")
    trend = metadata["trend"]
    assert isinstance(trend, dg.TableMetadataValue) and [c.name for c in trend.schema.columns][:3] == ["month", "status", "fid"]
    assert [(r.data["month"], r.data["status"], r.data["fid"]) for r in trend.records] == [
        ("2026-01", "passed", 61.25), ("2026-02", "passed", 47.5)]


def test_the_io_manager_stores_nothing_for_the_report(delivered: Delivered) -> None:
    assert sorted(p.name for p in (delivered.artifacts / "monthly_report").iterdir() if not p.name.startswith(".")) == [
        "2026-01-01.html", "2026-01-01.json", "2026-02-01.html", "2026-02-01.json",
    ]


def rejected_verdict(instance: dg.DagsterInstance, partition: str, fid: float) -> None:
    """A rejected month as fid_score records it: a verdict observation (the blocking check stopped its report)."""
    instance.report_runless_asset_event(dg.AssetObservation(
        asset_key="fid_score", partition=partition,
        metadata={"fid": fid, "kid_mean": 0.07, "threshold": 100.0, "passed": False, "attempt": 3,
                  "max_attempts": 3, "status": "rejected"}))


def test_attempts_from_the_event_log_and_rejected_months_in_the_trend(artifacts_dir: Path) -> None:
    store_root = artifacts_dir
    partition = "2026-04-01"
    diff = {"lr_d": [0.0002, 0.0001], "lr_g": [0.0002, 0.0001]}
    seed_month(store_root, partition, fid_score=fid_score_value(partition, fid=88.0, attempt=2, config_diff=diff))
    with dg.DagsterInstance.ephemeral() as instance:
        rejected_verdict(instance, "2026-03-01", fid=180.0)
        # The two fid_score materializations of April as the evaluation stage records them.
        for attempt, fid, passed, config_diff in ((1, 140.0, False, {}), (2, 88.0, True, diff)):
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key="fid_score", partition=partition,
                metadata={
                    "fid": fid, "kid_mean": 0.05, "threshold": 100.0, "passed": passed, "attempt": attempt,
                    "max_attempts": 3, "status": "passed" if passed else "failed",
                    "config_diff": dg.MetadataValue.json(config_diff),
                },
            ))
        materialize_month(store_root, partition, instance)

    report, html = read_report(store_root, partition)
    validate_report(report)
    assert [(a["attempt"], a["status"], a["fid"]) for a in report["attempts"]] == [
        (1, "failed", 140.0), (2, "passed", 88.0),
    ]
    assert report["attempts"][0]["config_diff"] == {} and report["attempts"][1]["config_diff"] == diff
    assert report["attempts"][0]["materialized_at"] is not None
    assert [(p["partition"], p["status"], p["source"]) for p in report["trend"]] == [
        ("2026-03-01", "rejected", "fid_score"), ("2026-04-01", "passed", "monthly_report"),
    ]
    assert '<td class="status-rejected">rejected</td>' in html
    assert "lr_g: 0.0002 &rarr; 0.0001" in html and "initial config" in html


def test_report_on_s3_reads_the_trend_from_the_event_log(s3_resource: Any, s3_settings: Any, s3_bucket: str,
                                                      s3_client: Any) -> None:
    prefix = "gan"
    store = store_from_uri(f"s3://{s3_bucket}/{prefix}", s3_settings)
    seed_month(store, "2026-06-01", fid_score=fid_score_value("2026-06-01", fid=70.0))
    storage = ArtifactStorage(root=f"s3://{s3_bucket}/{prefix}", s3=s3_resource)
    with dg.DagsterInstance.ephemeral() as instance:
        rejected_verdict(instance, "2026-05-01", fid=150.0)
        dg.materialize(
            [*upstream_specs(), generated_samples, monthly_report],
            selection=["generated_samples", "monthly_report"], partition_key="2026-06-01", instance=instance,
            resources={
                "io_manager": storage,
                "artifact_store": storage,
                **tiny_config_resources(generation={"write_sample_dicoms": True, "num_samples": 2}),
            },
        )
    body = s3_client.get_object(Bucket=s3_bucket, Key=f"{prefix}/monthly_report/2026-06-01.json")["Body"].read()
    report = json.loads(body)
    jsonschema.validate(report, json.loads(SCHEMA_PATH.read_text()))
    assert [(p["partition"], p["status"]) for p in report["trend"]] == [("2026-05-01", "rejected"), ("2026-06-01", "passed")]
    objects = report["generated_images"]["objects"]
    assert objects["npz"] == f"s3://{s3_bucket}/{prefix}/generated_samples/2026-06-01.npz"
    assert objects["dicom"] == [f"s3://{s3_bucket}/{prefix}/generated_samples/2026-06-01/sample_{i:04d}.dcm" for i in (1, 2)]
    for uri in (objects["npz"], objects["grid_png"], *objects["dicom"], report["objects"]["report_html"]):
        s3_client.head_object(Bucket=s3_bucket, Key=uri.split(f"s3://{s3_bucket}/", 1)[1])


def test_schema_rejects_a_broken_report() -> None:
    report = {
        "schema_version": 1, "partition": "2026-02-01", "generated_at": "2026-03-01T00:00:00+00:00",
        "status": "passed", "verdict": "ok",
    }
    with pytest.raises(ReportError, match="breaks its schema"):
        validate_report(report)
    schema = copy.deepcopy(report_schema())
    assert "evaluation" in schema["required"] and "trend" in schema["required"]
    bad_status = {**report, "status": "maybe"}
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(bad_status))
    assert any(list(e.absolute_path) == ["status"] for e in errors)


def test_the_loss_chart_is_one_geometry_for_svg_and_png() -> None:
    chart = loss_chart({"step": [1, 2, 3], "loss_d": [1.4, 1.0, float("nan")], "loss_g": [0.7, 0.9, 1.2]})
    loss_d, loss_g = chart["series"]
    assert len(loss_d["points"].split()) == 2 and len(loss_g["points"].split()) == 3  # NaN is a gap
    image = Image.open(io.BytesIO(chart_png(chart)))
    assert image.format == "PNG" and image.size == (chart["width"], chart["height"])
    pixels = np.asarray(image.convert("RGB"))
    for series in chart["series"]:  # each line is drawn in the colour the SVG legend gives it
        rgb = tuple(int(series["color"][i:i + 2], 16) for i in (1, 3, 5))
        assert (pixels == rgb).all(axis=2).sum() > 20, series["name"]
    empty = Image.open(io.BytesIO(chart_png(loss_chart(None)))).convert("RGB")
    assert not (np.asarray(empty) == (214, 39, 40)).all(axis=2).any()


def test_line_chart_geometry() -> None:
    chart = line_chart([0.0, 1.0, 2.0], [("FID", [10.0, None, 30.0])], title="t", width=200, height=100,
                       x_labels=["a", "b", "c"], point_status=["passed", None, "rejected"])
    plot = chart["plot"]
    (first, last) = [tuple(map(float, p.split(","))) for p in chart["series"][0]["points"].split()]
    # x: the first and last positions sit on the plot's edges; the gap (None) is skipped.
    assert first[0] == plot["left"] and last[0] == plot["right"]
    # y: the larger value is higher on the page (smaller y), both inside the plot area.
    assert plot["top"] <= last[1] < first[1] <= plot["bottom"]
    assert [m["status"] for m in chart["series"][0]["markers"]] == ["passed", "rejected"]
    ticks = [float(t["label"]) for t in chart["y_ticks"]]
    assert ticks[0] <= 10.0 and ticks[-1] >= 30.0
    single = line_chart([5.0], [("FID", [42.0])], title="one", width=200, height=100)
    x, y = map(float, single["series"][0]["points"].split(","))
    assert x == (single["plot"]["left"] + single["plot"]["right"]) / 2
    assert single["plot"]["top"] < y < single["plot"]["bottom"]
    with pytest.raises(ValueError, match="one value per x"):
        line_chart([0.0, 1.0], [("a", [1.0])], title="bad")


def test_a_reject_counts_under_its_code_else_its_sentence() -> None:
    from gan_assets.dicom.reasons import count_reasons, reason_examples

    rows = [{"reason_code": "truncated", "reason": "cut at 10 bytes"}, {"reason_code": "truncated", "reason": "cut at 20"},
            {"reason_code": "", "reason": "an older manifest's sentence"}, {"status": "rejected"}]
    assert count_reasons(rows) == {"an older manifest's sentence": 1, "truncated": 2, "unspecified": 1}
    assert reason_examples(rows)["truncated"] == "cut at 10 bytes"


def test_rejects_group_by_reason_code_and_count_decode_time_rejects() -> None:
    import pandas as pd

    from gan_assets.report.document import data_counts

    manifest = pd.DataFrame({
        "status": ["ok", "ok", "ok", "rejected", "rejected"],
        "modality": ["CT", "CT", "CT", "", ""],
        "reason_code": ["", "", "", "pixel_data_short", "pixel_data_short"],
        "reason": ["", "", "", "pixel data says 131072 bytes but 78644 remain",
                   "pixel data says 524288 bytes but 1200 remain"],
    })
    decode = [{"reason_code": "decode_failed", "reason": "JPEG-LS needs pylibjpeg-libjpeg"}]
    counts = data_counts(manifest, decode)
    # Two files with one cause but different byte counts are one reason; the decode reject counts.
    assert counts["rejects_by_reason"] == {"decode_failed": 1, "pixel_data_short": 2}
    assert counts["reject_examples"]["pixel_data_short"].startswith("pixel data says 131072")
    assert (counts["files_seen"], counts["accepted"], counts["rejected"]) == (5, 2, 3)
