"""Where every object lives in the store: the one place a key is built.

The IO manager stores each asset's value at ``{asset_key}/{partition}.{ext}`` (``value_key``).
What an asset writes beside its value (previews, history, caches, documents) goes through the
functions below, so no module spells a key of its own and every object is written and read
through ``ObjectStore`` (hash-checked). Another asset's value is never read by these keys: it
arrives as an asset input, or its figures come from the event log.

| object                          | key                                                                | written by        |
|---------------------------------|--------------------------------------------------------------------|-------------------|
| an asset's value                | ``{asset}/{partition}.{ext}`` (``{asset}.{ext}`` unpartitioned)    | the IO manager    |
| a training attempt's weights    | ``trained_generator/{month}.history/attempt-NN-<run id[:8]>.safetensors`` | trained_generator |
| that attempt's score            | ``trained_generator/{month}.history/attempt-NN-<run id[:8]>.score.json``  | fid_score         |
| the promoted attempt            | ``trained_generator/{month}.history/promoted.json``                 | fid_score         |
| real-image feature cache        | ``fid_score/real_features/{extractor fingerprint}/{month}.npz``     | fid_score         |
| sample grid preview             | ``generated_samples/{month}.png``                                   | generated_samples |
| synthetic DICOM                 | ``generated_samples/{month}/sample_NNNN.dcm``                       | generated_samples |
| the report                      | ``monthly_report/{month}.json`` and ``.html``                       | monthly_report    |
"""

from __future__ import annotations

GENERATOR = "trained_generator"
SCORE = "fid_score"
SAMPLES = "generated_samples"
REPORT = "monthly_report"
PROMOTED = "promoted.json"


def value_key(asset: str, partition: str | None, extension: str) -> str:
    """Where the IO manager keeps an asset's value (the landing zone index is unpartitioned)."""
    return f"{asset}/{partition}.{extension}" if partition else f"{asset}.{extension}"


def history_prefix(partition: str) -> str:
    return f"{GENERATOR}/{partition}.history/"


def attempt_stem(partition: str, attempt: int, run_id: str) -> str:
    """``trained_generator/{month}.history/attempt-NN-<run id[:8]>`` (no extension)."""
    return f"{history_prefix(partition)}attempt-{attempt:02d}-{(run_id or 'norun')[:8]}"


def promoted_key(partition: str) -> str:
    return history_prefix(partition) + PROMOTED


def real_features_prefix(fingerprint_id: str) -> str:
    return f"{SCORE}/real_features/{fingerprint_id}/"


def real_features_key(fingerprint_id: str, partition: str) -> str:
    return f"{real_features_prefix(fingerprint_id)}{partition}.npz"


def sample_grid_key(partition: str) -> str:
    return f"{SAMPLES}/{partition}.png"


def sample_dicom_prefix(partition: str) -> str:
    return f"{SAMPLES}/{partition}/"


def sample_dicom_key(partition: str, index: int) -> str:
    return f"{sample_dicom_prefix(partition)}sample_{index:04d}.dcm"


def report_key(partition: str, extension: str) -> str:
    """``monthly_report/{month}.json`` or ``.html``."""
    return f"{REPORT}/{partition}.{extension}"
