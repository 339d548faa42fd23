"""Run tags and small helpers shared by the asset modules."""

from __future__ import annotations

from typing import Protocol

import dagster as dg

from gan_assets.storage import ObjectStore

# The retrain loop sets these on the runs it requests (sensors.py).
ATTEMPT_TAG = "gan/attempt"
PARENT_RUN_TAG = "gan/parent_run"
CONFIG_DIFF_TAG = "gan/config_diff"
# Runs that train carry this tag; dagster.yaml limits them to one at a time.
TRAINING_TAG = "gan/training"

# Groups shown in the UI's asset graph.
GROUP_INGEST = "ingest"
GROUP_MODEL = "model"
GROUP_DELIVERY = "delivery"


def run_attempt(context: dg.AssetExecutionContext) -> int:
    """The training attempt this run belongs to (``gan/attempt`` tag; 1 when absent)."""
    raw = context.run.tags.get(ATTEMPT_TAG, "1")
    try:
        attempt = int(raw)
    except ValueError as err:
        raise ValueError(f"run tag {ATTEMPT_TAG}={raw!r} is not an integer attempt number") from err
    if attempt < 1:
        raise ValueError(f"run tag {ATTEMPT_TAG}={raw!r} must be >= 1")
    return attempt


class ArtifactStoreResource(Protocol):
    """LocalArtifactStore or S3ArtifactStore: both hand out the ObjectStore of the artifact root."""

    def object_store(self) -> ObjectStore: ...
