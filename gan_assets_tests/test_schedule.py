"""monthly_pipeline_schedule: once a month, for the month that just ended."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from gan_assets.jobs import gan_pipeline
from gan_assets.partitions import PARTITION_START, month_of, monthly_partitions, partition_months, partition_of
from gan_assets.schedules import monthly_pipeline_schedule


@dg.asset(partitions_def=monthly_partitions)
def _month_stand_in() -> None:
    """A monthly asset so gan_pipeline resolves without the real graph."""


def _schedule() -> dg.ScheduleDefinition:
    defs = dg.Definitions(assets=[_month_stand_in], jobs=[gan_pipeline], schedules=[monthly_pipeline_schedule])
    return defs.resolve_schedule_def("monthly_pipeline_schedule")


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (dt.datetime(2026, 4, 1, 3, 0, tzinfo=dt.timezone.utc), "2026-03-01"),
        (dt.datetime(2026, 2, 1, 3, 0, tzinfo=dt.timezone.utc), "2026-01-01"),  # the first partition
        (dt.datetime(2027, 1, 1, 3, 0, tzinfo=dt.timezone.utc), "2026-12-01"),  # across a year
    ],
)
def test_schedule_requests_the_month_that_just_ended(when: dt.datetime, expected: str) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        # Resolved inside the instance: Definitions loading reads the current instance's state.
        schedule = _schedule()
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        data = schedule.evaluate_tick(context)
    assert [request.partition_key for request in data.run_requests or []] == [expected]


def test_schedule_cadence_and_target() -> None:
    with dg.DagsterInstance.ephemeral():
        schedule = _schedule()
    assert schedule.cron_schedule == "0 3 1 * *"  # the 1st of each month, 03:00
    assert schedule.execution_timezone in (None, "UTC")
    assert schedule.job_name == "gan_pipeline"


def test_schedule_requests_nothing_before_the_first_month_ends() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        # Resolved inside the instance: Definitions loading reads the current instance's state.
        schedule = _schedule()
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.timezone.utc)
        )
        data = schedule.evaluate_tick(context)
    assert not data.run_requests


def test_partition_keys_and_index_months_map_both_ways() -> None:
    assert month_of("2026-03-01") == "2026-03" and partition_of("2026-03") == "2026-03-01"
    months = partition_months()
    assert month_of(PARTITION_START) in months and "2025-12" not in months
    assert all(partition_of(month) in monthly_partitions.get_partition_keys() for month in months)
