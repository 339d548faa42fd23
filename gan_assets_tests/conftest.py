"""Shared fixtures: a real S3 HTTP endpoint (moto's server on 127.0.0.1), local resources."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest


# The smallest training config that still runs every layer: 32 x 32 images, narrow networks,
# four steps on the CPU. Tests change what they are about with ``tiny_training(steps=6)``.
TINY_TRAINING: dict[str, Any] = {
    "image_size": 32, "latent_dim": 16, "generator_width": 8, "discriminator_width": 8,
    "batch_size": 8, "steps": 4, "log_every": 2, "device": "cpu",
}
TINY_GENERATION: dict[str, Any] = {"num_samples": 8}


def tiny_training(**changes: Any) -> dict[str, Any]:
    """The tiny training config's values (for gan_config, TrainConfig or an env override), with ``changes``."""
    return {**TINY_TRAINING, **changes}


def tiny_train_config(**changes: Any) -> Any:
    """The tiny training config as the cores receive it (a TrainConfig)."""
    from gan_assets.model.config import TrainConfig

    return TrainConfig(**tiny_training(**changes))


def tiny_config_resources(training: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None,
                          generation: dict[str, Any] | None = None, mutation_policy: str = "") -> dict[str, Any]:
    """gan_config (tiny), evaluation_config, generation_config (8 samples) and retrain_policy, each with its changes."""
    from gan_assets.resources import EvaluationBar, GanConfig, GenerationSettings, RetrainPolicy

    return {
        "gan_config": GanConfig(**tiny_training(**(training or {}))),
        "evaluation_config": EvaluationBar(**(evaluation or {})),
        "generation_config": GenerationSettings(**{**TINY_GENERATION, **(generation or {})}),
        "retrain_policy": RetrainPolicy(mutation_policy=mutation_policy),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# moto accepts any credentials; they are passed to each client and resource, never set for the
# whole process, so no test can reach a real AWS account with a developer's own credentials.
MOTO_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


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


@contextlib.contextmanager
def gate_that_sees() -> Iterator[None]:
    """The evaluation gate, told that its controls discriminate (threshold and verdicts unchanged).

    For tests of the retrain loop and of delivery, not of the gate: their tiny untrained
    generators and blob images cannot make an honest gate discriminative, and an absolute
    threshold the test chooses must decide pass or fail. The gate itself is tested in
    test_evaluation_core.py.
    """
    from gan_assets.metrics import evaluation

    honest = evaluation.gate_verdict

    def seeing(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(honest(*args, **kwargs), discriminative=True, reasons=())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluation, "gate_verdict", seeing)
        yield


@pytest.fixture
def seeing_gate() -> Iterator[None]:
    with gate_that_sees():
        yield


def seed_unused_extractor(root: Path, months: list[str]) -> None:
    """Store fid_feature_extractor's placeholder (kind is not 'domain') for ``months`` under ``root``.

    For tests that score with ``fid_extractor.kind='random_conv'`` and stand in for the upstream
    assets: fid_score reads this input, and ignores it for that kind.
    """
    from gan_assets.storage import TensorBundle, encode, store_from_uri

    store = store_from_uri(str(root))
    for month in months:
        ext, data = encode(TensorBundle(tensors={}, attrs={"unused": True, "kind": "random_conv", "partition": month}))
        store.put(f"fid_feature_extractor/{month}.{ext}", data)


def seed_zone_index(root: Any) -> None:
    """An empty landing_zone_index where ingest stores it, for tests that seed a month's upstream
    objects by hand (the report reads the zone's counts from it). ``root``: a folder or an ObjectStore."""
    from gan_assets.dicom.index import empty_index
    from gan_assets.storage import ObjectStore, encode, store_from_uri

    store = root if isinstance(root, ObjectStore) else store_from_uri(str(root))
    ext, data = encode(empty_index())
    store.put(f"landing_zone_index.{ext}", data)


def stored_object_texts(path: Path) -> list[str]:
    """A stored artifact as every text a leak could hide in: raw bytes, decoded arrays and attributes.

    npz strings are UTF-32, so string arrays are decoded too, not only searched as bytes.
    """
    import json

    from gan_assets.storage import ArrayBundle, decode

    data = path.read_bytes()
    texts = [data.decode("latin-1")]
    if path.suffix == ".sha256":  # the recorded hash of an object beside it: hex text only
        return texts
    value = decode(path.suffix[1:], data, where=str(path))
    if isinstance(value, ArrayBundle):
        texts.append(json.dumps(value.attrs))
        for array in value.arrays.values():
            texts.append(" ".join(map(str, array.ravel().tolist())) if array.dtype.kind == "U" else array.tobytes().decode("latin-1"))
    elif hasattr(value, "schema") and hasattr(value, "to_pandas"):  # a Parquet table: cells and schema metadata
        texts.append(value.to_pandas().to_csv())
        texts.append(json.dumps({k.decode("latin-1"): v.decode("latin-1") for k, v in (value.schema.metadata or {}).items()}))
    else:
        texts.append(value.to_csv() if hasattr(value, "to_csv") else str(value))
    return texts


def ingest_assets() -> list[Any]:
    """The ingest stage as a month's run materializes it: zone, index, manifest, images."""
    from gan_assets.assets.ingest import dicom_manifest, dicom_source, landing_zone_index, preprocessed_images

    return [dicom_source, landing_zone_index, dicom_manifest, preprocessed_images]


def ingest_resources(zone: Path | str, artifacts: Path, image_size: int = 32, **preprocess: Any) -> dict[str, Any]:
    """Local resources for ingest_assets(); preprocess_config runs in-process unless told otherwise."""
    from gan_assets.io_managers import ArtifactStorage
    from gan_assets.resources import GanConfig, PreprocessConfig, dicom_source_from_env

    return {
        "io_manager": ArtifactStorage(root=str(artifacts)),
        "artifact_store": ArtifactStorage(root=str(artifacts)),
        # As a deployment builds it: the pseudonym key is the one a test sets in the environment.
        "dicom_source": dicom_source_from_env(str(zone)),
        "preprocess_config": PreprocessConfig(**{"workers": 1, **preprocess}),
        "gan_config": GanConfig(image_size=image_size),
    }


def run_haystacks(instance: Any, result: Any, artifacts: Path) -> dict[str, str]:
    """Every text a run left where a leak could hide: its event log, its materializations'
    metadata and every stored artifact (see stored_object_texts), keyed by where it was found."""
    import json

    haystacks: dict[str, str] = {}
    for i, entry in enumerate(instance.all_logs(result.run_id)):
        haystacks[f"event {i}"] = " ".join([entry.user_message or "", str(entry.dagster_event or "")])
    for event in result.get_asset_materialization_events():
        haystacks[f"metadata {event.asset_key.to_user_string()}"] = json.dumps(
            {k: str(v.value) for k, v in event.materialization.metadata.items()})
    for path in sorted(p for p in artifacts.rglob("*") if p.is_file()):
        for j, text in enumerate(stored_object_texts(path)):
            haystacks[f"{path.name}#{j}"] = text
    return haystacks


def assert_nothing_leaked(haystacks: dict[str, str], needles: set[str], caplog: Any, capfd: Any) -> None:
    """Add the run's Python logs and captured output to ``haystacks``, then require no needle in any."""
    captured = capfd.readouterr()
    haystacks["python logging"] = caplog.text
    haystacks["stdout+stderr"] = captured.out + captured.err
    # The search covers what ingest printed: the logs must hold its lines at all.
    assert "preprocessed_images" in haystacks["python logging"] + haystacks["stdout+stderr"]
    leaks = [(where, needle) for where, text in haystacks.items() for needle in needles if needle in text]
    assert leaks == []
