"""Tamper evidence: every stored artifact carries its SHA-256 and a changed byte is refused on load.

The bytes are changed behind the storage layer's back (the file on disk, or a raw PUT to the
S3 endpoint), as an interrupted copy, bit rot or a hand edit would change them.
"""

import hashlib
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch

from gan_assets.io_managers import ArtifactStorage
from gan_assets.partitions import monthly_partitions
from gan_assets.storage import ArrayBundle, ArtifactIntegrityError, Blob, TensorBundle, encode, store_from_uri

MONTH = "2026-02-01"
VALUES: dict[str, Any] = {
    "npz": ArrayBundle(arrays={"images": np.arange(64, dtype=np.uint8).reshape(1, 8, 8)}, attrs={"n": 1}),
    "safetensors": TensorBundle(tensors={"main.0.weight": torch.linspace(-1, 1, 48).reshape(4, 3, 2, 2)},
                                attrs={"attempt": 1}),
    "json": {"fid": 12.5, "status": "passed"},
    "parquet": pd.DataFrame({"id": ["a", "b", "c"], "status": ["ok", "ok", "rejected"]}),
    "npy": np.linspace(0, 1, 32),
    "png": Blob(b"\x89PNG\r\n\x1a\n" + bytes(range(64)), "png"),
    "html": Blob(b"<html><body>" + b"x" * 64 + b"</body></html>", "html"),
}


def _resources(backend: str, tmp_path: Path, request: Any = None) -> tuple[dict[str, Any], Any]:
    if backend == "local":
        storage = ArtifactStorage(root=str(tmp_path / "artifacts"))
    else:
        storage = ArtifactStorage(root=f"s3://{request.getfixturevalue('s3_bucket')}/gan",
                                  s3=request.getfixturevalue("s3_resource"))
    return {"io_manager": storage, "artifact_store": storage}, storage.object_store()


def _raw_bytes(uri: str, request: pytest.FixtureRequest) -> tuple[bytes, Any]:
    """The stored bytes and a function that overwrites them, bypassing the storage layer."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://"):].partition("/")
        client = request.getfixturevalue("s3_client")
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data, lambda new: client.put_object(Bucket=bucket, Key=key, Body=new)
    path = Path(uri)
    return path.read_bytes(), path.write_bytes


def _flip_last_byte(data: bytes) -> bytes:
    """One bit of the payload's last byte: the file still parses, only its content changed."""
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _assets(value: Any, seen: dict[str, Any]) -> list[dg.AssetsDefinition]:
    @dg.asset(partitions_def=monthly_partitions, key_prefix=["imaging"])
    def artifact() -> Any:
        """One value of a stored format."""
        return value

    @dg.asset(partitions_def=monthly_partitions, ins={"artifact": dg.AssetIn(key=["imaging", "artifact"])})
    def reader(context: dg.AssetExecutionContext, artifact: Any) -> None:
        """Records what it loaded."""
        seen[context.partition_key] = artifact

    return [artifact, reader]


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    texts = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            texts.append(f"{error.cls_name}: {error.message}")
            error = error.cause
    return "\n".join(texts)


@pytest.mark.parametrize("backend", ["local", "s3"])
@pytest.mark.parametrize("ext", list(VALUES))
def test_a_flipped_byte_in_any_format_is_refused_naming_asset_partition_and_remedy(
    backend: str, ext: str, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    resources, store = _resources(backend, tmp_path, request)
    seen: dict[str, Any] = {}
    artifact, reader = _assets(VALUES[ext], seen)
    written = dg.materialize([artifact], partition_key=MONTH, resources=resources)
    metadata = written.asset_materializations_for_node("imaging__artifact")[0].metadata
    uri = store.uri(f"imaging/artifact/{MONTH}.{ext}")
    assert metadata["uri"].value == uri and metadata["format"].value == ext
    good, overwrite = _raw_bytes(uri, request)
    assert metadata["sha256"].value == hashlib.sha256(good).hexdigest() == hashlib.sha256(encode(VALUES[ext])[1]).hexdigest()

    # Control: untouched, it loads.
    assert dg.materialize([artifact, reader], selection=[reader], partition_key=MONTH, resources=resources).success
    assert MONTH in seen
    seen.clear()

    overwrite(_flip_last_byte(good))
    result = dg.materialize([artifact, reader], selection=[reader], partition_key=MONTH, resources=resources,
                            raise_on_error=False)
    text = _failure_text(result)
    assert "ArtifactIntegrityError" in text
    assert f"imaging/artifact partition {MONTH} failed its integrity check" in text
    assert uri in text and f"Re-materialize imaging/artifact partition {MONTH}" in text
    assert seen == {}


def test_an_edited_manifest_row_is_not_trusted(tmp_path: Path) -> None:
    """A valid Parquet file with one row changed (a rejected image marked ok) is refused, not trained on."""
    resources, store = _resources("local", tmp_path)
    seen: dict[str, Any] = {}
    manifest = VALUES["parquet"]
    artifact, reader = _assets(manifest, seen)
    assert dg.materialize([artifact], partition_key=MONTH, resources=resources).success
    path = Path(store.uri(f"imaging/artifact/{MONTH}.parquet"))
    edited = manifest.copy()
    edited.loc[2, "status"] = "ok"
    path.write_bytes(encode(edited)[1])  # a well-formed file: only the hash can tell
    result = dg.materialize([artifact, reader], selection=[reader], partition_key=MONTH, resources=resources,
                            raise_on_error=False)
    assert f"imaging/artifact partition {MONTH} failed its integrity check" in _failure_text(result)
    assert seen == {}


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_bytes_replaced_with_their_sidecar_are_caught_by_the_event_log(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """Whoever rewrites an object and its sidecar together (through the store) still differs from
    the SHA-256 the materialization recorded in the instance's event log."""
    resources, store = _resources(backend, tmp_path, request)
    seen: dict[str, Any] = {}
    manifest = VALUES["parquet"]
    artifact, reader = _assets(manifest, seen)
    key = f"imaging/artifact/{MONTH}.parquet"
    with dg.DagsterInstance.ephemeral() as instance:
        written = dg.materialize([artifact], partition_key=MONTH, resources=resources, instance=instance)
        edited = manifest.copy()
        edited.loc[2, "status"] = "ok"
        store.put(key, encode(edited)[1])  # object and sidecar agree with each other
        result = dg.materialize([artifact, reader], selection=[reader], partition_key=MONTH, resources=resources,
                                instance=instance, raise_on_error=False)
        text = _failure_text(result)
        assert f"imaging/artifact partition {MONTH} failed its integrity check" in text
        assert f"latest materialization (run {written.run_id[:8]}) recorded" in text
        assert f"Re-materialize imaging/artifact partition {MONTH}" in text
        assert seen == {}
    # Control: an instance without that materialization has only the sidecar, which agrees.
    assert dg.materialize([artifact, reader], selection=[reader], partition_key=MONTH, resources=resources).success
    assert seen[MONTH]["status"].tolist() == ["ok", "ok", "ok"]


def test_an_object_without_a_recorded_hash_is_refused(tmp_path: Path) -> None:
    store = store_from_uri(str(tmp_path))
    store.put("asset/2026-01-01.json", b"{}")
    assert store.sha256("asset/2026-01-01.json") == hashlib.sha256(b"{}").hexdigest()
    (tmp_path / "asset/.2026-01-01.json.sha256").unlink()
    with pytest.raises(ArtifactIntegrityError, match=r"no SHA-256 was recorded for it.*Re-materialize"):
        store.get("asset/2026-01-01.json")
    # Writing through the store records it again; the sidecar never shows up as an object.
    store.put("asset/2026-01-01.json", b"{}")
    assert store.get("asset/2026-01-01.json") == b"{}"
    assert store.list("asset/") == ["asset/2026-01-01.json"]
