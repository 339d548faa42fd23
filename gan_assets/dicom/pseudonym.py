"""Keyed pseudonyms: HMAC-SHA256 of a SOPInstanceUID (image ids) or of a landing-zone path.

The caller hands in the secret (the ``dicom_source`` resource's ``pseudonym_key``, which the
deployment sets from ``GAN_ASSETS_PSEUDONYM_KEY``). Without one a documented local default is
used (fine for the synthetic demo; set a real secret anywhere real data flows, and keep it: the
same key gives the same ids month after month, a new key gives unlinkable new ids).
"""

from __future__ import annotations

import functools
import hashlib
import hmac

LOCAL_DEFAULT_KEY = "gan-assets-local-default-pseudonym-key"
# 128 bits of the HMAC: collisions are negligible at any realistic archive size.
DIGEST_HEX_CHARS = 32


def pseudonym_key(secret: str = "") -> bytes:
    """The HMAC key: ``secret``, or the local default when it is empty."""
    return (secret or LOCAL_DEFAULT_KEY).encode()


def using_default_key(key: bytes) -> bool:
    return key == LOCAL_DEFAULT_KEY.encode()


def _digest(key: bytes, domain: str, value: str) -> str:
    # The domain keeps an image id and a file reference of the same string unrelated.
    # surrogatepass: a file name that is not UTF-8 (os.walk hands it back with surrogates) still
    # gets a stable pseudonym; valid text encodes exactly as before.
    data = f"{domain}:{value}".encode("utf-8", "surrogatepass")
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:DIGEST_HEX_CHARS]


def image_id(sop_instance_uid: str, key: bytes) -> str:
    """Pseudonymous image id: HMAC-SHA256(key, SOPInstanceUID), hex."""
    return _digest(key, "sop", sop_instance_uid.strip())


# An index update keys every listed path, and the month's decode keys the same listing again.
@functools.lru_cache(maxsize=1 << 16)
def file_ref(relative_path: str, key: bytes) -> str:
    """Pseudonymous file reference (paths often hold names or IDs): HMAC of the relative path."""
    return "f" + _digest(key, "path", relative_path)[: DIGEST_HEX_CHARS - 1]


def content_ref(digest: str, key: bytes) -> str:
    """Pseudonymous content fingerprint: HMAC of a file's SHA-256 (or S3 ETag); "" when unknown.

    Keyed, so a stored fingerprint cannot confirm that a given file (a known patient's image)
    is in the zone without the key; equal content still gives equal references.
    """
    return "c" + _digest(key, "content", digest)[: DIGEST_HEX_CHARS - 1] if digest else ""
