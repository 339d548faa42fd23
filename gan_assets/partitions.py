"""The one monthly partitions definition every asset shares (keys look like ``2026-03-01``)."""

import dagster as dg

PARTITION_START = "2026-01-01"

monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=PARTITION_START)

# trained_generator trains on the current month and the months before it.
TRAINING_WINDOW_MONTHS = 3
