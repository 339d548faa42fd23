"""Jobs over the monthly asset graph (defined here so sensors and schedules can import them)."""

import dagster as dg

from gan_assets.assets.common import TRAINING_TAG
from gan_assets.partitions import monthly_partitions
from gan_assets.resources import training_run_tags_from_env


# Both jobs train a model: the tag lets dagster.yaml's run coordinator run one at a time.
_TRAINING_RUN_TAGS = {**training_run_tags_from_env(), TRAINING_TAG: "true"}

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
