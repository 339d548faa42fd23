"""Sensors: the retrain loop on FID failure, and notifications of failed runs."""

from __future__ import annotations

import dagster as dg  # noqa: F401

# ---- retrain loop (issue: retrain loop) ----------------------------------------------------
# ---- end retrain loop ------------------------------------------------------------------------

# ---- notifications (issue: samples/report) --------------------------------------------------
# ---- end notifications -----------------------------------------------------------------------
