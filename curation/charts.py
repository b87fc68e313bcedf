"""Charts of the dataset card as PNG bytes: matplotlib's Agg canvas, no pyplot state, no
timestamps, so the same numbers give byte-identical files."""

from __future__ import annotations

import io
from typing import Any


def png(fig: Any) -> bytes:
    """``fig`` (a ``matplotlib.figure.Figure``) as PNG bytes without "Software"/date metadata."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()
