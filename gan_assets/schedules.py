"""The monthly cadence: run the whole graph once a month for the month that just ended."""

import dagster as dg

from gan_assets.jobs import gan_pipeline

# A monthly-partitioned job's schedule ticks on the 1st and requests the last complete
# partition, i.e. the month that just ended. 03:00 UTC leaves the landing zone a few hours
# for files of the last day of the month that arrive late.
monthly_pipeline_schedule = dg.build_schedule_from_partitioned_job(
    gan_pipeline,
    name="monthly_pipeline_schedule",
    description="On the 1st at 03:00 UTC: ingest, train, score, generate and report the month that just ended.",
    hour_of_day=3,
    minute_of_hour=0,
)
