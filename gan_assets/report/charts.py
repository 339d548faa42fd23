"""Geometry of small line charts: the HTML template draws it as inline SVG, :func:`chart_png`
as a PNG (for the Dagster UI's metadata, which shows images but not SVG).

Only numbers are computed here (pixel coordinates, ticks, labels); the SVG markup lives in the
jinja2 template so that nothing is assembled by string concatenation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from gan_assets.storage.images import png_bytes

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")
STATUS_COLORS = {"passed": "#2ca02c", "failed": "#ff7f0e", "rejected": "#d62728",
                 "not_discriminative": "#9467bd", "memorized": "#8c564b"}


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values spanning [low, high] (1-2-5 steps)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    # The ticks enclose the data: the first at or below low, the last at or above high.
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}"


def line_chart(
    x: Sequence[float],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    title: str,
    x_labels: Sequence[str] | None = None,
    point_status: Sequence[str | None] | None = None,
    reference: Sequence[tuple[str, Sequence[float | None]]] = (),
    hlines: Sequence[tuple[str, float]] = (),
    width: int = 560,
    height: int = 220,
    max_markers: int = 60,
) -> dict[str, Any]:
    """Pixel geometry of a line chart: polylines, point markers, axis ticks, reference lines.

    ``None`` values are gaps (skipped). ``point_status`` colours the markers by a month's
    status (passed/failed/rejected); ``reference`` series (a per-month threshold) are drawn
    dashed without markers; ``hlines`` draws labelled horizontal lines.
    """
    if any(len(values) != len(x) for _, values in (*series, *reference)):
        raise ValueError("every series needs one value per x position")
    left, right, top, bottom = 52, 12, 28, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    ys = [v for _, values in (*series, *reference) for v in values if v is not None and math.isfinite(v)]
    ys += [v for _, v in hlines if math.isfinite(v)]
    empty = not ys or not x
    y_low, y_high = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if y_high - y_low < 1e-12:  # one point or a flat line: give it some room
        pad = abs(y_high) * 0.1 or 1.0
        y_low, y_high = y_low - pad, y_high + pad
    y_ticks = _nice_ticks(y_low, y_high)
    if y_ticks:
        y_low, y_high = min(y_low, y_ticks[0]), max(y_high, y_ticks[-1])
    x_low, x_high = (min(x), max(x)) if x else (0.0, 1.0)

    def px(value: float) -> float:
        if x_high == x_low:
            return round(left + plot_w / 2, 2)
        return round(left + (value - x_low) / (x_high - x_low) * plot_w, 2)

    def py(value: float) -> float:
        return round(top + (y_high - value) / (y_high - y_low) * plot_h, 2)

    drawn = []
    for index, (name, values) in enumerate((*series, *reference)):
        dashed = index >= len(series)
        points = [(px(xv), py(yv)) for xv, yv in zip(x, values) if yv is not None and math.isfinite(yv)]
        markers = []
        if not dashed and len(points) <= max_markers:
            for i, (xv, yv) in enumerate(zip(x, values)):
                if yv is None or not math.isfinite(yv):
                    continue
                status = point_status[i] if point_status else None
                label = x_labels[i] if x_labels else _fmt(xv)
                markers.append({
                    "x": px(xv), "y": py(yv), "status": status or "",
                    "color": STATUS_COLORS.get(status or "", PALETTE[index % len(PALETTE)]),
                    "title": f"{name} {label}: {_fmt(yv)}" + (f" ({status})" if status else ""),
                })
        drawn.append({
            "name": name,
            "color": PALETTE[index % len(PALETTE)],
            "points": " ".join(f"{a},{b}" for a, b in points),
            "markers": markers,
            "dashed": dashed,
        })

    if x_labels:
        # At most ~8 labels so months stay readable.
        stride = max(1, math.ceil(len(x) / 8))
        x_ticks = [{"x": px(xv), "label": x_labels[i]} for i, xv in enumerate(x) if i % stride == 0]
    else:
        x_ticks = [{"x": px(t), "label": _fmt(t)} for t in _nice_ticks(x_low, x_high) if x_low <= t <= x_high]
    return {
        "title": title,
        "empty": empty,
        "width": width,
        "height": height,
        "plot": {"left": left, "top": top, "right": width - right, "bottom": height - bottom},
        "series": drawn,
        "y_ticks": [{"y": py(t), "label": _fmt(t)} for t in y_ticks],
        "x_ticks": x_ticks,
        "hlines": [{"y": py(v), "label": f"{name} {_fmt(v)}"} for name, v in hlines if math.isfinite(v)],
    }


def loss_chart(loss_history: Mapping[str, Any] | None) -> dict[str, Any]:
    """Discriminator and generator loss against the training step (non-finite points are gaps)."""
    history = loss_history or {}
    steps = [float(s) for s in history.get("step") or []]
    loss_d = list(history.get("loss_d") or [])[: len(steps)]
    loss_g = list(history.get("loss_g") or [])[: len(steps)]
    if len(loss_d) != len(steps) or len(loss_g) != len(steps):
        steps = steps[: min(len(loss_d), len(loss_g))]
        loss_d, loss_g = loss_d[: len(steps)], loss_g[: len(steps)]
    return line_chart(steps, [("loss D", loss_d), ("loss G", loss_g)], title="Training losses", max_markers=0)


def chart_png(chart: Mapping[str, Any]) -> bytes:
    """A :func:`line_chart` drawn as a PNG: the same lines, ticks and legend as the SVG."""
    plot = chart["plot"]
    image = Image.new("RGB", (chart["width"], chart["height"]), "white")
    draw = ImageDraw.Draw(image)
    draw.text((plot["left"], 4), chart["title"], fill="#222222")
    if chart["empty"]:
        draw.text((plot["left"], chart["height"] // 2), "no data", fill="#777777")
        return png_bytes(np.asarray(image))
    for tick in chart["y_ticks"]:
        draw.line([plot["left"], tick["y"], plot["right"], tick["y"]], fill="#eeeeee")
        draw.text((2, tick["y"] - 6), tick["label"], fill="#555555")
    for tick in chart["x_ticks"]:
        draw.text((tick["x"] - 8, plot["bottom"] + 6), tick["label"], fill="#555555")
    for line in chart["hlines"]:
        draw.line([plot["left"], line["y"], plot["right"], line["y"]], fill="#999999")
    draw.line([plot["left"], plot["bottom"], plot["right"], plot["bottom"]], fill="#999999")
    draw.line([plot["left"], plot["top"], plot["left"], plot["bottom"]], fill="#999999")
    count = len(chart["series"])
    for index, series in enumerate(chart["series"]):
        points = [tuple(float(v) for v in point.split(",")) for point in series["points"].split()]
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=series["color"])
        elif points:
            draw.line(points, fill=series["color"], width=2)
        for marker in series["markers"]:
            draw.ellipse([marker["x"] - 3, marker["y"] - 3, marker["x"] + 3, marker["y"] + 3], fill=marker["color"])
        legend_x = plot["right"] - 110 * (count - index)
        draw.rectangle([legend_x, 8, legend_x + 8, 16], fill=series["color"])
        draw.text((legend_x + 12, 4), series["name"], fill="#222222")
    return png_bytes(np.asarray(image))

