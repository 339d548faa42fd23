"""The one monthly partitions definition every asset shares (keys look like ``2026-03-01``)."""

import dagster as dg

PARTITION_START = "2026-01-01"

monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=PARTITION_START)

# trained_generator trains on the current month and the months before it.
TRAINING_WINDOW_MONTHS = 3

# The inputs that read a month's training window: the month and the TRAINING_WINDOW_MONTHS - 1
# before it. The first months of the calendar have fewer months before them: use what exists.
TRAINING_WINDOW = dg.TimeWindowPartitionMapping(
    start_offset=-(TRAINING_WINDOW_MONTHS - 1),
    end_offset=0,
    allow_nonexistent_upstream_partitions=True,
)
