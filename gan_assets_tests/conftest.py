"""Shared fixtures: a real S3 HTTP endpoint (moto's server on 127.0.0.1), local resources.

Plain helpers and factories live in factories.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from gan_assets_tests.factories import WebhookReceiver, free_port, gate_that_sees


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3/CloudWatch server, started once per session on a free loopback port."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
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
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_client(moto_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


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
