"""Jobs over the monthly asset graph (defined here so sensors and schedules can import them)."""

import json
import os

import dagster as dg

from gan_assets.assets.common import TRAINING_TAG
from gan_assets.partitions import monthly_partitions


def _extra_training_tags() -> dict[str, str]:
    """GAN_ASSETS_TRAINING_RUN_TAGS: JSON object of extra run tags (e.g. ECS GPU tags, deploy/README.md)."""
    raw = os.environ.get("GAN_ASSETS_TRAINING_RUN_TAGS", "").strip()
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"GAN_ASSETS_TRAINING_RUN_TAGS is not valid JSON ({err})") from err
    if not isinstance(tags, dict):
        raise ValueError("GAN_ASSETS_TRAINING_RUN_TAGS must be a JSON object of run tags")
    # Run tags are strings; ECS launcher tags such as ecs/run_task_kwargs hold JSON objects.
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()}


# Both jobs train a model: the tag lets dagster.yaml's run coordinator run one at a time.
_TRAINING_RUN_TAGS = {**_extra_training_tags(), TRAINING_TAG: "true"}

gan_pipeline = dg.define_asset_job(
    name="gan_pipeline",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets("dicom_source"),
    partitions_def=monthly_partitions,
    description="The whole graph for one month: ingest, train, score, generate, report.",
    tags=_TRAINING_RUN_TAGS,
)

retrain_job = dg.define_asset_job(
    name="retrain_job",
    selection=dg.AssetSelection.assets("trained_generator").downstream(),
    partitions_def=monthly_partitions,
    description="Retrain one month with a mutated gan_config, then re-score and continue downstream.",
    tags=_TRAINING_RUN_TAGS,
)

index_job = dg.define_asset_job(
    name="index_landing_zone",
    selection=dg.AssetSelection.assets("landing_zone_index"),
    description="Update the landing-zone index: read the new or changed files, report each changed month's data version.",
)
