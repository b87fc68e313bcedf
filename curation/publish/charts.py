"""Charts of the dataset card as PNG bytes: matplotlib's Agg canvas, no pyplot state, no
timestamps, so the same numbers give byte-identical files."""

from __future__ import annotations

import io
from typing import Any

CHART_DPI = 100
#: Blank border around a chart's drawn extent (0.1 in = 10 px at :data:`CHART_DPI`).
CHART_PAD_INCHES = 0.1


def png(fig: Any) -> bytes:
    """``fig`` (a ``matplotlib.figure.Figure``) as PNG bytes without "Software"/date metadata.

    The saved area is the measured extent of everything drawn (tick labels, title, bar labels,
    colour bar) plus a margin, so no label is clipped whatever its length (the margins the chart
    functions set are estimates); text extents are deterministic, so the bytes stay so.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(
        buf,
        format="png",
        dpi=CHART_DPI,
        metadata={"Software": None},
        bbox_inches="tight",
        pad_inches=CHART_PAD_INCHES,
    )
    return buf.getvalue()
