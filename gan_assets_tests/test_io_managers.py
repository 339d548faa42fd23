"""The open-format IO manager and artifact store (one ArtifactStorage) through ``dg.materialize``,
locally and on S3 (moto's server, credentials passed to the resource)."""


from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest
from gan_assets.io_managers import ArtifactStorage, format_of_type, input_format
from gan_assets.partitions import TRAINING_WINDOW_MONTHS, monthly_partitions
from gan_assets.storage import ArrayBundle, Blob, ObjectStore, TensorBundle, decode, encode
from gan_assets_tests.factories import EXPECTED_EXTENSION, VALUE_NAMES, Opaque, assert_same, sample_values


@dataclass
class Backend:
    name: str
    resources: dict[str, Any]
    store: ObjectStore  # the IO manager's own store, to look at and tamper with stored objects


def _backend(name: str, storage: ArtifactStorage) -> Backend:
    # One resource serves both keys: assets' values and the extra artifacts share a root.
    return Backend(name, {"io_manager": storage, "artifact_store": storage}, storage.object_store())


def local_backend(tmp_path: Path) -> Backend:
    return _backend("local", ArtifactStorage(root=str(tmp_path / "artifacts")))


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path)
    bucket = request.getfixturevalue("s3_bucket")
    return _backend("s3", ArtifactStorage(root=f"s3://{bucket}/gan-assets", s3=request.getfixturevalue("s3_resource")))


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey.from_user_string(asset)]
    assert len(events) == 1, asset
    return {k: v.value for k, v in events[0].materialization.metadata.items()}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every failed step's error, causes included (what the UI shows)."""
    assert not result.success
    texts = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            texts.append(error.message)
            error = error.cause
    return "\n".join(texts)


def _producer(name: str, value: Any) -> dg.AssetsDefinition:
    @dg.asset(name=name)
    def produce() -> Any:
        """Return one value of a stored type."""
        return value

    return produce


def _consumer(name: str, seen: dict[str, Any]) -> dg.AssetsDefinition:
    @dg.asset(name=f"read_{name}", ins={"upstream": dg.AssetIn(name)})
    def consume(upstream: Any) -> None:
        """Record what the IO manager loaded."""
        seen[name] = upstream

    return consume


def test_every_type_round_trips_through_the_io_manager(backend: Backend) -> None:
    values = sample_values()
    seen: dict[str, Any] = {}
    assets = [_producer(n, values[n]) for n in VALUE_NAMES] + [_consumer(n, seen) for n in VALUE_NAMES]
    result = dg.materialize(assets, resources=backend.resources)
    assert result.success
    assert sorted(seen) == sorted(VALUE_NAMES)
    for name in VALUE_NAMES:
        assert_same(values[name], seen[name])
        ext = EXPECTED_EXTENSION[name]
        key = f"{name}.{ext}"
        metadata = materialization_metadata(result, name)
        assert metadata["uri"] == backend.store.uri(key) == f"{backend.store.root_uri}/{key}"
        assert metadata["path"] == metadata["uri"]
        assert metadata["stored_bytes"] == len(backend.store.get(key)) == len(encode(values[name])[1])
        assert metadata["format"] == ext
    if backend.name == "s3":
        assert backend.store.root_uri.startswith("s3://gan-test-") and backend.store.root_uri.endswith("/gan-assets")


def _partitioned_assets(seen: dict[str, Any], allow_missing: bool = True) -> list[dg.AssetsDefinition]:
    @dg.asset(partitions_def=monthly_partitions, key_prefix=["imaging"])
    def monthly_images(context: dg.AssetExecutionContext) -> ArrayBundle:
        """A month of tiny images; the month number sets how many."""
        month = int(context.partition_key[5:7])
        return ArrayBundle(
            arrays={
                "images": np.full((month, 4, 4), month, dtype=np.uint8),
                "ids": np.array([f"{context.partition_key}-{i}" for i in range(month)], dtype=np.str_),
            },
            attrs={"partition": context.partition_key},
        )

    mapping = dg.TimeWindowPartitionMapping(start_offset=-(TRAINING_WINDOW_MONTHS - 1))
    metadata = {"allow_missing_partitions": True} if allow_missing else {}

    @dg.asset(
        partitions_def=monthly_partitions,
        ins={"monthly_images": dg.AssetIn(key=["imaging", "monthly_images"], partition_mapping=mapping, metadata=metadata)},
    )
    def window_summary(context: dg.AssetExecutionContext, monthly_images: dict[str, ArrayBundle]) -> dict[str, int]:
        """Images per month in the training window."""
        seen[context.partition_key] = monthly_images
        return {key: int(bundle["images"].shape[0]) for key, bundle in monthly_images.items()}

    return [monthly_images, window_summary]


def test_partitioned_write_and_multi_partition_read(backend: Backend) -> None:
    seen: dict[str, Any] = {}
    monthly_images, window_summary = _partitioned_assets(seen)
    for month in ("2026-01-01", "2026-03-01"):  # February is missing on purpose
        result = dg.materialize([monthly_images], partition_key=month, resources=backend.resources)
        key = f"imaging/monthly_images/{month}.npz"
        assert materialization_metadata(result, "imaging/monthly_images")["uri"] == backend.store.uri(key)
    assert backend.store.list("imaging/") == [
        "imaging/monthly_images/2026-01-01.npz",
        "imaging/monthly_images/2026-03-01.npz",
    ]

    result = dg.materialize(
        [monthly_images, window_summary], selection=[window_summary], partition_key="2026-03-01", resources=backend.resources
    )
    assert result.success
    window = seen["2026-03-01"]
    assert sorted(window) == ["2026-01-01", "2026-03-01"]  # a dict partition -> value, Feb skipped
    assert window["2026-03-01"]["ids"].tolist() == ["2026-03-01-0", "2026-03-01-1", "2026-03-01-2"]
    assert window["2026-01-01"].attrs == {"partition": "2026-01-01"}
    stored = decode("json", backend.store.get("window_summary/2026-03-01.json"))
    assert stored == {"2026-01-01": 1, "2026-03-01": 3}

    if backend.name == "s3":
        return  # the rest is IO-manager logic independent of the backend; keep the suite fast
    # A window with a single present month still arrives as a dict.
    result = dg.materialize(
        [monthly_images, window_summary], selection=[window_summary], partition_key="2026-04-01", resources=backend.resources
    )
    assert result.success and sorted(seen["2026-04-01"]) == ["2026-03-01"]


def test_missing_partition_without_allow_missing_names_the_object(tmp_path: Path) -> None:
    backend = local_backend(tmp_path)
    seen: dict[str, Any] = {}
    monthly_images, window_summary = _partitioned_assets(seen, allow_missing=False)
    dg.materialize([monthly_images], partition_key="2026-03-01", resources=backend.resources)
    result = dg.materialize(
        [monthly_images, window_summary],
        selection=[window_summary],
        partition_key="2026-03-01",
        resources=backend.resources,
        raise_on_error=False,
    )
    text = failure_text(result)
    assert f"no stored object at {backend.store.root_uri}/imaging/monthly_images/2026-01-01.npz" in text
    assert seen == {}


def test_unsupported_type_fails_at_write_time_and_keeps_the_old_object(backend: Backend) -> None:
    returned: list[Any] = [{"version": 1}]

    @dg.asset(partitions_def=monthly_partitions)
    def scores() -> Any:
        """Returns whatever the test puts in ``returned``."""
        return returned[0]

    assert dg.materialize([scores], partition_key="2026-01-01", resources=backend.resources).success
    key = "scores/2026-01-01.json"
    before = backend.store.get(key)

    bad_values = [({"a", "b"}, "builtins.set"), (Opaque(), "Opaque"), (np.array([object()]), "dtype object")]
    for bad, name in bad_values[:1] if backend.name == "s3" else bad_values:
        returned[0] = bad
        result = dg.materialize([scores], partition_key="2026-01-01", resources=backend.resources, raise_on_error=False)
        text = failure_text(result)
        assert name in text and ("no pickle fallback" in text or "only pickle can store" in text)
        assert result.get_asset_materialization_events() == []
    assert backend.store.get(key) == before
    assert backend.store.list("scores/") == [key]  # nothing half-written beside it


def test_tampered_object_gives_a_clear_error_on_load(backend: Backend) -> None:
    seen: dict[str, Any] = {}
    monthly_images, window_summary = _partitioned_assets(seen)
    dg.materialize([monthly_images], partition_key="2026-02-01", resources=backend.resources)
    key = "imaging/monthly_images/2026-02-01.npz"
    good = backend.store.get(key)
    backend.store.put(key, good[: len(good) // 2])  # truncated, as by an interrupted copy
    result = dg.materialize(
        [monthly_images, window_summary],
        selection=[window_summary],
        partition_key="2026-02-01",
        resources=backend.resources,
        raise_on_error=False,
    )
    text = failure_text(result)
    assert "StorageFormatError" in text
    assert f"{backend.store.uri(key)}: stored .npz object is corrupt" in text
    assert seen == {}


def test_io_manager_leaves_no_temp_files_locally(tmp_path: Path) -> None:
    backend = local_backend(tmp_path)
    value = sample_values()["array_bundle"]
    for _ in range(2):  # write, then overwrite in place
        assert dg.materialize([_producer("bundle", value)], resources=backend.resources).success
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == [".bundle.npz.sha256", "bundle.npz"]


def test_artifact_store_sidecars_share_the_root_and_do_not_shadow_the_value(backend: Backend) -> None:
    seen: dict[str, Any] = {}

    @dg.asset(partitions_def=monthly_partitions, required_resource_keys={"artifact_store"})
    def samples(context: dg.AssetExecutionContext) -> ArrayBundle:
        """Images plus a PNG preview written beside them through the artifact store."""
        store = context.resources.artifact_store.object_store()
        store.put(f"samples/{context.partition_key}.png", b"\x89PNG preview")
        store.put(f"samples/{context.partition_key}/extra.html", b"<p>hi</p>")
        return ArrayBundle(arrays={"images": np.zeros((2, 4, 4), dtype=np.uint8)}, attrs={"seed": 7})

    @dg.asset(partitions_def=monthly_partitions)
    def after_samples(context: dg.AssetExecutionContext, samples: ArrayBundle) -> None:
        """Records what it loaded."""
        seen[context.partition_key] = samples

    assert dg.materialize([samples, after_samples], partition_key="2026-03-01", resources=backend.resources).success
    assert isinstance(seen["2026-03-01"], ArrayBundle) and seen["2026-03-01"].attrs == {"seed": 7}
    assert backend.store.list("samples/") == [
        "samples/2026-03-01.npz",
        "samples/2026-03-01.png",
        "samples/2026-03-01/extra.html",
    ]
    artifact_store = backend.resources["artifact_store"].object_store()
    assert artifact_store.root_uri == backend.store.root_uri
    assert artifact_store.get("samples/2026-03-01.png") == b"\x89PNG preview"


def test_a_changed_type_is_read_by_the_declared_type(tmp_path: Path) -> None:
    backend = local_backend(tmp_path)
    returned: list[Any] = [ArrayBundle(arrays={"x": np.arange(3)})]
    seen: list[Any] = []

    @dg.asset
    def changing() -> Any:
        """First an ArrayBundle, later a JSON dict."""
        return returned[0]

    @dg.asset
    def reader(changing: Any) -> None:
        """Records what it loaded, whatever its format."""
        seen.append(changing)

    @dg.asset
    def typed_reader(changing: dict) -> None:
        """Declares the JSON type."""
        seen.append(changing)

    assert dg.materialize([changing, reader], resources=backend.resources).success
    returned[0] = {"now": "json"}
    assert dg.materialize([changing], resources=backend.resources).success
    assert backend.store.list("changing") == ["changing.json", "changing.npz"]  # the old .npz stays
    assert dg.materialize([changing, typed_reader], selection=[typed_reader], resources=backend.resources).success
    assert isinstance(seen[0], ArrayBundle) and seen[1] == {"now": "json"}
    # Undeclared, the input cannot tell which is current: a clear error, not a guess.
    result = dg.materialize([changing, reader], selection=[reader], resources=backend.resources, raise_on_error=False)
    assert "stored in several formats (npz, json): the asset changed type" in failure_text(result)


def test_a_declared_output_type_must_match_the_value(tmp_path: Path) -> None:
    backend = local_backend(tmp_path)

    @dg.asset
    def weights() -> TensorBundle:
        """Declares weights but returns images."""
        return ArrayBundle(arrays={"x": np.arange(3)})  # type: ignore[return-value]

    result = dg.materialize([weights], resources=backend.resources, raise_on_error=False)
    assert 'Type check failed for step output "result" - expected type "TensorBundle"' in failure_text(result)
    assert backend.store.list("") == []  # refused before the IO manager saw it


def test_formats_follow_declared_types() -> None:
    import pandas as pd
    import pyarrow as pa

    assert [format_of_type(t) for t in (ArrayBundle, TensorBundle, np.ndarray, pd.DataFrame, pa.Table, dict,
                                        dict[str, Any], list, Any, Blob, int)] == [
        "npz", "safetensors", "npy", "parquet", "parquet", "json", "json", "json", None, None, None]
    # A window of partitions arrives as dict[str, T]; dict[str, Any] may be JSON or a window, so it is probed.
    assert input_format(dict[str, ArrayBundle]) == "npz" and input_format(TensorBundle) == "safetensors"
    assert input_format(dict[str, Any]) is None and input_format(Any) is None and input_format(dict) == "json"


def test_blob_valued_asset_round_trips(tmp_path: Path) -> None:
    backend = local_backend(tmp_path)
    seen: dict[str, Any] = {}
    html = Blob(b"<html>report</html>", "html")
    result = dg.materialize([_producer("page", html), _consumer("page", seen)], resources=backend.resources)
    assert result.success and seen["page"] == html
    assert (tmp_path / "artifacts" / "page.html").read_bytes() == b"<html>report</html>"
