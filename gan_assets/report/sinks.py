"""Optional sinks: CloudWatch metrics and webhook notifications. Failures never raise."""

from __future__ import annotations

import json
import logging
import urllib.request

log = logging.getLogger(__name__)


def put_fid_metrics(*, namespace: str, region_name: str, endpoint_url: str | None,
                    partition_key: str, model: str, fid: float, kid: float) -> bool:
    """Put ``FIDScore`` and ``KID`` with dimensions Month and Model; False on failure."""
    try:
        import boto3

        client = boto3.client("cloudwatch", region_name=region_name, endpoint_url=endpoint_url)
        dimensions = [{"Name": "Month", "Value": partition_key}, {"Name": "Model", "Value": model}]
        client.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {"MetricName": "FIDScore", "Dimensions": dimensions, "Value": float(fid), "Unit": "None"},
                {"MetricName": "KID", "Dimensions": dimensions, "Value": float(kid), "Unit": "None"},
            ],
        )
        return True
    except Exception as err:  # a metrics outage must not fail a training month
        log.warning("CloudWatch put_metric_data failed (%s): %s", type(err).__name__, err)
        return False


def post_webhook(url: str, text: str, timeout_seconds: float = 5.0) -> bool:
    """POST ``{"text": ...}`` (Slack incoming-webhook format); False on failure."""
    body = json.dumps({"text": text}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
            ok = 200 <= response.status < 300
        if not ok:
            log.warning("notifier answered HTTP %s", response.status)
        return ok
    except Exception as err:  # a notifier outage must not fail the pipeline
        log.warning("notifier POST failed (%s): %s", type(err).__name__, err)
        return False
