"""report.html: one self-contained page (inline PNGs and SVG charts) rendered with jinja2."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jinja2

from gan_assets.report.charts import STATUS_COLORS, line_chart, loss_chart
from gan_assets.storage.images import data_uri

TEMPLATE = "report.html.j2"


@functools.cache
def _environment() -> jinja2.Environment:
    # Autoescape everything: config values and reasons come from data files and run config.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gan_assets.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def scalar_rows(values: Mapping[str, Any] | None, prefix: str = "", depth: int = 2) -> list[tuple[str, Any]]:
    """(dotted key, value) for the scalars of a nested mapping; lists (e.g. closest pairs) are left out."""
    rows: list[tuple[str, Any]] = []
    for key, value in sorted((values or {}).items()):
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and depth > 1:
            rows += scalar_rows(value, prefix=f"{name}.", depth=depth - 1)
        elif value is None or isinstance(value, (str, int, float, bool)):
            rows.append((name, value))
    return rows


def trend_charts(trend: list[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """FID (with each month's threshold) and KID across months, markers coloured by status."""
    months = [p["partition"][:7] for p in trend]
    x = [float(i) for i in range(len(trend))]
    status = [p["status"] for p in trend]
    thresholds = [p.get("threshold") for p in trend]
    fid = line_chart(
        x, [("FID", [p.get("fid") for p in trend])], reference=[("threshold", thresholds)],
        title="FID by month", x_labels=months, point_status=status,
    )
    kid = line_chart(
        x, [("KID", [p.get("kid_mean") for p in trend])],
        title="KID by month", x_labels=months, point_status=status,
    )
    return fid, kid


def render_report_html(
    report: Mapping[str, Any],
    *,
    sample_grid_png: bytes,
    real_grid_png: bytes | None,
    loss_history: Mapping[str, Any] | None,
) -> str:
    """The month's page: verdict, samples beside real images, trend, losses, attempts, details."""
    fid_trend, kid_trend = trend_charts(list(report["trend"]))
    return _environment().get_template(TEMPLATE).render(
        report=report,
        sample_grid=data_uri(sample_grid_png),
        real_grid=data_uri(real_grid_png) if real_grid_png else None,
        fid_trend=fid_trend,
        kid_trend=kid_trend,
        losses=loss_chart(loss_history),
        status_colors=STATUS_COLORS,
        memorization_rows=scalar_rows(report.get("memorization")),
        fingerprint_rows=scalar_rows(report["fingerprint"]) if isinstance(report.get("fingerprint"), Mapping) else [],
    )
