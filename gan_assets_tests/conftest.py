"""Shared fixtures: a real S3 HTTP endpoint (moto's server on 127.0.0.1), local resources.

Plain helpers and factories live in factories.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from gan_assets_tests.factories import MOTO_CREDENTIALS, WebhookReceiver, free_port, gate_that_sees


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3/CloudWatch server, started once per session on a free loopback port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    """A fresh bucket on the moto server (a new name per test keeps tests independent)."""
    name = f"gan-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_client(moto_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's credentials in the environment for one test, for code that reads the standard AWS
    chain on purpose (a deployment built from the environment, the CloudWatch sink)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3_settings(moto_endpoint: str) -> Any:
    """The storage core's settings for the moto server, credentials included (none from the environment)."""
    from gan_assets.storage import S3Settings

    return S3Settings(endpoint_url=moto_endpoint, region_name="us-east-1",
                      access_key_id=MOTO_CREDENTIALS["aws_access_key_id"],
                      secret_access_key=MOTO_CREDENTIALS["aws_secret_access_key"])


@pytest.fixture
def s3_resource(moto_endpoint: str) -> Any:
    """dagster-aws's S3Resource for the moto server, with explicit credentials."""
    from dagster_aws.s3 import S3Resource

    return S3Resource(endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models: a second intra-op thread only adds spin-waiting on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def artifacts_dir(tmp_path: Path) -> Path:
    path = tmp_path / "artifacts"
    path.mkdir()
    return path


@pytest.fixture
def seeing_gate() -> Iterator[None]:
    with gate_that_sees():
        yield


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A webhook receiver, serving for the test."""
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.close()
