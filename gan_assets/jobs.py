"""Jobs over the monthly asset graph (defined here so sensors and schedules can import them)."""

import dagster as dg

from gan_assets.partitions import monthly_partitions

gan_pipeline = dg.define_asset_job(
    name="gan_pipeline",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets("dicom_source"),
    partitions_def=monthly_partitions,
    description="The whole graph for one month: ingest, train, score, generate, report.",
)

retrain_job = dg.define_asset_job(
    name="retrain_job",
    selection=dg.AssetSelection.assets("trained_generator").downstream(),
    partitions_def=monthly_partitions,
    description="Retrain one month with a mutated gan_config, then re-score and continue downstream.",
)
