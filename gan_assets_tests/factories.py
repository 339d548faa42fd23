"""Plain helpers every test module may import: the tiny configs, upstream data seeded as its
owners store it, the ingest stage and its leak search, and hostile DICOM built from real files.

Fixtures live in conftest.py (which may import from here); no test module imports another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from gan_assets.demo.phantom import PHI_MARKER, SliceSpec, ct_dataset, phi_values
from gan_assets.dicom.scan import MANIFEST_COLUMNS
from gan_assets.io_managers import ArtifactStorage
from gan_assets.jobs import retrain_job
from gan_assets.metrics.controls import NEGATIVE_CONTROLS
from gan_assets.metrics.evaluation import ControlScore, FidScore, GateVerdict, MemorizationVerdict
from gan_assets.model.dcgan import build_generator
from gan_assets.model.history import PromotedModel, promote, save_attempt
from gan_assets.partitions import monthly_partitions
from gan_assets.resources import FidExtractor
from gan_assets.sensors import retrain_on_fid_failure
from gan_assets.storage import ArrayBundle, Blob, ObjectStore, TensorBundle, encode, store_from_uri
from gan_assets.storage.digest import state_dict_sha256
from gan_assets.storage.images import encoding_attrs, pack_images
from gan_assets.storage.layout import value_key


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


def tiny_config_overrides(**changes: Any) -> dict[str, Any]:
    """The tiny config as GAN_ASSETS_CONFIG_OVERRIDES takes it (training and generation fields), with ``changes``."""
    return {**TINY_TRAINING, **TINY_GENERATION, **changes}


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


# moto accepts any credentials; they are passed to each client and resource, never set for the
# whole process, so no test can reach a real AWS account with a developer's own credentials.
MOTO_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebhookReceiver:
    """A webhook endpoint on 127.0.0.1 that records each POST and answers with ``status``.

    Serves from start() until close(); the ``webhook`` fixture does both.
    """

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Shaped like a Slack incoming-webhook URL, secret token included: tests check it is never stored.
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000?token=abc"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def received(self) -> list[dict[str, Any]]:
        """Each request's JSON body."""
        return [json.loads(r["body"]) for r in self.requests]

    def texts(self) -> list[str]:
        """Each message's text (Slack's ``text`` field)."""
        return [body["text"] for body in self.received]


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


def seed_artifact(root: Path | ObjectStore, asset: str, partition: str | None, value: Any) -> None:
    """Store ``value`` as ``asset``'s output for ``partition`` (None: an unpartitioned asset), in the
    format and under the key the IO manager uses (the product's encode and layout.value_key), through
    the hash-recording store, so that the IO manager loads it as the owner's output.

    Every seeder below writes through here. ``root``: a folder, or an ObjectStore (an S3 prefix, say).
    """
    store = root if isinstance(root, ObjectStore) else store_from_uri(str(root))
    ext, data = encode(value)
    store.put(value_key(asset, partition, ext), data)


def seed_images(root: Path | ObjectStore, partition: str, images: np.ndarray, *, ids: Any = None,
                **attrs: Any) -> ArrayBundle:
    """preprocessed_images of ``partition`` as ingest stores it: ``images`` (N x H x W in [-1, 1]) packed
    to uint8, their ids (``{partition}-{i}`` unless given), the encoding attrs, image_size, partition
    and any further ``attrs``."""
    count, size = len(images), images.shape[-1]
    bundle = ArrayBundle(
        arrays={"images": pack_images(images),
                "ids": np.array(list(ids) if ids is not None else [f"{partition}-{i}" for i in range(count)],
                                dtype=np.str_)},
        attrs={**encoding_attrs(), "image_size": size, "partition": partition, **attrs},
    )
    seed_artifact(root, "preprocessed_images", partition, bundle)
    return bundle


def seed_unused_extractor(root: Path | ObjectStore, months: list[str]) -> None:
    """Store fid_feature_extractor's placeholder (kind is not 'domain') for ``months`` under ``root``.

    For tests that score with ``fid_extractor.kind='random_conv'`` and stand in for the upstream
    assets: fid_score reads this input, and ignores it for that kind.
    """
    for month in months:
        seed_artifact(root, "fid_feature_extractor", month,
                      TensorBundle(tensors={}, attrs={"unused": True, "kind": "random_conv", "partition": month}))


def seed_zone_index(root: Path | ObjectStore) -> None:
    """An empty landing_zone_index where ingest stores it, for tests that seed a month's upstream
    objects by hand (the report reads the zone's counts from it)."""
    from gan_assets.dicom.index import empty_index

    seed_artifact(root, "landing_zone_index", None, empty_index())


UPSTREAM = ("dicom_manifest", "preprocessed_images", "trained_generator", "fid_score")
# PHI-looking values of the "source" month: none may reach a synthetic file.
SOURCE_IDS = ("pid-7f3a9c", "pid-0b12de", "pid-99aa01", "pid-5c5c5c")


def upstream_specs() -> list[dg.AssetSpec]:
    """Stand-ins for the upstream assets: loaded through the IO manager from seeded objects."""
    return [dg.AssetSpec(key, partitions_def=monthly_partitions) for key in UPSTREAM] + [dg.AssetSpec("landing_zone_index")]


def fid_score_value(partition: str, *, fid: float = 41.5, kid: float = 0.0123, passed: bool = True,
                    attempt: int = 1, max_attempts: int = 3, status: str | None = None,
                    config_diff: dict[str, Any] | None = None) -> dict[str, Any]:
    """A stored fid_score as the evaluation core writes it (FidScore.to_dict()), with chosen figures."""
    config = tiny_train_config().to_dict()
    threshold = 100.0
    controls = tuple(
        [ControlScore(name, "negative", 150.0 + 10 * i, 0.2, False) for i, name in enumerate(NEGATIVE_CONTROLS)]
        + [ControlScore("held_out_real", "positive", 12.5, 0.001, True)]
    )
    score = FidScore(
        fid=fid, kid_mean=kid, kid_std=0.002, kid_subsets=10, kid_subset_size=8, floor_fid=12.25, floor_kid=0.001,
        floor_kid_std=0.0005, floor_half_size=12, threshold=threshold, threshold_rule="absolute",
        status=status or ("passed" if passed else "failed"), attempt=attempt, max_attempts=max_attempts,
        n_real=24, n_reference=12, n_fake=12, feature_dim=64, small_sample=True, controls=controls,
        gate=GateVerdict(threshold=threshold, threshold_rule="absolute", rule="absolute: fid_threshold = 100",
                         discriminative=True, separation=12.0, min_separation=2.0),
        memorization=MemorizationVerdict(0.0, 0.01, False, {  # the shape memorization_report returns
            "threshold": 0.05, "n_generated": 12, "n_training": 24, "training_partitions": [partition],
            "feature_space": {"near_copies": 0, "near_copy_fraction": 0.0, "min_distance": 0.31},
            "pixel_space": {"near_copies": 0, "near_copy_fraction": 0.0, "min_distance": 0.42},
            "closest": [{"generated": 3, "training_id": "img007", "distance": 0.31}],
        }),
        fingerprint={"extractor": "offline-default", "feature_dim": 64, "id": "fp-test", "n_real": 12},
        extractor="offline-default", partition=partition, config=config, config_diff=config_diff or {},
    )
    return score.to_dict()


def seed_month(root: Path | ObjectStore, partition: str, *, modality: str = "MR",
               fid_score: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """Write the four upstream artifacts of one month as the IO manager would store them."""
    store = root if isinstance(root, ObjectStore) else store_from_uri(str(root))
    rng = np.random.default_rng(seed)
    n = 24
    # Smooth blobs rather than white noise: a recognisable "real" grid in the report.
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    real = np.stack([np.sin(3 * xx * (i % 5 + 1) + yy * (i % 3)) * 0.8 + rng.normal(0, 0.05, (32, 32))
                     for i in range(n)])
    preprocessed = seed_images(store, partition, real, ids=[f"img{i:03d}" for i in range(n)])
    torch.manual_seed(seed)
    config = tiny_train_config()
    generator = build_generator(config)
    trained = TensorBundle(
        tensors=generator.state_dict(),
        attrs={
            "config": config.to_dict(), "attempt": (fid_score or {}).get("attempt", 1),
            "data_fingerprint": {"partitions": {partition: n}, "n_images": n},
            "loss_history": {"step": [2, 4], "loss_d": [1.38, 1.21], "loss_g": [0.71, 0.93]},
            "timings": {"train_seconds": 0.5, "images_per_second": 64.0}, "device": "cpu",
        },
    )
    manifest = pd.DataFrame({
        "id": list(SOURCE_IDS),
        "modality": [modality, modality, "CT", modality],
        "rows": [32] * 4, "columns": [32] * 4, "frames": [1] * 4,
        "transfer_syntax": ["1.2.840.10008.1.2.1"] * 4, "photometric": ["MONOCHROME2"] * 4,
        "status": ["ok", "ok", "ok", "rejected"],
        "reason": ["", "", "", "unsupported photometric interpretation"],
    })
    values = {
        "preprocessed_images": preprocessed,
        "trained_generator": trained,
        "dicom_manifest": manifest,
        "fid_score": fid_score if fid_score is not None else fid_score_value(partition),
    }
    for asset in ("trained_generator", "dicom_manifest", "fid_score"):
        seed_artifact(store, asset, partition, values[asset])
    seed_zone_index(store)
    # The model history as trained_generator and a passing fid_score leave it.
    attempt = int(trained.attrs["attempt"])
    key = save_attempt(store, partition, attempt, "seededrun", trained)
    if values["fid_score"].get("passed"):
        promote(store, PromotedModel(
            partition=partition, attempt=attempt, training_run_id="seededrun", scoring_run_id="seededrun",
            weights_key=key, weights_sha256=state_dict_sha256(trained.tensors), data_sha256="seeded-window",
            code_version="seeded", fid=values["fid_score"].get("fid"), kid_mean=values["fid_score"].get("kid_mean")))
    return values


def delivery_resources(root: Path, **generation: Any) -> dict[str, Any]:
    """Local IO manager and artifact store under ``root`` and the tiny configs: for the delivery assets on seeded months."""
    return {
        "io_manager": ArtifactStorage(root=str(root)),
        "artifact_store": ArtifactStorage(root=str(root)),
        **tiny_config_resources(generation=generation),
    }


# Images per month that seed_preprocessed_images writes unless told otherwise.
N_IMAGES = 24


def seed_preprocessed_images(root: Path, months: list[str], n: int = N_IMAGES, size: int = 32,
                             oriented: bool = False) -> None:
    """Write dicom_manifest and preprocessed_images as ingest would: soft blobs on a dark field.

    ``oriented`` adds what an honest gate needs to see anything: a bright band at the top (so
    upside-down images differ) and fine texture (so blurred images differ).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for index, month in enumerate(months):
        rng = np.random.default_rng(100 + index)
        images = []
        for _ in range(n):
            cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
            radius = rng.uniform(size * 0.12, size * 0.28)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
            if oriented:
                image = (blob * 1.8 - 0.9 + rng.normal(0, 0.25, blob.shape) + 0.3 * np.sin(xx * 2.5) * np.sin(yy * 2.5)
                         + 0.8 * (yy < size * 0.25))
            else:
                image = blob * 1.8 - 0.9 + rng.normal(0, 0.04, blob.shape)
            images.append(np.clip(image, -1, 1))
        seed_images(root, month, np.stack(images), ids=[f"{month}-{i:03d}" for i in range(n)], n_images=n)
        # The month's manifest, as ingest writes it: generated_samples and the report read it.
        manifest = pd.DataFrame([{column: "" for column in MANIFEST_COLUMNS} | {
            "id": f"{month}-{i:03d}", "month": month, "modality": "MR", "rows": size, "columns": size,
            "frames": 1, "samples_per_pixel": 1, "bits_allocated": 16, "file_bytes": 4096,
            "transfer_syntax": "1.2.840.10008.1.2.1", "photometric": "MONOCHROME2", "status": "ok",
        } for i in range(n)], columns=list(MANIFEST_COLUMNS))
        seed_artifact(root, "dicom_manifest", month, manifest)
    seed_unused_extractor(root, months)
    seed_zone_index(root)


def loop_defs(artifacts: Path) -> dg.Definitions:
    """The project's assets, checks, retrain job and sensor; artifacts under ``artifacts``, the configs from env."""
    from gan_assets import definitions

    return dg.Definitions(
        assets=list(definitions.defs.assets or []),
        asset_checks=list(definitions.defs.asset_checks or []),
        jobs=[retrain_job],
        sensors=[retrain_on_fid_failure],
        resources={
            **definitions.resources_for("local"),
            "io_manager": ArtifactStorage(root=str(artifacts)),
            "artifact_store": ArtifactStorage(root=str(artifacts)),
            # The honest gate on the random conv net: these images were made for it to see.
            "fid_extractor": FidExtractor(kind="random_conv"),
        },
    )


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
    assert_no_needles(haystacks, needles, caplog.text, captured.out + captured.err)


def assert_no_needles(haystacks: dict[str, str], needles: set[str], log_text: str, output: str) -> None:
    """Add the run's Python log text and its stdout + stderr to ``haystacks``, then require no needle in any."""
    haystacks["python logging"] = log_text
    haystacks["stdout+stderr"] = output
    # The search covers what ingest printed: the logs must hold its lines at all.
    assert "preprocessed_images" in haystacks["python logging"] + haystacks["stdout+stderr"]
    leaks = [(where, needle) for where, text in haystacks.items() for needle in needles if needle in text]
    assert leaks == []


@dataclasses.dataclass
class CapturedOutput:
    """What capture_logs_and_output saw: the Python log records as text, and stdout + stderr."""
    log_text: str = ""
    output: str = ""


@contextlib.contextmanager
def capture_logs_and_output(levels: dict[str, int]) -> Iterator[CapturedOutput]:
    """Python logging (``levels``: logger name to level, "" the root) and all that reaches stdout and
    stderr, Python's streams and file descriptors 1 and 2 alike: caplog and capfd for a fixture
    wider than one test. The text is there once the block has ended."""
    captured = CapturedOutput()
    log_stream = io.StringIO()
    handler = logging.StreamHandler(log_stream)
    handler.setFormatter(logging.Formatter("%(levelname)-8s %(name)s:%(filename)s:%(lineno)d %(message)s"))
    saved_levels = {name: logging.getLogger(name or None).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    logging.getLogger().addHandler(handler)
    sink = tempfile.TemporaryFile()
    stream = io.TextIOWrapper(sink, encoding="utf-8", errors="replace", write_through=True)
    saved_streams = (sys.stdout, sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = (os.dup(1), os.dup(2))
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        sys.stdout = sys.stderr = stream
        yield captured
    finally:
        stream.flush()
        sys.stdout, sys.stderr = saved_streams
        for fd, saved in zip((1, 2), saved_fds):
            os.dup2(saved, fd)
            os.close(saved)
        logging.getLogger().removeHandler(handler)
        for name, level in saved_levels.items():
            logging.getLogger(name or None).setLevel(level)
        sink.seek(0)
        captured.output = sink.read().decode("utf-8", errors="replace")
        stream.detach()
        sink.close()
        captured.log_text = log_stream.getvalue()


# The hostile month's files are dated (mtime) inside January 2026.
HOSTILE_MONTH_TIME = dt.datetime(2026, 1, 20, 12, tzinfo=dt.timezone.utc).timestamp()
# Planted in every hostile path: it must never reach an artifact, the metadata or a log.
PATH_MARKER = "zqxpath"
# The deflate bomb inflates to this; the test's limit is a quarter of it.
BOMB_BYTES = 256 * 1024 * 1024
TEST_MAX_DECODED = 64 * 1024 * 1024


def hostile_ct(patient: int, size: int = 32, **fields: Any) -> Dataset:
    """A phantom CT slice of January 2026 (identifiers planted), header ``fields`` set, or removed where None."""
    ds = ct_dataset(SliceSpec(3, patient, dt.date(2026, 1, 10 + patient % 15), patient, size, False, False))
    for keyword, value in fields.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    """The dataset as a DICOM Part 10 file."""
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def raw_part10_file(ds: Dataset, meta_syntax: str, *, implicit: bool, body: bytes | None = None,
              preamble: bool = True, deflate: bool = False) -> bytes:
    """A Part 10 file assembled by hand: file meta saying ``meta_syntax``, body encoded as asked."""
    meta = FileMetaDataset(ds.file_meta)
    meta.TransferSyntaxUID = meta_syntax
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_file_meta_info(head, meta, enforce_standard=True)
    if body is None:
        plain = DicomBytesIO()
        plain.is_little_endian, plain.is_implicit_VR = True, implicit
        write_dataset(plain, ds)
        body = plain.getvalue()
    if deflate:
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = packer.compress(body) + packer.flush()
    return (b"\x00" * 128 + b"DICM" if preamble else b"") + head.getvalue() + body


def deflate_bomb(ds: Dataset) -> bytes:
    """A deflated dataset whose pixel data inflates to BOMB_BYTES (compressed it is ~250 KB)."""
    header = ds.copy()
    del header.PixelData
    plain = DicomBytesIO()
    plain.is_little_endian, plain.is_implicit_VR = True, False
    write_dataset(plain, header)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [packer.compress(plain.getvalue() + b"\xe0\x7f\x10\x00OB\x00\x00" + BOMB_BYTES.to_bytes(4, "little"))]
    zeros = bytes(1 << 22)
    for _ in range(BOMB_BYTES // len(zeros)):
        parts.append(packer.compress(zeros))
    parts.append(packer.flush())
    return raw_part10_file(ds, DeflatedExplicitVRLittleEndian, implicit=False, body=b"".join(parts))


def cut_before_pixels(data: bytes) -> bytes:
    return data[: data.rindex(b"\xe0\x7f\x10\x00")]


def corrupt_sop_class_length(data: bytes) -> bytes:
    """One length byte of SOPClassUID raised: its value swallows the elements that follow."""
    at = data.index(b"\x08\x00\x16\x00UI")
    out = bytearray(data)
    out[at + 7] = 0x01  # length += 256
    return bytes(out)


def float_pixels(ds: Dataset, values: np.ndarray) -> Dataset:
    ds = ds.copy()
    del ds.PixelData
    for keyword in ("PixelRepresentation", "BitsStored", "HighBit", "RescaleSlope", "RescaleIntercept",
                    "RescaleType", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.astype("<f4").tobytes()
    return ds


# (case name, builder of the file's bytes from a fresh dataset, expected final reason; "" = used)
def hostile_cases() -> list[tuple[str, Callable[[Dataset], bytes], str]]:
    tall = np.zeros((30000, 2), np.uint16)
    return [
        ("frames_huge", lambda ds: dicom_bytes(with_fields(ds, NumberOfFrames="99999999999999999999")), "invalid_image_header"),
        ("window_1e308", lambda ds: dicom_bytes(with_fields(ds, WindowWidth="1e308")), ""),
        ("slope_overflow", lambda ds: dicom_bytes(with_fields(ds, RescaleSlope="1e308")), "non_finite"),
        ("tall_30000x2", lambda ds: dicom_bytes(with_fields(ds, Rows=30000, Columns=2, PixelData=tall.tobytes())), "too_small"),
        ("tall_8000x16", lambda ds: dicom_bytes(with_fields(ds, Rows=9000, Columns=16, PixelData=bytes(9000 * 16 * 2))), "too_large"),
        ("tall_30000x20", lambda ds: dicom_bytes(with_fields(ds, Rows=30000, Columns=20, PixelData=np.zeros((30000, 20), np.uint16).tobytes())), "too_large"),
        ("tall_65535x1", lambda ds: dicom_bytes(with_fields(ds, Rows=65535, Columns=1, PixelData=bytes(131070))), "too_small"),
        ("declared_huge", lambda ds: dicom_bytes(with_fields(ds, Rows=65535, Columns=65535, NumberOfFrames="1000")), "too_large"),
        ("tiny_3x3", lambda ds: dicom_bytes(with_fields(ds, Rows=3, Columns=3, PixelData=bytes(18))), "too_small"),
        ("deflate_bomb", deflate_bomb, "too_large"),
        ("deflated_ok", lambda ds: raw_part10_file(ds, DeflatedExplicitVRLittleEndian, implicit=False, deflate=True), ""),
        ("burned_yes_no", lambda ds: dicom_bytes(with_fields(ds, BurnedInAnnotation=["YES", "NO"])), "burned_in_annotation"),
        ("burned_lower_no", lambda ds: dicom_bytes(with_fields(ds, BurnedInAnnotation="no")), "burned_in_annotation"),
        ("burned_missing", lambda ds: dicom_bytes(with_fields(ds, BurnedInAnnotation=None)), ""),
        ("sop_class_length", lambda ds: corrupt_sop_class_length(dicom_bytes(ds)), "*"),
        ("modality_is_a_name", lambda ds: dicom_bytes(with_fields(ds, Modality=f"{PHI_MARKER}^DOE")), ""),
        ("photometric_is_a_name", lambda ds: dicom_bytes(with_fields(ds, PhotometricInterpretation=f"{PHI_MARKER}DOE")), "invalid_image_header"),
        ("syntax_is_a_name", lambda ds: raw_part10_file(ds, f"1.2.{PHI_MARKER}", implicit=False), "no_decoder"),
        ("float_pixels", lambda ds: dicom_bytes(float_pixels(ds, np.linspace(-5, 5, 32 * 32).reshape(32, 32))), ""),
        ("float_nan", lambda ds: dicom_bytes(float_pixels(ds, np.full((32, 32), np.nan))), "non_finite"),
        ("implicit_under_explicit", lambda ds: raw_part10_file(ds, ExplicitVRLittleEndian, implicit=True), ""),
        ("no_preamble", lambda ds: raw_part10_file(ds, ExplicitVRLittleEndian, implicit=False, preamble=False), ""),
        ("header_only", lambda ds: cut_before_pixels(dicom_bytes(ds)), "truncated"),
        ("not_dicom", lambda ds: f"{PHI_MARKER} plain text, not DICOM\n".encode() * 20, "not_dicom"),
        ("empty", lambda ds: b"", "not_dicom"),
    ]


def with_fields(ds: Dataset, **fields: Any) -> Dataset:
    ds = ds.copy()
    for keyword, value in fields.items():
        if value is None:
            delattr(ds, keyword)
        elif keyword == "NumberOfFrames":
            ds.add_new(0x00280008, "IS", value)
        else:
            setattr(ds, keyword, value)
    return ds


def touch_to_month(path: Path | str | bytes) -> None:
    os.utime(path, (HOSTILE_MONTH_TIME, HOSTILE_MONTH_TIME), follow_symlinks=False)


def planted_needles(datasets: list[Dataset], names: list[str]) -> set[str]:
    needles = {PHI_MARKER, PATH_MARKER}
    for ds in datasets:
        # Distinctive values only: a PatientID of "000000000" would match any number.
        needles.update(value for value in phi_values(ds) if len(value) >= 6 and len(set(value)) > 3)
    needles.update(names)
    return needles


def build_hostile_zone(root: Path, outside: Path) -> tuple[dict[str, str], list[Dataset]]:
    """The hostile month: three good files, every crafted case, and the filesystem oddities."""
    expected: dict[str, str] = {}
    datasets: list[Dataset] = []
    zone = root / f"{PATH_MARKER}_DOE^JOHN_123456"
    zone.mkdir(parents=True)
    for i in range(3):
        ds = hostile_ct(40 + i)
        datasets.append(ds)
        rel = f"{PATH_MARKER}_DOE^JOHN_123456/good_{i}.dcm"
        (root / rel).write_bytes(dicom_bytes(ds))
        expected[rel] = ""
    for i, (name, build, code) in enumerate(hostile_cases()):
        ds = hostile_ct(i + 1)
        datasets.append(ds)
        rel = f"{PATH_MARKER}_DOE^JOHN_123456/{PATH_MARKER}_{name}.dcm"
        (root / rel).write_bytes(build(ds))
        expected[rel] = code
    fifo = f"{PATH_MARKER}_fifo.dcm"
    os.mkfifo(root / fifo)
    expected[fifo] = "not_regular_file"
    ds = hostile_ct(90)
    datasets.append(ds)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "elsewhere.dcm").write_bytes(dicom_bytes(ds))
    os.symlink(outside / "elsewhere.dcm", root / f"{PATH_MARKER}_link_out.dcm")
    expected[f"{PATH_MARKER}_link_out.dcm"] = "outside_zone"
    os.symlink(outside, root / f"{PATH_MARKER}_folder_link")
    expected[f"{PATH_MARKER}_folder_link"] = "outside_zone"
    os.symlink(root / "nowhere.dcm", root / f"{PATH_MARKER}_dangling.dcm")
    expected[f"{PATH_MARKER}_dangling.dcm"] = "missing"
    os.symlink(root / f"{PATH_MARKER}_DOE^JOHN_123456" / "good_0.dcm", root / f"{PATH_MARKER}_link_in.dcm")
    expected[f"{PATH_MARKER}_link_in.dcm"] = "duplicate"  # same image as good_0, read through the link
    bad = os.fsencode(str(root)) + b"/" + PATH_MARKER.encode() + b"_\xff\xfe_name.dcm"
    with open(bad, "wb") as handle:
        handle.write(dicom_bytes(hostile_ct(91)))
    expected[os.fsdecode(bad)[len(str(root)) + 1:]] = "bad_name"
    for path in [root, *root.rglob("*")]:
        touch_to_month(path)
    touch_to_month(bad)
    return expected, datasets


# One value of every stored type, for the storage and IO-manager round trips.
PNG_BYTES = bytes.fromhex("89504e470d0a1a0a") + b"\x00\x00\x00\rIHDR" + bytes(range(40))


class Opaque:
    """A custom class: has no open format, so it must never be stored (or smuggled in a pickle)."""

    def __init__(self) -> None:
        self.secret = 42


def sample_values() -> dict[str, Any]:
    """One value of every stored type, with awkward contents where a format could go wrong."""
    rng = np.random.default_rng(0)
    return {
        "array_bundle": ArrayBundle(
            arrays={
                "images": rng.integers(0, 256, size=(5, 8, 8), dtype=np.uint8),
                "ids": np.array(["a1", "b22", "", "ünïcode", "x" * 40], dtype=np.str_),
                "scores": rng.normal(size=5).astype(np.float32),
            },
            attrs={**encoding_attrs(), "image_size": 8, "partition": "2026-01-01", "nested": {"k": [1, 2]}},
        ),
        "ndarray": rng.normal(size=(3, 4)),
        "tensor_bundle": TensorBundle(
            tensors={
                "main.0.weight": torch.randn(4, 3, 2, 2),
                "main.1.running_mean": torch.zeros(4),
                "main.1.num_batches_tracked": torch.tensor(7),
            },
            attrs={"config": {"lr": 2e-4, "beta1": 0.5}, "attempt": 2, "loss_history": {"step": [0, 2]}},
        ),
        "json_dict": {"fid": 12.5, "passed": True, "status": "passed", "nested": {"list": [1, "two", None]}},
        "json_list": [1, 2.5, "three", {"four": 4}, None, False],
        "dataframe": pd.DataFrame(
            {
                "id": ["001", "002", "", "NA"],  # numeric-looking, empty and NA-looking strings
                "rows": [512, 256, 0, -1],
                "ratio": [0.1, np.nan, 1 / 3, 2.0],
                "ok": [True, False, True, False],
                "reason": [None, "not DICOM", "", 'comma, "quote"\nnewline'],
            }
        ),
        "arrow_table": pa.Table.from_pylist(
            [{"file_ref": "f1", "rows": 512}, {"file_ref": "f2", "rows": 0}],
            schema=pa.schema([pa.field("file_ref", pa.string(), nullable=False), pa.field("rows", pa.int64())],
                             metadata={"gan_assets.policy": "abc"}),
        ),
        "blob_png": Blob(PNG_BYTES, "png"),
        "blob_html": Blob("<html><body>héllo</body></html>".encode(), ".HTML"),
    }


VALUE_NAMES = list(sample_values())
EXPECTED_EXTENSION = {
    "array_bundle": "npz",
    "ndarray": "npy",
    "tensor_bundle": "safetensors",
    "json_dict": "json",
    "json_list": "json",
    "dataframe": "parquet",
    "arrow_table": "parquet",
    "blob_png": "png",
    "blob_html": "html",
}


def assert_same(expected: Any, actual: Any) -> None:
    """Exact equality for every stored type (dtype and shape included)."""
    assert type(actual) is type(expected)
    if isinstance(expected, ArrayBundle):
        assert actual.attrs == expected.attrs
        assert sorted(actual.arrays) == sorted(expected.arrays)
        for name, array in expected.arrays.items():
            assert actual.arrays[name].dtype == array.dtype, name
            np.testing.assert_array_equal(actual.arrays[name], array)
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, TensorBundle):
        assert actual.attrs == expected.attrs
        assert sorted(actual.tensors) == sorted(expected.tensors)
        for name, tensor in expected.tensors.items():
            assert actual.tensors[name].dtype == tensor.dtype, name
            assert torch.equal(actual.tensors[name], tensor), name
    elif isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(actual, expected, check_exact=True)
    elif isinstance(expected, pa.Table):
        assert actual.equals(expected, check_metadata=True)  # the declared schema comes back whole
    elif isinstance(expected, Blob):
        assert (actual.extension, actual.data) == (expected.extension, expected.data)
    else:
        assert actual == expected
