"""Open-format storage core: typed codecs and object stores (local folder or S3). No Dagster."""

from gan_assets.storage.codecs import (
    ArrayBundle,
    Blob,
    StorageFormatError,
    TensorBundle,
    decode,
    encode,
    known_extensions,
)
from gan_assets.storage.stores import LocalObjectStore, ObjectStore, S3ObjectStore, store_from_uri

__all__ = [
    "ArrayBundle",
    "Blob",
    "LocalObjectStore",
    "ObjectStore",
    "S3ObjectStore",
    "StorageFormatError",
    "TensorBundle",
    "decode",
    "encode",
    "known_extensions",
    "store_from_uri",
]
