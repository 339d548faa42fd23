"""The one monthly partitions definition every asset shares (keys look like ``2026-03-01``)."""

import dagster as dg

PARTITION_START = "2026-01-01"

monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=PARTITION_START)


def month_of(partition_key: str) -> str:
    """The month a partition holds, as the landing-zone index names it: '2026-03-01' -> '2026-03'."""
    return partition_key[:7]


def partition_of(month: str) -> str:
    """The partition key of an index month: '2026-03' -> '2026-03-01'."""
    return f"{month}-01"


def partition_months(instance: dg.DagsterInstance | None = None) -> set[str]:
    """Every month that is a partition today ('2026-03', ...): files dated elsewhere are unassigned."""
    return {month_of(key) for key in monthly_partitions.get_partition_keys(dynamic_partitions_store=instance)}

# trained_generator trains on the current month and the months before it.
TRAINING_WINDOW_MONTHS = 3

# The inputs that read a month's training window: the month and the TRAINING_WINDOW_MONTHS - 1
# before it. The first months of the calendar have fewer months before them: use what exists.
TRAINING_WINDOW = dg.TimeWindowPartitionMapping(
    start_offset=-(TRAINING_WINDOW_MONTHS - 1),
    end_offset=0,
    allow_nonexistent_upstream_partitions=True,
)
# The input every window reader declares: a month of the window that was never materialized is
# left out of what the IO manager loads instead of failing the run.
TRAINING_WINDOW_INPUT = dg.AssetIn(partition_mapping=TRAINING_WINDOW, metadata={"allow_missing_partitions": True})
