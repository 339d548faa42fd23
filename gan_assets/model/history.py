"""Model history: every training attempt of a month kept, and the one promoted.

``trained_generator/{month}.{ext}`` (the asset's value) is always the latest attempt. Beside it,
``trained_generator/{month}.history/`` keeps each attempt under a key that names it,
``attempt-02-1a2b3c4d.safetensors`` (attempt number, first 8 characters of the training run id), with
its score once scored (``attempt-02-1a2b3c4d.score.json``), and ``promoted.json``: the attempt
whose score passed the gate, with the weights' SHA-256. What is delivered (generated samples,
the report) comes from the promoted weights, loaded by that key and checked against that hash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gan_assets.storage import ObjectStore, TensorBundle, decode, encode
from gan_assets.storage.digest import state_dict_sha256
from gan_assets.storage.layout import attempt_stem, history_prefix, promoted_key


class ModelHistoryError(RuntimeError):
    """No promoted model, or stored weights that do not match the hash recorded for them."""


def save_attempt(store: ObjectStore, partition: str, attempt: int, run_id: str, bundle: TensorBundle) -> str:
    """Keep one attempt's weights, config and data fingerprint; returns the stored key."""
    ext, data = encode(bundle)
    key = f"{attempt_stem(partition, attempt, run_id)}.{ext}"
    store.put(key, data)
    return key


def save_attempt_score(store: ObjectStore, partition: str, attempt: int, run_id: str,
                       score: Mapping[str, Any]) -> str:
    """The score of one kept attempt, beside its weights."""
    key = f"{attempt_stem(partition, attempt, run_id)}.score.json"
    store.put(key, json.dumps(dict(score), sort_keys=True, indent=1).encode())
    return key


@dataclass(frozen=True)
class PromotedModel:
    """The attempt a month delivers from: which weights (key and hash), trained on what, scored how."""

    partition: str
    attempt: int
    training_run_id: str
    scoring_run_id: str
    weights_key: str
    weights_sha256: str
    data_sha256: str
    code_version: str
    fid: float | None
    kid_mean: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> PromotedModel:
        try:
            return cls(**{name: value[name] for name in cls.__dataclass_fields__})
        except (KeyError, TypeError) as err:
            raise ModelHistoryError(f"promoted.json is not a promoted-model record ({err}); re-materialize fid_score") from err


def promote(store: ObjectStore, record: PromotedModel) -> str:
    key = promoted_key(record.partition)
    store.put(key, json.dumps(record.to_dict(), sort_keys=True, indent=1).encode())
    return key


def load_promoted(store: ObjectStore, partition: str) -> tuple[PromotedModel, TensorBundle]:
    """The promoted attempt's record and weights, verified against the recorded SHA-256."""
    key = promoted_key(partition)
    if not store.exists(key):
        raise ModelHistoryError(
            f"{partition}: no promoted generator ({store.uri(key)} is missing): no attempt of this month has passed "
            "the gate; materialize trained_generator and fid_score until one passes")
    record = PromotedModel.from_dict(json.loads(store.get(key)))
    bundle = decode(record.weights_key.rsplit(".", 1)[1], store.get(record.weights_key), where=store.uri(record.weights_key))
    if not isinstance(bundle, TensorBundle):
        raise ModelHistoryError(f"{store.uri(record.weights_key)} does not hold generator weights")
    actual = state_dict_sha256(bundle.tensors)
    if actual != record.weights_sha256:
        raise ModelHistoryError(
            f"{store.uri(record.weights_key)}: weights SHA-256 {actual[:16]} differs from the promoted "
            f"{record.weights_sha256[:16]}; the object was changed after promotion. Re-materialize the month")
    return record, bundle


def list_attempts(store: ObjectStore, partition: str) -> list[str]:
    """Stored attempt weights of a month, oldest attempt first."""
    return sorted(key for key in store.list(history_prefix(partition))
                  if key.rsplit("/", 1)[-1].startswith("attempt-") and not key.endswith(".json"))
