"""Release-over-release checks: a new release compared with the one consumers had.

:func:`compare_releases` compares two manifests (their ``profile``, :mod:`curation.publish.profile`, and
their tables' schemas) and returns one :class:`CheckResult` per check family, each with the
findings that fired and the previous and new value of each:

======================  =================================================================
``drift_rows``          pairs per dataset/subset/split/dimension: relative change; source
                        files that appeared or vanished
``drift_pairs``         pairs present in both releases whose chosen and rejected responses
                        were swapped (a flipped label), per dataset/subset/split/dimension
``drift_quarantine``    quarantine and flag rates per source file and reason
``drift_removed``       removed pairs per reason as a share of kept pairs
``drift_labels``        PKU label distributions per config/dimension (safety of chosen and
                        rejected, severity histogram, harm categories): chi-square test and
                        population stability index
``drift_lengths``       prompt and response lengths per dataset: chi-square and PSI over
                        power-of-two length bins; quantiles p5/p50/p95 shown
``drift_schema``        columns added, removed or retyped in any published table
======================  =================================================================

A distribution check fires only when the change is both significant (chi-square p-value under
the threshold: a smaller sample that happens to differ a little does not fire) and large (PSI
over the threshold: a huge sample that differs negligibly does not fire either). Thresholds are
:class:`DriftConfig` fields, with their sources; ``docs/validation.md`` explains each check.
The same function serves the publisher (which holds ``latest`` on an ERROR), the release's asset
checks, the alert, the card and ``releases diff``, so they cannot disagree.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
from annotated_types import Ge, Interval

from curation.core.bounds import InvalidConfig, field_problems

PASS, WARN, ERROR = "PASS", "WARN", "ERROR"
_ORDER = {PASS: 0, WARN: 1, ERROR: 2}
CHECKS = (
    "drift_rows",
    "drift_pairs",
    "drift_quarantine",
    "drift_removed",
    "drift_labels",
    "drift_lengths",
    "drift_schema",
)
CHECK_DESCRIPTIONS = {
    "drift_rows": "Pairs per dataset/subset/split/dimension and source files present, against "
    "the previous release",
    "drift_pairs": "Pairs (same prompt and responses) whose chosen and rejected responses were "
    "swapped since the previous release",
    "drift_quarantine": "Quarantine rate per source file and reason, against the previous release",
    "drift_removed": "Removed pairs per reason as a share of kept pairs, against the previous "
    "release",
    "drift_labels": "PKU label distributions (safety, severity, harm categories) per config and "
    "dimension: chi-square and PSI against the previous release",
    "drift_lengths": "Prompt and response length distributions per dataset: chi-square and PSI "
    "against the previous release",
    "drift_schema": "Columns added, removed or retyped in any published table",
}


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds of the release-over-release checks (``docs/validation.md``).

    Attributes:
        rows_warn, rows_error: relative change of a row count (pairs of one
            dataset/subset/split/dimension) that is a WARN / an ERROR. A refresh of the same
            upstream revision changes no count; a rule change that moves counts by a few percent
            is worth a look (5 %); a fifth of a file gone is the failure this check exists for
            (20 %).
        quarantine_warn, quarantine_error: change (absolute, in share of the file's rows) of the
            quarantine (or flag) rate of one file and reason; the same 1 % / 5 % as the
            ``quarantine_rate`` check's levels (``curation.core.report``: the real files' rates and
            why). This share, and the removed one, must also change significantly (a 2x2
            chi-square under ``p_warn``/``p_error``).
        removed_warn, removed_error: change (absolute) of one reason's removed pairs as a share
            of kept pairs: 1 % / 5 %, the scale of the quarantine levels.
        swapped_warn, swapped_error: share of the pairs two releases share whose chosen and
            rejected responses were swapped. Upstream labels do not change within a revision, so
            any swap is news; 1 % / 5 % on the scale of the other shares (the issue's flip of a
            fifth of the rows is four times the ERROR level).
        p_warn, p_error: chi-square p-values under which a distribution change is significant.
            0.05 is the usual level (Evidently's default for its chi-square test); with one test
            per config, dimension and label family (dozens per release) 0.01 / 0.001 keep the
            chance of a false alarm per release low (Bonferroni-like).
        psi_warn, psi_error: population stability index from which a significant change is a
            WARN / an ERROR: 0.1 and 0.25, the conventional "moderate" and "significant" shift
            levels (Siddiqi 2006, *Credit Risk Scorecards*; Evidently's PSI threshold 0.1).
        min_rows: a row count, or a distribution, with fewer observations than this on both
            sides is not judged (a change from 3 to 5 pairs is not a 67 % drift).
        allow_schema_change: a schema change is declared (a new column on purpose): WARN, not
            ERROR.
    """

    rows_warn: Annotated[float, Interval(gt=0, le=10)] = 0.05
    rows_error: Annotated[float, Interval(gt=0, le=10)] = 0.2
    quarantine_warn: Annotated[float, Interval(gt=0, le=1)] = 0.01
    quarantine_error: Annotated[float, Interval(gt=0, le=1)] = 0.05
    removed_warn: Annotated[float, Interval(gt=0, le=10)] = 0.01
    removed_error: Annotated[float, Interval(gt=0, le=10)] = 0.05
    swapped_warn: Annotated[float, Interval(gt=0, le=1)] = 0.01
    swapped_error: Annotated[float, Interval(gt=0, le=1)] = 0.05
    p_warn: Annotated[float, Interval(gt=0, le=1)] = 0.01
    p_error: Annotated[float, Interval(gt=0, le=1)] = 0.001
    psi_warn: Annotated[float, Interval(gt=0, le=100)] = 0.1
    psi_error: Annotated[float, Interval(gt=0, le=100)] = 0.25
    min_rows: Annotated[int, Ge(0)] = 20
    allow_schema_change: bool = False

    def __post_init__(self) -> None:
        """Refuse values of the wrong type or outside their declared range, and WARN levels
        above ERROR levels, all at once."""
        problems = field_problems(self)
        for warn, error, stricter in (
            ("rows_warn", "rows_error", "<="),
            ("quarantine_warn", "quarantine_error", "<="),
            ("removed_warn", "removed_error", "<="),
            ("swapped_warn", "swapped_error", "<="),
            ("psi_warn", "psi_error", "<="),
            ("p_error", "p_warn", "<="),
        ):
            if not problems.keys() & {warn, error} and getattr(self, warn) > getattr(self, error):
                problems[warn] = f"{warn}: must be {stricter} {error} ({getattr(self, error)})"
        if problems:
            raise InvalidConfig(list(problems.values()))


@dataclass(frozen=True)
class Finding:
    """One change that fired: what, where, before and after, and how sure."""

    check: str
    key: str  # e.g. "hh-rlhf/harmless-base/test/harmless" or "Alpaca-7B/harmless: safety"
    severity: str
    previous: Any
    new: Any
    detail: str
    statistic: float | None = None
    p_value: float | None = None

    def line(self) -> str:
        """``ERROR drift_rows hh-rlhf/harmless-base/test/harmless: 800 -> 560 (-30.0 %)``."""
        return f"{self.severity} {self.check} {self.key}: {self.detail}"


@dataclass
class CheckResult:
    """One check family's outcome."""

    check: str
    severity: str = PASS
    findings: list[Finding] = field(default_factory=list)
    compared: int = 0  # how many keys/distributions were compared
    baseline: bool = False

    @property
    def passed(self) -> bool:
        return self.severity == PASS

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)
        if _ORDER[finding.severity] > _ORDER[self.severity]:
            self.severity = finding.severity

    def description(self) -> str:
        """One line for the check's result."""
        if self.baseline:
            return "baseline: no previous release to compare with"
        if not self.findings:
            return f"no change beyond the thresholds ({self.compared} compared)"
        worst = sorted(self.findings, key=lambda f: -_ORDER[f.severity])[:3]
        more = len(self.findings) - len(worst)
        return "; ".join(f.line() for f in worst) + (f"; and {more} more" if more else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "compared": self.compared,
            "baseline": self.baseline,
            "findings": [asdict(f) for f in self.findings],
        }


# --- statistics ---------------------------------------------------------------------------------


def psi(previous: Mapping[str, int], new: Mapping[str, int], epsilon: float = 1e-4) -> float:
    """Population stability index sum((q - p) * ln(q / p)) over the union of categories, shares
    floored at ``epsilon`` (an empty category would be infinite)."""
    total_p, total_q = sum(previous.values()), sum(new.values())
    if not total_p or not total_q:
        return 0.0
    value = 0.0
    for key in set(previous) | set(new):
        p = max(previous.get(key, 0) / total_p, epsilon)
        q = max(new.get(key, 0) / total_q, epsilon)
        value += (q - p) * math.log(q / p)
    return value


def chi_square(previous: Mapping[str, int], new: Mapping[str, int]) -> tuple[float, float]:
    """Pearson's chi-square test of homogeneity of two count vectors (categories empty on both
    sides dropped): ``(statistic, p-value)``; ``(0, 1)`` when there is nothing to test."""
    from scipy.stats import chi2_contingency

    keys = sorted(k for k in set(previous) | set(new) if previous.get(k, 0) + new.get(k, 0) > 0)
    if len(keys) < 2 or not sum(previous.values()) or not sum(new.values()):
        return 0.0, 1.0
    table = [[previous.get(k, 0) for k in keys], [new.get(k, 0) for k in keys]]
    result = chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def _level(value: float, warn: float, error: float) -> str:
    return ERROR if value > error else WARN if value > warn else PASS


def _rate_level(
    before: tuple[int, int], after: tuple[int, int], warn: float, error: float, config: DriftConfig
) -> tuple[str, float]:
    """The level of a change of a share (``(count, total)`` before and after): large (over
    ``warn`` / ``error``, absolute) and significant (a 2x2 chi-square under ``p_warn`` /
    ``p_error``: one row more in a 15-row file is not drift). Also returns the p-value."""
    (was, old_total), (count, new_total) = before, after
    change = abs(count / max(new_total, 1) - was / max(old_total, 1))
    _, p_value = chi_square(
        {"in": was, "out": max(old_total - was, 0)}, {"in": count, "out": max(new_total - count, 0)}
    )
    if change > error and p_value < config.p_error:
        return ERROR, p_value
    if change > warn and p_value < config.p_warn:
        return WARN, p_value
    return PASS, p_value


def _percent(value: float) -> str:
    return f"{value * 100:+.1f} %"


# --- the checks ---------------------------------------------------------------------------------


def check_rows(
    previous: Mapping[str, Any],
    new: Mapping[str, Any],
    config: DriftConfig,
    allowed_missing: Iterable[str] = (),
) -> CheckResult:
    """Pairs per dataset/subset/split/dimension, and source files that appeared or vanished
    (a vanished file matching an ``allowed_missing`` glob is a WARN, otherwise an ERROR)."""
    result = CheckResult("drift_rows")
    old_files, new_files = previous.get("files", {}), new.get("files", {})
    allowed = list(allowed_missing)
    for name in sorted(set(old_files) | set(new_files)):
        was = old_files.get(name, {}).get("present", False)
        now = new_files.get(name, {}).get("present", False)
        result.compared += 1
        if was and not now:
            may = any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed)
            severity = WARN if may else ERROR
            why = " (allowed by allow_missing_files)" if may else ""
            result.add(
                Finding("drift_rows", name, severity, "present", "absent", f"file vanished{why}")
            )
        elif now and not was:
            result.add(Finding("drift_rows", name, WARN, "absent", "present", "file appeared"))
    old_rows, new_rows = previous.get("rows", {}), new.get("rows", {})
    for key in sorted(set(old_rows) | set(new_rows)):
        before, after = int(old_rows.get(key, 0)), int(new_rows.get(key, 0))
        result.compared += 1
        if max(before, after) < config.min_rows or before == after:
            continue
        change = (after - before) / before if before else math.inf
        severity = _level(abs(change), config.rows_warn, config.rows_error)
        if severity != PASS:
            detail = f"{before:,} -> {after:,} pairs ({_percent(change) if before else 'new'})"
            result.add(Finding("drift_rows", key, severity, before, after, detail))
    return result


def check_pairs(swaps: Mapping[str, Mapping[str, int]] | None, config: DriftConfig) -> CheckResult:
    """Pairs with the other response chosen now (:func:`swapped_pairs`), as a
    share of the pairs both releases hold, per dataset/subset/split/dimension."""
    result = CheckResult("drift_pairs")
    for group, counts in sorted((swaps or {}).items()):
        result.compared += 1
        common, swapped = int(counts["common"]), int(counts["swapped"])
        if common < config.min_rows or not swapped:
            continue
        share = swapped / common
        severity = _level(share, config.swapped_warn, config.swapped_error)
        if severity != PASS:
            detail = f"{swapped} of {common} pairs have the other response chosen ({share:.1%})"
            result.add(Finding("drift_pairs", group, severity, 0, swapped, detail))
    return result


def check_quarantine(
    previous: Mapping[str, Any], new: Mapping[str, Any], config: DriftConfig
) -> CheckResult:
    """Rate per source file and reason (share of the file's rows read) of the rows quarantined
    by ERROR rules and of the rows flagged by WARN rules (e.g. ``safer_has_higher_severity``:
    flipped PKU labels show here first); large and significant changes only."""
    result = CheckResult("drift_quarantine")
    old_files, new_files = previous.get("files", {}), new.get("files", {})
    for name in sorted(set(old_files) & set(new_files)):
        old, now = old_files[name], new_files[name]
        if not old.get("present") or not now.get("present"):
            continue  # appearing/vanishing files are drift_rows' business
        for kind in ("quarantined", "flagged"):
            before_counts, after_counts = old.get(kind, {}), now.get(kind, {})
            for reason in sorted(set(before_counts) | set(after_counts)):
                result.compared += 1
                was, count = before_counts.get(reason, 0), after_counts.get(reason, 0)
                severity, p_value = _rate_level(
                    (was, old["rows"]),
                    (count, now["rows"]),
                    config.quarantine_warn,
                    config.quarantine_error,
                    config,
                )
                if severity == PASS:
                    continue
                before, after = was / max(old["rows"], 1), count / max(now["rows"], 1)
                detail = (
                    f"{kind} {before:.2%} -> {after:.2%} of rows ({was} of {old['rows']} -> "
                    f"{count} of {now['rows']}, p = {p_value:.2g})"
                )
                result.add(
                    Finding(
                        "drift_quarantine",
                        f"{name}: {reason}",
                        severity,
                        round(before, 6),
                        round(after, 6),
                        detail,
                        p_value=p_value,
                    )
                )
    return result


def check_removed(
    previous: Mapping[str, Any], new: Mapping[str, Any], config: DriftConfig
) -> CheckResult:
    """Removed pairs per reason as a share of kept pairs; large and significant changes only."""
    result = CheckResult("drift_removed")
    old_kept, new_kept = max(int(previous.get("kept", 0)), 1), max(int(new.get("kept", 0)), 1)
    old_removed, new_removed = previous.get("removed", {}), new.get("removed", {})
    for reason in sorted(set(old_removed) | set(new_removed)):
        result.compared += 1
        was, count = old_removed.get(reason, 0), new_removed.get(reason, 0)
        severity, p_value = _rate_level(
            (was, old_kept + was),
            (count, new_kept + count),
            config.removed_warn,
            config.removed_error,
            config,
        )
        if severity == PASS:
            continue
        before, after = was / old_kept, count / new_kept
        detail = f"{before:.2%} -> {after:.2%} of kept pairs ({was} -> {count}, p = {p_value:.2g})"
        result.add(
            Finding(
                "drift_removed",
                reason,
                severity,
                round(before, 6),
                round(after, 6),
                detail,
                p_value=p_value,
            )
        )
    return result


def _distribution_finding(
    check: str,
    key: str,
    before: Mapping[str, int],
    after: Mapping[str, int],
    config: DriftConfig,
    shown: tuple[Any, Any] | None = None,
) -> Finding | None:
    """A finding when two count vectors differ significantly and by a large PSI."""
    if min(sum(before.values()), sum(after.values())) < config.min_rows:
        return None
    statistic, p_value = chi_square(before, after)
    index = psi(before, after)
    if p_value < config.p_error and index > config.psi_error:
        severity = ERROR
    elif p_value < config.p_warn and index > config.psi_warn:
        severity = WARN
    else:
        return None
    previous, new = shown or (dict(before), dict(after))
    detail = f"PSI {index:.3f}, chi-square {statistic:.1f} (p = {p_value:.2g}): {previous} -> {new}"
    return Finding(check, key, severity, previous, new, detail, round(statistic, 4), p_value)


def _shares(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: round(v / total, 4) for k, v in sorted(counts.items())} if total else {}


def check_labels(
    previous: Mapping[str, Any], new: Mapping[str, Any], config: DriftConfig
) -> CheckResult:
    """PKU label distributions per config/dimension: safety of chosen and rejected, severity
    histograms of chosen and of rejected, harm-category frequencies."""
    result = CheckResult("drift_labels")
    old_labels, new_labels = previous.get("labels", {}), new.get("labels", {})
    for group in sorted(set(old_labels) & set(new_labels)):
        for family in ("safety", "chosen_severity", "rejected_severity", "harm"):
            before = old_labels[group].get(family, {})
            after = new_labels[group].get(family, {})
            result.compared += 1
            shown = (_shares(before), _shares(after))
            finding = _distribution_finding(
                "drift_labels", f"{group}: {family}", before, after, config, shown
            )
            if finding is not None:
                result.add(finding)
    return result


def check_lengths(
    previous: Mapping[str, Any], new: Mapping[str, Any], config: DriftConfig
) -> CheckResult:
    """Prompt and response lengths per dataset (chi-square and PSI over the length bins)."""
    result = CheckResult("drift_lengths")
    old_lengths, new_lengths = previous.get("lengths", {}), new.get("lengths", {})
    for dataset in sorted(set(old_lengths) & set(new_lengths)):
        for kind in sorted(set(old_lengths[dataset]) & set(new_lengths[dataset])):
            old, now = old_lengths[dataset][kind], new_lengths[dataset][kind]
            result.compared += 1
            before = {str(i): n for i, n in enumerate(old["bins"]) if n}
            after = {str(i): n for i, n in enumerate(now["bins"]) if n}
            shown = (
                dict(zip(("p5", "p50", "p95"), old["quantiles"], strict=True)),
                dict(zip(("p5", "p50", "p95"), now["quantiles"], strict=True)),
            )
            finding = _distribution_finding(
                "drift_lengths", f"{dataset}: {kind}", before, after, config, shown
            )
            if finding is not None:
                result.add(finding)
    return result


def _columns(manifest: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    return {
        name: {c["name"]: c["type"] for c in info.get("schema") or []}
        for name, info in (manifest.get("tables") or {}).items()
    }


def check_schema(
    previous: Mapping[str, Any], new: Mapping[str, Any], config: DriftConfig
) -> CheckResult:
    """Columns added, removed or retyped in any published table (ERROR unless declared). A
    table the previous release did not have is one WARN: readers of the other tables are not
    affected (a table that disappears is an ERROR per column, like a removed column)."""
    result = CheckResult("drift_schema")
    severity = WARN if config.allow_schema_change else ERROR
    old_tables, new_tables = _columns(previous), _columns(new)
    for table in sorted(set(new_tables) - set(old_tables)):
        # a new table (e.g. the first release with the TRL view) breaks no reader of the others
        result.compared += 1
        result.add(
            Finding(
                "drift_schema",
                table,
                WARN,
                None,
                f"{len(new_tables[table])} columns",
                "table added",
            )
        )
    for table in sorted(set(old_tables)):
        before, after = old_tables.get(table, {}), new_tables.get(table, {})
        for column in sorted(set(before) | set(after)):
            result.compared += 1
            if before.get(column) == after.get(column):
                continue
            change = (
                "added"
                if column not in before
                else "removed"
                if column not in after
                else f"retyped {before[column]} -> {after[column]}"
            )
            result.add(
                Finding(
                    "drift_schema",
                    f"{table}.{column}",
                    severity,
                    before.get(column),
                    after.get(column),
                    f"column {change}" + (" (declared)" if config.allow_schema_change else ""),
                )
            )
    return result


def compare_releases(
    previous: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    config: DriftConfig | None = None,
    allowed_missing: Iterable[str] = (),
    swaps: Mapping[str, Mapping[str, int]] | None = None,
) -> list[CheckResult]:
    """Every check of ``new`` (a manifest, or its body before it is written) against
    ``previous`` (the release consumers had; ``None`` or one without a profile: a baseline, every
    check passes). ``allowed_missing``: globs of files (``dataset/path``) that may vanish (WARN);
    ``swaps``: :func:`swapped_pairs` of the two releases (None: not compared)."""
    config = config or DriftConfig()
    if not previous or not previous.get("profile") or not new.get("profile"):
        return [CheckResult(check, baseline=True) for check in CHECKS]
    old, now = previous["profile"], new["profile"]
    return [
        check_rows(old, now, config, allowed_missing),
        check_pairs(swaps, config),
        check_quarantine(old, now, config),
        check_removed(old, now, config),
        check_labels(old, now, config),
        check_lengths(old, now, config),
        check_schema(previous, new, config),
    ]


def swapped_pairs(previous: pa.Table, new: pa.Table) -> dict[str, dict[str, int]]:
    """Per group: pairs in both releases (same prompt and responses) and how many of them have
    the other response chosen now."""
    keys = ["group", "prompt_key", "low_key", "high_key"]

    def plain(table: pa.Table) -> pa.Table:
        return table.set_column(0, "group", table["group"].cast(pa.string()))

    joined = plain(previous).join(
        plain(new), keys=keys, right_suffix="_new", join_type="inner", use_threads=False
    )
    swapped = pc.not_equal(joined["chosen_key"], joined["chosen_key_new"])
    counts = pa.table({"group": joined["group"], "swapped": swapped})
    out: dict[str, dict[str, int]] = {}
    for row in (
        counts.group_by("group").aggregate([([], "count_all"), ("swapped", "sum")]).to_pylist()
    ):
        out[row["group"]] = {"common": row["count_all"], "swapped": int(row["swapped_sum"] or 0)}
    return dict(sorted(out.items()))


def worst(results: Iterable[CheckResult]) -> str:
    """The most severe outcome of ``results``."""
    return max((r.severity for r in results), key=_ORDER.__getitem__, default=PASS)


def _totals(rows: Mapping[str, int]) -> dict[str, int]:
    """Pairs per ``dataset/split`` from the per-``dataset/subset/split/dimension`` counts."""
    out: dict[str, int] = {}
    for key, count in rows.items():
        dataset, _subset, split, _dimension = key.split("/")
        out[f"{dataset}/{split}"] = out.get(f"{dataset}/{split}", 0) + int(count)
    return dict(sorted(out.items()))


def label_shares(labels: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per PKU ``config/dimension``: share of pairs whose chosen response is safe, whose rejected
    one is safe, and whose chosen one is unsafe."""
    out = {}
    for group, families in sorted(labels.items()):
        safety = families.get("safety", {})
        total = sum(safety.values())
        if not total:
            continue
        chosen_safe = safety.get("safe/safe", 0) + safety.get("safe/unsafe", 0)
        rejected_safe = safety.get("safe/safe", 0) + safety.get("unsafe/safe", 0)
        out[group] = {
            "chosen_is_safe": round(chosen_safe / total, 4),
            "rejected_is_safe": round(rejected_safe / total, 4),
            "chosen_unsafe": round(1 - chosen_safe / total, 4),
        }
    return out


def side_by_side(
    previous: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """What readers compare at a glance: pairs per dataset/split and PKU label shares, previous
    and new (``None`` on a side that has no such entry)."""
    old = (previous or {}).get("profile") or {}
    now = new.get("profile") or {}
    out: dict[str, dict[str, Any]] = {"pairs": {}, "labels": {}}
    old_totals, new_totals = _totals(old.get("rows", {})), _totals(now.get("rows", {}))
    for key in sorted(set(old_totals) | set(new_totals)):
        out["pairs"][key] = [old_totals.get(key), new_totals.get(key)]
    old_shares = label_shares(old.get("labels", {}))
    new_shares = label_shares(now.get("labels", {}))
    for group in sorted(set(old_shares) | set(new_shares)):
        for name in ("chosen_is_safe", "rejected_is_safe", "chosen_unsafe"):
            out["labels"][f"{group}: {name}"] = [
                old_shares.get(group, {}).get(name),
                new_shares.get(group, {}).get(name),
            ]
    return out


def changes_section(
    previous: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    results: list[CheckResult],
    held: bool,
) -> dict[str, Any]:
    """The manifest's ``changes``: the release compared with, each check, the side-by-side
    summary, whether ``latest`` was held."""
    return {
        "previous_release": (previous or {}).get("release_id"),
        "severity": worst(results),
        "held": held,
        "checks": [r.to_dict() for r in results],
        "side_by_side": side_by_side(previous, new),
    }
