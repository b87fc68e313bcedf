"""The dataset card's "Changes since <previous release>" and "Checks" sections.

Rendered from the manifest alone (its ``changes``, computed by :mod:`curation.publish.drift` when the
release was published, and its ``checks``), so the card says what the alert and
``releases diff`` say. The chart compares pairs per dataset and split, previous and new.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from curation.core.report import markdown_table
from curation.publish.charts import png

CHANGES_CHART = "changes_pairs.png"


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2%}" if value <= 1 else f"{value:,.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pairs_chart(pairs: Mapping[str, list[Any]], previous_id: str, release_id: str) -> bytes:
    """Grouped horizontal bars: pairs per dataset/split in the previous and this release."""
    from matplotlib.figure import Figure

    labels = list(pairs)[::-1]
    before = [pairs[k][0] or 0 for k in labels]
    after = [pairs[k][1] or 0 for k in labels]
    label_in = 0.3 + 0.075 * max((len(x) for x in labels), default=0)
    width, height = 6.5 + label_in, 0.6 * max(len(labels), 2) + 1.4
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=label_in / width, right=0.97, top=1 - 0.45 / height, bottom=0.9 / height
    )
    ax = fig.add_subplot()
    rows = range(len(labels))
    ax.barh([r + 0.2 for r in rows], before, height=0.4, color="#BBBBBB", label=previous_id)
    bars = ax.barh([r - 0.2 for r in rows], after, height=0.4, color="#4C72B0", label=release_id)
    ax.bar_label(bars, labels=[f"{v:,}" for v in after], padding=3, fontsize=8)
    ax.set_yticks(list(rows), labels)
    ax.set_xlabel("pairs")
    ax.set_title("Pairs per dataset and split: previous release and this one", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.margins(x=0.15)
    return png(fig)


def changes_section(manifest: Mapping[str, Any]) -> tuple[list[str], dict[str, bytes]]:
    """``## Changes since <previous>``: each check's outcome and findings (previous and new
    value), and pairs and PKU label shares side by side, with a chart; nothing for a manifest
    without ``changes``."""
    changes = manifest.get("changes")
    if not changes:
        return [], {}
    previous = changes.get("previous_release")
    if previous is None:
        return [
            "## Changes",
            "",
            "The first release of this store (or the previous one is gone): this release is the "
            "baseline the next one is compared with.",
            "",
        ], {}
    lines = [f"## Changes since {previous}", ""]
    if changes.get("held"):
        lines += [
            f"**Held:** an ERROR drift kept `latest` on `{previous}`. Accept this release with "
            f"`rlhf-curate releases promote {manifest['release_id']} --reason '...'`.",
            "",
        ]
    promotion = manifest.get("previous_promotion")
    if promotion:
        lines += [
            f"`{previous}` was accepted by {promotion['by']} on {promotion['at']}: "
            f"{promotion['reason']}",
            "",
        ]
    checks = changes.get("checks", [])
    lines += [
        markdown_table(
            ["check", "result", "findings", "compared"],
            [[c["check"], c["severity"], len(c["findings"]), c["compared"]] for c in checks],
            right=(2, 3),
        ),
        "",
    ]
    findings = [f for c in checks for f in c["findings"]]
    if findings:
        lines += [
            markdown_table(
                ["check", "what", "level", "previous", "new", "detail"],
                [
                    [
                        f["check"],
                        f["key"],
                        f["severity"],
                        _value(f["previous"]),
                        _value(f["new"]),
                        f["detail"],
                    ]
                    for f in findings
                ],
            ),
            "",
        ]
    side = changes.get("side_by_side") or {}
    charts: dict[str, bytes] = {}
    if side.get("pairs"):
        lines += [
            markdown_table(
                ["pairs", previous, manifest["release_id"]],
                [[k, _value(a), _value(b)] for k, (a, b) in side["pairs"].items()],
                right=(1, 2),
            ),
            "",
            f"![pairs, previous and this release]({CHANGES_CHART})",
            "",
        ]
        charts[CHANGES_CHART] = _pairs_chart(side["pairs"], previous, manifest["release_id"])
    if side.get("labels"):
        lines += [
            markdown_table(
                ["PKU label share", previous, manifest["release_id"]],
                [[k, _value(a), _value(b)] for k, (a, b) in side["labels"].items()],
                right=(1, 2),
            ),
            "",
        ]
    return lines, charts


def checks_section(manifest: Mapping[str, Any]) -> list[str]:
    """``## Checks``: every asset check's latest result when the release was published, WARNs
    included, and the release-over-release checks."""
    checks = manifest.get("checks") or {}
    rows = []
    for name, result in sorted(checks.items()):
        if isinstance(result, Mapping):
            outcome = "passed" if result.get("passed") else f"failed ({result.get('severity')})"
            rows.append([name, outcome, result.get("description", "")])
        else:
            rows.append([name, str(result), ""])
    for check in (manifest.get("changes") or {}).get("checks", []):
        outcome = "baseline" if check["baseline"] else check["severity"]
        rows.append([f"release:{check['check']}", outcome, f"{len(check['findings'])} findings"])
    if not rows:
        return []
    return ["## Checks", "", markdown_table(["check", "result", "detail"], rows), ""]
