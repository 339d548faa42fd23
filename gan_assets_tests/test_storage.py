"""Storage core: codecs and object stores, locally and on a real S3 HTTP endpoint (moto server)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from gan_assets.storage import (
    ArrayBundle,
    Blob,
    ObjectStore,
    S3Settings,
    StorageFormatError,
    TensorBundle,
    decode,
    encode,
    store_from_uri,
)
from gan_assets.storage import stores as stores_module
from gan_assets.storage.codecs import StorageTypeError
from gan_assets.storage.images import encoding_attrs, pack_images, unpack_images
from gan_assets.storage.stores import ObjectNotFoundError
from gan_assets_tests.factories import EXPECTED_EXTENSION, VALUE_NAMES, Opaque, assert_same, sample_values


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """The same tests on a local folder and on S3 through s3fs (moto's server)."""
    if request.param == "local":
        return store_from_uri(str(tmp_path / "root"))
    bucket = request.getfixturevalue("s3_bucket")
    return store_from_uri(f"s3://{bucket}/gan/prefix", request.getfixturevalue("s3_settings"))


@pytest.mark.parametrize("name", VALUE_NAMES)
def test_codec_round_trip_in_memory(name: str) -> None:
    value = sample_values()[name]
    ext, data = encode(value)
    assert ext == EXPECTED_EXTENSION[name]
    assert_same(value, decode(ext, data))


@pytest.mark.parametrize("name", VALUE_NAMES)
def test_store_round_trip_every_type(store: ObjectStore, name: str) -> None:
    value = sample_values()[name]
    ext, data = encode(value)
    key = f"preprocessed_images/2026-01-01.{ext}"
    uri = store.put(key, data)
    assert uri == store.uri(key)
    assert uri == f"{store.root_uri}/{key}"  # one layout: {root}/{asset_key}/{partition}.{ext}
    assert store.exists(key)
    assert store.get(key) == data
    assert_same(value, decode(ext, store.get(key), where=uri))


def test_key_layout_is_the_same_on_both_backends(tmp_path: Path, s3_client: Any, s3_bucket: str,
                                                 s3_settings: S3Settings) -> None:
    local = store_from_uri(str(tmp_path))
    remote = store_from_uri(f"s3://{s3_bucket}/root/nested", s3_settings)
    keys = ["a/2026-01-01.npz", "a/2026-02-01.npz", "a/2026-02-01.png", "a/2026-02-01/grid.png", "b/c/x.json"]
    for key in keys:
        local.put(key, b"x")
        remote.put(key, b"x")
    assert local.list("") == remote.list("") == sorted(keys)
    assert local.list("a/2026-02-01.") == remote.list("a/2026-02-01.") == ["a/2026-02-01.npz", "a/2026-02-01.png"]
    assert local.list("a/") == remote.list("a/") == sorted(keys[:4])
    assert (tmp_path / "b/c/x.json").read_bytes() == b"x"
    assert s3_client.get_object(Bucket=s3_bucket, Key="root/nested/b/c/x.json")["Body"].read() == b"x"
    assert remote.uri("a/2026-01-01.npz") == f"s3://{s3_bucket}/root/nested/a/2026-01-01.npz"


def test_missing_object_and_delete(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError, match="2026-05-01.npz"):
        store.get("asset/2026-05-01.npz")
    with pytest.raises(FileNotFoundError):  # UPathIOManager's allow_missing_partitions relies on this
        store.get("asset/2026-05-01.npz")
    assert not store.exists("asset/2026-05-01.npz")
    store.put("asset/2026-05-01.npz", b"abc")
    store.put("asset/2026-05-01.npz", b"new")  # overwrite replaces
    assert store.get("asset/2026-05-01.npz") == b"new"
    store.delete("asset/2026-05-01.npz")
    store.delete("asset/2026-05-01.npz")  # deleting twice is fine
    assert not store.exists("asset/2026-05-01.npz")
    assert store.list("asset/") == []


@pytest.mark.parametrize("bad_key", ["", "/", "a/../b.npz", "a//b.npz", "./a.npz"])
def test_invalid_keys_are_refused(tmp_path: Path, bad_key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        store_from_uri(str(tmp_path)).put(bad_key, b"x")


def test_store_from_uri(tmp_path: Path) -> None:
    local = store_from_uri(str(tmp_path))
    assert local.is_local and local.root_uri == str(tmp_path.resolve())
    assert store_from_uri(f"file://{tmp_path}").root_uri == str(tmp_path.resolve())
    settings = S3Settings(endpoint_url="http://127.0.0.1:9", region_name="eu-west-1", access_key_id="k",
                          secret_access_key="s")
    s3 = store_from_uri("s3://bucket/some/prefix/", settings)
    assert not s3.is_local and s3.root_uri == "s3://bucket/some/prefix"
    assert s3.root.storage_options == {"use_listings_cache": False, "endpoint_url": "http://127.0.0.1:9",
                                       "client_kwargs": {"region_name": "eu-west-1"}, "key": "k", "secret": "s"}
    with pytest.raises(ValueError, match="names no bucket"):
        store_from_uri("s3:///prefix", settings)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2, 3}, "builtins.set"),
        (Opaque(), "Opaque"),
        (b"raw bytes", "builtins.bytes"),
        ("a string", "builtins.str"),
        (True, "builtins.bool"),
        (float("nan"), "builtins.float"),
        (np.array([{"a": 1}, None], dtype=object), "dtype object"),
        (ArrayBundle(arrays={"ids": np.array(["a", 1], dtype=object)}), "'ids' has dtype object"),
        (ArrayBundle(arrays={"x": np.zeros(2)}, attrs={"bad": Opaque()}), "ArrayBundle.attrs is not strict JSON"),
        (ArrayBundle(arrays={"x": np.zeros(2)}, attrs={"nan": float("nan")}), "not strict JSON"),
        (ArrayBundle(arrays={"__attrs__": np.zeros(2)}), "reserved"),
        (TensorBundle(tensors={"w": np.zeros(2)}), "'w' is ndarray, not a tensor"),
        (TensorBundle(tensors={"w": Opaque()}), "not a tensor"),
        ({"value": np.float32(1.5)}, "not strict JSON"),
        ({"fid": float("inf")}, "not strict JSON"),
        (pd.DataFrame({"obj": pd.Series([Opaque()], dtype=object)}), "cannot be stored as Parquet"),
        (pd.DataFrame({"mixed": ["a", 1]}), "cannot be stored as Parquet"),
        (pd.DataFrame([[1, 2]], columns=["a", "a"]), "unique strings"),
    ],
)
def test_unsupported_values_are_refused_at_write_time(value: Any, message: str) -> None:
    with pytest.raises(StorageTypeError, match=message):
        encode(value)


def test_storage_type_error_is_a_type_error_and_blob_extensions_are_checked() -> None:
    with pytest.raises(TypeError, match="no pickle fallback"):
        encode({1, 2})
    with pytest.raises(StorageTypeError, match="'exe' is not one of"):
        Blob(b"MZ", "exe")
    with pytest.raises(StorageTypeError, match="must be bytes"):
        Blob("text", "html")  # type: ignore[arg-type]


def _saved_pt(payload: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _npz_with_pickled_array() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, evil=np.array([Opaque()], dtype=object))  # np.savez pickles object arrays
    return buf.getvalue()


def _npz_single_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    return buf.getvalue()


TAMPERED: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "npz_truncated": ("npz", lambda good: good[: len(good) // 2]),
    "npz_garbage": ("npz", lambda good: b"\x00garbage" * 20),
    "npz_pickled_object_array": ("npz", lambda good: _npz_with_pickled_array()),
    "npz_is_a_single_npy": ("npz", lambda good: _npz_single_npy()),
    "npy_truncated": ("npy", lambda good: good[: len(good) - 9]),
    "npy_pickled": ("npy", lambda good: b"\x80\x04\x95" + good[3:]),
    "safetensors_truncated": ("safetensors", lambda good: good[: len(good) // 2]),
    "safetensors_no_header": ("safetensors", lambda good: good[:5]),
    "safetensors_header_garbled": ("safetensors", lambda good: good[:8] + b"{garbage" + good[16:]),
    "safetensors_header_too_long": ("safetensors", lambda good: (10**9).to_bytes(8, "little") + good[8:]),
    "safetensors_is_a_pickle": ("safetensors", lambda good: _saved_pt({"tensors": {"w": Opaque()}})),
    "json_garbled": ("json", lambda good: good[:-3]),
    "json_not_utf8": ("json", lambda good: b"\xff\xfe{"),
    "parquet_truncated": ("parquet", lambda good: good[: len(good) // 2]),
    "parquet_garbage": ("parquet", lambda good: b"PAR1" + b"\x00garbage" * 20 + b"PAR1"),
}

GOOD_VALUE_FOR_EXTENSION = {"npz": "array_bundle", "npy": "ndarray", "safetensors": "tensor_bundle", "json": "json_dict",
                            "parquet": "dataframe"}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_objects_give_a_clear_error_naming_the_uri(tmp_path: Path, case: str) -> None:
    ext, tamper = TAMPERED[case]
    store = store_from_uri(str(tmp_path))
    _, good = encode(sample_values()[GOOD_VALUE_FOR_EXTENSION[ext]])
    key = f"asset/2026-02-01.{ext}"
    uri = store.put(key, tamper(good))
    with pytest.raises(StorageFormatError) as caught:
        decode(ext, store.get(key), where=uri)
    assert uri in str(caught.value)
    assert f".{ext}" in str(caught.value)


def test_torch_pickles_are_never_loaded() -> None:
    data = _saved_pt({"tensors": {"w": torch.zeros(1)}, "attrs_json": "{}", "extra": Opaque()})
    with pytest.raises(StorageFormatError, match=r"s3://b/k\.pt: \.pt \(torch pickle\) objects are no longer loaded.*re-materialize"):
        decode("pt", data, where="s3://b/k.pt")


def test_truncated_npz_on_s3_names_the_uri(s3_settings: S3Settings, s3_bucket: str) -> None:
    store = store_from_uri(f"s3://{s3_bucket}/p", s3_settings)
    _, good = encode(sample_values()["array_bundle"])
    uri = store.put("preprocessed_images/2026-01-01.npz", good[: len(good) - 100])
    assert uri == f"s3://{s3_bucket}/p/preprocessed_images/2026-01-01.npz"
    with pytest.raises(StorageFormatError, match=f"{uri}: stored .npz object is corrupt"):
        decode("npz", store.get("preprocessed_images/2026-01-01.npz"), where=uri)


def test_flipped_byte_inside_npz_payload_is_detected() -> None:
    bundle = ArrayBundle(arrays={"images": np.full((4, 16, 16), 7, dtype=np.uint8)})
    _, data = encode(bundle)
    position = data.index(bytes([7] * 64)) + 10  # inside the array payload, not a header
    tampered = data[:position] + bytes([8]) + data[position + 1:]
    with pytest.raises(StorageFormatError, match="CRC"):  # zip's per-member CRC catches bit rot
        decode("npz", tampered, where="x.npz")


def test_unknown_extension_is_a_format_error() -> None:
    with pytest.raises(StorageFormatError, match="unknown extension .pkl"):
        decode("pkl", b"\x80\x04.", where="x.pkl")


def test_local_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = store_from_uri(str(tmp_path))
    store.put("asset/2026-01-01.json", b'{"v": 1}')
    assert sorted(p.name for p in (tmp_path / "asset").iterdir()) == [".2026-01-01.json.sha256", "2026-01-01.json"]
    assert (tmp_path / "asset/2026-01-01.json").stat().st_mode & 0o777 == 0o644


def test_failed_local_write_keeps_the_old_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_from_uri(str(tmp_path))
    store.put("asset/2026-01-01.json", b'{"v": 1}')

    def failing_replace(src: str, dst: str) -> None:
        # The bytes are fully written to the temp file at this point: a crash here is the worst case.
        assert Path(src).read_bytes() == b'{"v": 2, "partial": "no"}'
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stores_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        store.put("asset/2026-01-01.json", b'{"v": 2, "partial": "no"}')
    monkeypatch.undo()
    assert store.get("asset/2026-01-01.json") == b'{"v": 1}'
    assert sorted(os.listdir(tmp_path / "asset")) == [".2026-01-01.json.sha256", "2026-01-01.json"]  # no temp file
    assert store.list("asset/") == ["asset/2026-01-01.json"]


def test_s3_objects_carry_a_content_type(s3_settings: S3Settings, s3_client: Any, s3_bucket: str) -> None:
    store = store_from_uri(f"s3://{s3_bucket}/big", s3_settings)
    store.put("small/2026-01-01.json", b"{}")
    head = s3_client.head_object(Bucket=s3_bucket, Key="big/small/2026-01-01.json")
    assert head["ContentType"] == "application/json" and head["ContentLength"] == 2


def test_pack_unpack_images_round_trip_within_half_a_step() -> None:
    images = np.random.default_rng(2).uniform(-1, 1, size=(3, 16, 16)).astype(np.float32)
    packed = pack_images(images)
    assert packed.dtype == np.uint8
    assert np.abs(unpack_images(packed) - images).max() <= 0.5 / 127.5 + 1e-6
    np.testing.assert_array_equal(pack_images(np.array([-1.0, 0.0, 1.0, 5.0, -np.inf])), [0, 128, 255, 255, 0])
    attrs = encoding_attrs()
    assert packed[0, 0, 0] / attrs["scale"] + attrs["offset"] == pytest.approx(unpack_images(packed)[0, 0, 0])
    json.dumps(attrs)  # stored beside the images, so it must be JSON


def test_pack_images_refuses_nan() -> None:
    images = np.zeros((2, 4, 4), dtype=np.float32)
    images[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="1 NaN value"):
        pack_images(images)
