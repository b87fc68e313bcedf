"""The card's charts at their real size: no label is clipped, whatever its length.

Each chart is rendered to PNG as the publisher writes it and read back pixel by pixel: a blank
border on every side means nothing drawn (a tick label, the title, a bar's value, the colour
bar) runs into the image's edge. Before, a lone ``contaminated_ngram`` bar lost its label's
first letter.
"""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from curation.core.schema import HARM_CATEGORIES
from curation.match.decontam import REASONS
from curation.publish import card

#: Every removal reason the pipeline writes (dedup's and decontamination's).
REMOVAL_REASONS = ("exact_duplicate", "near_duplicate", "conflicting_duplicate", *REASONS)
BORDER_PX = 3


def blank_border(png: bytes) -> bool:
    """Whether the outer ``BORDER_PX`` pixels of the image are all white."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    edges = [
        pixels[:BORDER_PX, :],
        pixels[-BORDER_PX:, :],
        pixels[:, :BORDER_PX],
        pixels[:, -BORDER_PX:],
    ]
    return all((edge == 255).all() for edge in edges)


@pytest.mark.parametrize(
    "labels",
    [
        [r]
        for r in REMOVAL_REASONS  # alone, a label sets the margin by itself
    ]
    + [list(REMOVAL_REASONS)],
    ids=lambda labels: labels[0] if len(labels) == 1 else "all",
)
def test_bar_chart_labels_are_not_clipped(labels: list[str]) -> None:
    counts = [(label, 12_345 * (i + 1)) for i, label in enumerate(labels)]
    png = card._bar_chart(counts, "Pairs removed by reason", "pairs")
    assert blank_border(png)
    assert png == card._bar_chart(counts, "Pairs removed by reason", "pairs")  # deterministic


@pytest.mark.parametrize("categories", [HARM_CATEGORIES, HARM_CATEGORIES[:1], ("Drugs",)])
def test_heatmap_labels_are_not_clipped(categories: tuple[str, ...]) -> None:
    counts = Counter({(c, s): 1000 + i for i, c in enumerate(categories) for s in (1, 2, 3, None)})
    png = card._heatmap(counts)
    assert blank_border(png)
    assert png == card._heatmap(counts)
