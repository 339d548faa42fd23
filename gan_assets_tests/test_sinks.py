"""Sinks: CloudWatch against moto's server, the webhook against a local HTTP server, the failure sensor."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from typing import Any

import boto3
import dagster as dg
import pytest

from gan_assets.partitions import monthly_partitions
from gan_assets.report.sinks import metric_dimensions, post_webhook
from gan_assets.resources import CloudWatchMetrics, Notifier, notifier_from_env
from gan_assets.sensors import notify_on_delivery, notify_on_run_failure
from gan_assets_tests.factories import WebhookReceiver, free_port


@pytest.mark.usefixtures("aws_env")  # the sink uses the standard AWS chain
def test_cloudwatch_puts_fid_and_kid_readable_back(moto_endpoint: str) -> None:
    namespace = f"GanAssetsTest{uuid.uuid4().hex[:8]}"
    sink = CloudWatchMetrics(enabled=True, namespace=namespace, endpoint_url=moto_endpoint)
    model = "dcgan"
    assert sink.put_fid_metrics("2026-03-01", model, fid=42.5, kid=0.0125) is True

    client = boto3.client("cloudwatch", endpoint_url=moto_endpoint, region_name="us-east-1")
    listed = client.list_metrics(Namespace=namespace)["Metrics"]
    assert sorted(m["MetricName"] for m in listed) == ["FIDScore", "KID"]
    assert {d["Name"]: d["Value"] for d in listed[0]["Dimensions"]} == {"Month": "2026-03-01", "Model": "dcgan"}
    now = dt.datetime.now(dt.timezone.utc)
    for metric, value in (("FIDScore", 42.5), ("KID", 0.0125)):
        stats = client.get_metric_statistics(
            Namespace=namespace, MetricName=metric, Dimensions=metric_dimensions("2026-03-01", model),
            StartTime=now - dt.timedelta(hours=1), EndTime=now + dt.timedelta(hours=1),
            Period=3600, Statistics=["Maximum", "SampleCount"],
        )["Datapoints"]
        assert len(stats) == 1 and stats[0]["Maximum"] == pytest.approx(value) and stats[0]["SampleCount"] == 1


@pytest.mark.usefixtures("aws_env")
def test_the_deployment_writes_metrics_to_its_own_region(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_REGION reaches the CloudWatch sink that definitions.py builds (it used to go to us-east-1)."""
    from gan_assets.definitions import resources_for

    namespace = f"GanAssetsRegion{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("GAN_ASSETS_CLOUDWATCH", "1")
    monkeypatch.setenv("GAN_ASSETS_CLOUDWATCH_NAMESPACE", namespace)
    monkeypatch.setenv("GAN_ASSETS_CLOUDWATCH_ENDPOINT_URL", moto_endpoint)
    sink = resources_for("local")["cloudwatch"]

    assert sink.put_fid_metrics("2026-03-01", "dcgan", fid=42.5, kid=0.0125) is True

    def listed(region: str) -> list[str]:
        client = boto3.client("cloudwatch", endpoint_url=moto_endpoint, region_name=region)
        return sorted(m["MetricName"] for m in client.list_metrics(Namespace=namespace)["Metrics"])

    assert listed("eu-west-3") == ["FIDScore", "KID"]
    assert listed("us-east-1") == []  # moto keeps regions apart, as CloudWatch does


@pytest.mark.usefixtures("aws_env")
def test_cloudwatch_off_by_default_and_failures_never_raise(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    namespace = f"GanAssetsOff{uuid.uuid4().hex[:8]}"
    assert CloudWatchMetrics(namespace=namespace, endpoint_url=moto_endpoint).put_fid_metrics("2026-03-01", "m", 1.0, 0.1) is False
    client = boto3.client("cloudwatch", endpoint_url=moto_endpoint, region_name="us-east-1")
    assert client.list_metrics(Namespace=namespace)["Metrics"] == []

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one try at a closed port keeps the test fast
    dead = CloudWatchMetrics(enabled=True, namespace=namespace, endpoint_url=f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.WARNING, logger="gan_assets.report.sinks"):
        assert dead.put_fid_metrics("2026-03-01", "m", 1.0, 0.1) is False
    assert "CloudWatch put_metric_data failed" in caplog.text


def test_notifier_posts_slack_compatible_json(webhook: WebhookReceiver) -> None:
    assert Notifier(webhook_url=webhook.url).notify("month 2026-03 rejected") is True
    (request,) = webhook.requests
    assert request["path"] == "/services/T000/B000?token=abc"
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.loads(request["body"]) == {"text": "month 2026-03 rejected"}


def test_notifier_reads_the_url_from_the_env_and_is_off_without_it(
    webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GAN_ASSETS_WEBHOOK_URL", raising=False)
    assert notifier_from_env().notify("nobody hears this") is False
    assert webhook.requests == []
    monkeypatch.setenv("GAN_ASSETS_WEBHOOK_URL", webhook.url)
    notifier = notifier_from_env()
    assert notifier.notify("from the env") is True
    assert webhook.texts() == ["from the env"]
    # The secret URL is an EnvVar: what Dagster keeps of the resource's config names the variable.
    stored = json.dumps(notifier.get_resource_definition().config_schema.default_value, default=str)
    assert webhook.url not in stored and "GAN_ASSETS_WEBHOOK_URL" in stored


def test_notifier_failures_are_logged_never_raised(webhook: WebhookReceiver, caplog: pytest.LogCaptureFixture) -> None:
    webhook.status = 500
    with caplog.at_level(logging.WARNING, logger="gan_assets.report.sinks"):
        assert Notifier(webhook_url=webhook.url).notify("x") is False
        assert "answered HTTP 500" in caplog.text
        assert Notifier(webhook_url=f"http://127.0.0.1:{free_port()}/hook", timeout_seconds=2).notify("x") is False
        assert "notifier POST failed (ConnectionRefusedError)" in caplog.text
        assert post_webhook("ftp://127.0.0.1/hook", "x") is False
    assert len(webhook.requests) == 1  # the 500 answer was a real request


@dg.asset(partitions_def=monthly_partitions)
def breaks_on_purpose() -> None:
    """Fails like a real step would."""
    raise RuntimeError("landing zone unreachable")


def _failed_run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = dg.materialize([breaks_on_purpose], partition_key="2026-02-01", instance=instance, raise_on_error=False)
    assert not result.success
    return result


def _failure_context(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, notifier: Notifier) -> Any:
    """What the run-failure sensor receives for ``result``'s failed run."""
    return dg.build_run_status_sensor_context(
        sensor_name="notify_on_run_failure", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(), resources={"notifier": notifier},
    ).for_run_failure()


def test_run_failure_sensor_posts_what_which_month_and_link(webhook: WebhookReceiver) -> None:
    notifier = Notifier(webhook_url=webhook.url, ui_base_url="http://dagster.example:3000/")
    with dg.DagsterInstance.ephemeral() as instance:
        result = _failed_run(instance)
        context = _failure_context(instance, result, notifier)
        notify_on_run_failure(context)
    (text,) = webhook.texts()
    assert "__ephemeral_asset_job__" in text and "2026-02-01" in text
    assert f"http://dagster.example:3000/runs/{result.run_id}" in text
    assert "breaks_on_purpose" in text  # the failed step, from the run's failure event


def test_run_failure_sensor_survives_a_dead_notifier(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(webhook_url=f"http://127.0.0.1:{free_port()}/hook", timeout_seconds=2)
    with dg.DagsterInstance.ephemeral() as instance:
        result = _failed_run(instance)
        context = _failure_context(instance, result, notifier)
        with caplog.at_level(logging.WARNING):
            notify_on_run_failure(context)  # must not raise
    assert "notifier POST failed" in caplog.text


@dg.asset(key="fid_score", partitions_def=monthly_partitions)
def _stand_in_score() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"status": "failed"})


@dg.asset_check(asset="fid_score", name="fid_within_threshold", blocking=True)
def _stand_in_gate() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="FID over the threshold")


def test_a_run_stopped_only_by_the_gate_sends_no_failure_message(webhook: WebhookReceiver) -> None:
    """The retrain sensor reports a gate failure (retrain, rejected, blind): no duplicate per attempt."""
    notifier = Notifier(webhook_url=webhook.url)
    with dg.DagsterInstance.ephemeral() as instance:
        gated = dg.materialize([_stand_in_score, _stand_in_gate], partition_key="2026-02-01", instance=instance,
                               raise_on_error=False)
        assert not gated.success
        context = dg.build_run_status_sensor_context(
            sensor_name="notify_on_run_failure", dagster_instance=instance, dagster_run=gated.dagster_run,
            dagster_event=gated.get_run_failure_event(), resources={"notifier": notifier},
        ).for_run_failure()
        notify_on_run_failure(context)
        assert webhook.texts() == []
        # Any other failure still gets its one message.
        broken = _failed_run(instance)
        context = dg.build_run_status_sensor_context(
            sensor_name="notify_on_run_failure", dagster_instance=instance, dagster_run=broken.dagster_run,
            dagster_event=broken.get_run_failure_event(), resources={"notifier": notifier},
        ).for_run_failure()
        notify_on_run_failure(context)
    assert len(webhook.texts()) == 1 and broken.run_id in webhook.texts()[0]


@dg.asset(key="monthly_report", partitions_def=monthly_partitions)
def _stand_in_report() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={
        "fid": 2.391, "threshold": 5.36, "kid_mean": 0.00421, "attempts": 2,
        "report_html": dg.MetadataValue.path("/srv/artifacts/monthly_report/2026-03-01.html")})


def test_a_delivered_month_sends_one_message_with_scores_and_links(webhook: WebhookReceiver,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_ASSETS_UI_BASE_URL", "https://dagster.hospital.example/")
    monkeypatch.setenv("GAN_ASSETS_WEBHOOK_URL", webhook.url)
    notifier = notifier_from_env()
    defs = dg.Definitions(assets=[_stand_in_report], sensors=[notify_on_delivery], resources={"notifier": notifier})
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize([_stand_in_report], partition_key="2026-03-01", instance=instance).success
        with dg.build_sensor_context(instance=instance, definitions=defs, resources={"notifier": notifier}) as context:
            first = notify_on_delivery.evaluate_tick(context)
        with dg.build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor,
                                     resources={"notifier": notifier}) as context:
            notify_on_delivery.evaluate_tick(context)  # nothing new: no second message
    (text,) = webhook.texts()
    assert "2026-03 delivered after 2 attempt(s)" in text and "FID 2.391" in text and "threshold 5.360" in text
    assert "KID 0.00421" in text and "/srv/artifacts/monthly_report/2026-03-01.html" in text
    assert "https://dagster.hospital.example/assets/monthly_report?partition=2026-03-01" in text
