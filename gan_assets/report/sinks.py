"""Optional sinks: CloudWatch metrics and webhook notifications. Failures never raise.

A metrics or chat outage must never fail a training month, so every function here logs what
went wrong and returns ``False`` instead of raising.
"""

from __future__ import annotations

import http.client
import json
import logging
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

FID_METRIC = "FIDScore"
KID_METRIC = "KID"


def metric_dimensions(partition_key: str, model: str) -> list[dict[str, str]]:
    """CloudWatch dimensions of one month's scores (the same pair is used to read them back)."""
    return [{"Name": "Month", "Value": partition_key}, {"Name": "Model", "Value": model}]


def put_fid_metrics(*, namespace: str, region_name: str, endpoint_url: str | None,
                    partition_key: str, model: str, fid: float, kid: float) -> bool:
    """Put ``FIDScore`` and ``KID`` with dimensions Month and Model; False on failure."""
    try:
        import boto3

        client = boto3.client("cloudwatch", region_name=region_name, endpoint_url=endpoint_url)
        dimensions = metric_dimensions(partition_key, model)
        client.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {"MetricName": FID_METRIC, "Dimensions": dimensions, "Value": float(fid), "Unit": "None"},
                {"MetricName": KID_METRIC, "Dimensions": dimensions, "Value": float(kid), "Unit": "None"},
            ],
        )
        return True
    except Exception as err:  # a metrics outage must not fail a training month
        log.warning("CloudWatch put_metric_data failed (%s): %s", type(err).__name__, err)
        return False


def post_webhook(url: str, text: str, timeout_seconds: float = 5.0) -> bool:
    """POST ``{"text": ...}`` (Slack incoming-webhook format); False on failure."""
    body = json.dumps({"text": text}).encode()
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http(s)://host/..., got scheme {parts.scheme!r}")
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(parts.hostname, parts.port, timeout=timeout_seconds)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()  # drain so the connection closes cleanly
            status = response.status
        finally:
            connection.close()
        ok = 200 <= status < 300
        if not ok:
            log.warning("notifier at %s answered HTTP %s", parts.hostname, status)
        return ok
    except Exception as err:  # a notifier outage must not fail the pipeline
        log.warning("notifier POST failed (%s): %s", type(err).__name__, err)
        return False


def run_failure_message(job_name: str, partition_key: str | None, detail: str, run_url: str) -> str:
    """Short chat message for a failed run: what, which month, link to the run."""
    month = partition_key or "no month (unpartitioned run)"
    detail = " ".join(detail.split())
    if len(detail) > 300:  # a chat line, not a stack trace; the link has the rest
        detail = detail[:297] + "..."
    return f":x: gan-assets run `{job_name}` failed for month {month}: {detail} <{run_url}|open run>"


def delivery_message(partition_key: str, fid: float | None, threshold: float | None, kid: float | None,
                     attempts: int | None, report: str, asset_url: str) -> str:
    """Short chat message for a delivered month: its scores and where its report is."""
    def number(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    tries = f" after {attempts} attempt(s)" if attempts else ""
    return (f":white_check_mark: gan-assets month {partition_key[:7]} delivered{tries}: FID {number(fid, 3)} "
            f"(threshold {number(threshold, 3)}), KID {number(kid, 5)}. Report: {report} <{asset_url}|open in Dagster>")
