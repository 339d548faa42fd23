"""Open-format storage core: typed codecs and one object store (local folder or S3). No Dagster."""

from gan_assets.storage.codecs import (
    ArrayBundle,
    Blob,
    StorageFormatError,
    TensorBundle,
    decode,
    encode,
    known_extensions,
)
from gan_assets.storage.stores import (
    ArtifactIntegrityError,
    ObjectNotFoundError,
    ObjectStore,
    S3Settings,
    storage_path,
    store_from_uri,
)

__all__ = [
    "ArrayBundle",
    "ArtifactIntegrityError",
    "Blob",
    "ObjectNotFoundError",
    "ObjectStore",
    "S3Settings",
    "StorageFormatError",
    "TensorBundle",
    "decode",
    "encode",
    "known_extensions",
    "storage_path",
    "store_from_uri",
]
