"""Dataset card (``README.md``) and charts for a release, generated from its manifest and tables.

``render_card(manifest, tables)`` returns the markdown and ``{filename: png bytes}``; the
publisher writes both next to each other in the release folder. Rendering is deterministic for a
given manifest and tables (no timestamps in the PNGs), so concurrent publishers of the same
release produce byte-identical cards.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from huggingface_hub import DatasetCardData

from curation.core.report import SOURCES_HEADER, format_value, markdown_table, source_rows
from curation.core.schema import HARM_CATEGORIES, NO_SPLIT, SEVERITY_LEVELS
from curation.publish.card_changes import changes_section, checks_section
from curation.publish.charts import png
from curation.publish.trl import TRL_VIEW

REMOVALS_CHART = "removals_by_reason.png"
HARM_CHART = "pku_harm_category_by_severity.png"


def _registry() -> tuple:
    """The registered datasets (imported when a card is rendered: the registry imports polars,
    which the ``releases`` commands reading the release module must not)."""
    from curation.datasets import registered

    return registered()


def licences() -> dict[str, dict[str, str]]:
    """The upstream licence of every dataset, by name."""
    return {d.name: {"name": d.title, **asdict(d.licence)} for d in _registry()}


def hub_licence(name: str) -> str:
    """A licence name as the Hub's ``license`` field spells it (``CC BY-NC 4.0`` ->
    ``cc-by-nc-4.0``, ``MIT`` -> ``mit``)."""
    return "-".join(name.lower().split())


def _listed(names: Iterable[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    names = list(names)
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def _labelled() -> str:
    """The title(s) of the datasets whose pairs carry harm categories and severity levels."""
    return " and ".join(d.title for d in _registry() if d.harm_labels)


#: The pair columns this card reads: of a pair table given to the release as a
#: :class:`~curation.core.stage_table.StageTable`, the card gets only these (``tests/test_release.py``
#: checks that the card comes out the same as from the whole table).
CARD_PAIR_COLUMNS = (
    "dataset",
    "subset",
    "split",
    "dimension",
    "source_file",
    "source_line",
    "chosen_harm_categories",
    "chosen_severity",
    "rejected_harm_categories",
    "rejected_severity",
)


# ---------------------------------------------------------------------------- helpers


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        out: list[tuple[str, Any]] = []
        for k in sorted(obj, key=str):
            out += _flatten(obj[k], f"{prefix} / {k}" if prefix else str(k))
        return out
    if isinstance(obj, list | tuple) and obj and all(isinstance(v, Mapping) for v in obj):
        return [(prefix, json.dumps(list(obj), sort_keys=True, default=str)[:200])]
    return [(prefix, obj)]


def _value_counts(values: pa.Array | pa.ChunkedArray) -> list[tuple[str, int]]:
    if len(values) == 0:
        return []
    vc = pc.value_counts(values)
    pairs = [
        ("(none)" if v is None else str(v), int(c))
        for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)
    ]
    return sorted(pairs, key=lambda p: (-p[1], p[0]))


def _group_counts(table: pa.Table, keys: list[str]) -> list[list[Any]]:
    keys = [k for k in keys if k in table.column_names]
    if not keys or table.num_rows == 0:
        return []
    grouped = table.select(keys).group_by(keys, use_threads=False).aggregate([([], "count_all")])
    rows = [[*(r[k] for k in keys), r["count_all"]] for r in grouped.to_pylist()]
    return sorted(rows, key=lambda r: tuple("" if v is None else str(v) for v in r[:-1]))


def removal_counts(removed: pa.Table | None) -> list[tuple[str, int]]:
    """``[(reason, rows)]`` of the removed table, most frequent first."""
    if removed is None or "reason" not in removed.column_names:
        return []
    return _value_counts(removed.column("reason"))


def quarantine_counts(quarantine: pa.Table | None) -> list[tuple[str, int]]:
    """``[(reason, rows)]`` of the quarantine table (a row with several reasons counts once per reason)."""
    if quarantine is None or "reasons" not in quarantine.column_names or quarantine.num_rows == 0:
        return []
    return _value_counts(pc.list_flatten(quarantine.column("reasons")))


def harm_severity_counts(pairs: pa.Table | None) -> Counter[tuple[str, int | None]]:
    """Counts of (harm category, severity) over the distinct PKU responses of ``pairs``.

    PKU source rows appear once per dimension with the same two responses, so rows are first
    de-duplicated on (source_file, source_line); each response then contributes one count per
    harm category it is tagged with.
    """
    counts: Counter[tuple[str, int | None]] = Counter()
    needed = {"dataset", "chosen_harm_categories", "chosen_severity"}
    if pairs is None or pairs.num_rows == 0 or not needed <= set(pairs.column_names):
        return counts
    labelled = pa.array([d.name for d in _registry() if d.harm_labels], pa.string())
    pku = pairs.filter(pc.is_in(pairs.column("dataset"), labelled))
    if pku.num_rows == 0:
        return counts
    keys = [k for k in ("source_file", "source_line") if k in pku.column_names]
    if keys:
        idx = pku.select(keys).append_column("__i", pa.array(range(pku.num_rows), pa.int64()))
        first = idx.group_by(keys, use_threads=False).aggregate([("__i", "min")])
        pku = pku.take(first.column("__i_min"))
    for side in ("chosen", "rejected"):
        cats_col, sev_col = f"{side}_harm_categories", f"{side}_severity"
        if cats_col not in pku.column_names or sev_col not in pku.column_names:
            continue
        cats = pku.column(cats_col).combine_chunks()
        flat = pc.list_flatten(cats)
        if len(flat) == 0:
            continue
        parents = pc.list_parent_indices(cats)
        sev = pc.take(pku.column(sev_col), parents)
        for cat, s in zip(flat.to_pylist(), sev.to_pylist(), strict=True):
            counts[(str(cat), None if s is None else int(s))] += 1
    return counts


# ---------------------------------------------------------------------------- charts


def _bar_chart(counts: list[tuple[str, int]], title: str, xlabel: str) -> bytes:
    from matplotlib.figure import Figure

    labels = [c[0] for c in counts][::-1]
    values = [c[1] for c in counts][::-1]
    label_in = 0.2 + 0.075 * max((len(x) for x in labels), default=0)  # room for the labels
    width, height = 6.0 + label_in, 0.45 * max(len(labels), 2) + 1.2
    fig = Figure(figsize=(width, height))  # fixed margins: cheaper than constrained layout
    fig.subplots_adjust(
        left=label_in / width, right=0.97, top=1 - 0.45 / height, bottom=0.55 / height
    )
    ax = fig.add_subplot()
    bars = ax.barh(labels, values, color="#4C72B0")
    ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=3, fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.margins(x=0.15)
    return png(fig)


def _heatmap(counts: Counter[tuple[str, int | None]]) -> bytes:
    from matplotlib.figure import Figure

    present = {c for c, _ in counts}
    categories = [c for c in HARM_CATEGORIES if c in present] + sorted(
        present - set(HARM_CATEGORIES)
    )
    levels = {s for _, s in counts} | set(SEVERITY_LEVELS[1:])  # 0 = safe (no category)
    severities = sorted(levels, key=lambda s: (s is None, s if s is not None else 0))
    grid = [[counts.get((c, s), 0) for s in severities] for c in categories]
    label_in = 0.3 + 0.06 * max((len(c) for c in categories), default=0)
    width, height = label_in + 2.0 + 0.9 * len(severities), 0.38 * len(categories) + 1.4
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=label_in / width, right=1 - 1.4 / width, top=1 - 0.4 / height, bottom=0.6 / height
    )
    ax = fig.add_subplot()
    image = ax.imshow(grid, aspect="auto", cmap="Reds")
    ax.set_xticks(range(len(severities)), ["unknown" if s is None else str(s) for s in severities])
    ax.set_yticks(range(len(categories)), categories, fontsize=8)
    ax.set_xlabel("severity level")
    ax.set_title(f"{_labelled()}: harm category x severity", fontsize=10)
    top = max((max(r) for r in grid), default=0) or 1
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(
                j,
                i,
                f"{v:,}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v > top / 2 else "black",
            )
    cax = fig.add_axes((1 - 1.2 / width, 0.6 / height, 0.15 / width, 1 - 1.0 / height))
    fig.colorbar(image, cax=cax, label="responses")
    return png(fig)


# ---------------------------------------------------------------------------- the card


def _data_files(manifest: Mapping[str, Any]) -> dict[str, dict[str | None, list[str]]]:
    """``{table: {split or None: [relative paths]}}`` from the manifest."""
    out: dict[str, dict[str | None, list[str]]] = {}
    for name, info in manifest.get("tables", {}).items():
        splits: dict[str | None, list[str]] = {}
        for f in info.get("files", []):
            splits.setdefault(f.get("split"), []).append(f["path"])
        out[name] = splits
    return out


def _front_matter(manifest: Mapping[str, Any]) -> str:
    """The YAML front matter: licences, name, tags and one Hub ``configs`` entry per table.

    Written by ``huggingface_hub.DatasetCardData``, so the Hub and ``datasets.load_dataset`` read
    the same metadata we write; ``pairs`` is the default config and a table without a split
    level is exposed as split ``train``.
    """
    configs: list[dict[str, Any]] = []
    for name, splits in _data_files(manifest).items():
        if not splits:
            continue
        config: dict[str, Any] = {"config_name": name}
        if name == "pairs":
            config["default"] = True
        config["data_files"] = [
            {
                "split": split if split is not None else "train",
                "path": f"{name}/{split}/*.parquet" if split is not None else f"{name}/*.parquet",
            }
            for split in sorted(splits, key=lambda s: "" if s is None else s)
        ]
        configs.append(config)
    data = DatasetCardData(
        license=list(dict.fromkeys(hub_licence(d.licence.licence) for d in _registry())),
        pretty_name=f"Curated RLHF preference pairs (release {manifest.get('release_id')})",
        tags=["rlhf", "preference", "safety"],
        configs=configs,
    )
    return f"---\n{data.to_yaml()}\n---"


def _title_section(manifest: Mapping[str, Any]) -> list[str]:
    """The title, what the release contains, and its identity (id, sequence, parent, versions)."""
    rid = manifest.get("release_id", "?")
    parent = manifest.get("parent_release_id")
    return [
        f"# Curated RLHF preference pairs - release `{rid}`",
        "",
        f"Preference pairs curated from {_listed(d.title for d in _registry())}: parsed, validated, "
        "deduplicated and decontaminated. One row of `pairs` is one (source row, dimension) "
        "preference: `prompt`/`prompt_turns`, a `chosen` and a `rejected` response, and for "
        f"{_labelled()} the per-response safety labels, severity levels and harm categories. "
        "Rows that failed validation are in `quarantine`, pairs dropped by dedup or "
        "decontamination in `removed` (with what they matched), train pairs whose opening "
        "paraphrases a test opening in `paraphrases` (a report), and the HH red-team "
        "transcripts in `red_team`. `trl` holds the same pairs in TRL's conversational preference "
        "format (see How to load). This card is generated from the release manifest.",
        "",
        markdown_table(
            ["field", "value"],
            [
                ["release id", f"`{rid}`"],
                ["sequence", manifest.get("sequence")],
                ["parent release", f"`{parent}`" if parent else "(none)"],
                ["created at (UTC)", manifest.get("created_at")],
                ["code version", f"`{manifest.get('code_version')}`"],
                ["format version", manifest.get("format_version")],
            ],
        ),
        "",
    ]


def _contents_section(manifest: Mapping[str, Any]) -> list[str]:
    """One row per table: rows, files and rows per split (from the manifest)."""
    rows = []
    for name, info in manifest.get("tables", {}).items():
        splits = info.get("splits") or {}
        split_txt = ", ".join(f"{k}: {format_value(v)}" for k, v in splits.items()) or "-"
        rows.append([f"`{name}`", info.get("rows", 0), len(info.get("files", [])), split_txt])
    lines = [
        "## Contents",
        "",
        markdown_table(["table", "rows", "files", "rows per split"], rows),
        "",
    ]
    if any(NO_SPLIT in (info.get("splits") or {}) for info in manifest.get("tables", {}).values()):
        lines += [
            f"`{NO_SPLIT}`: rows that belong to no split (the quarantined HH red-team rows), in "
            f"the folder `<table>/{NO_SPLIT}/` and the Hub split `{NO_SPLIT}`; their `split` "
            "column is null.",
            "",
        ]
    return lines


def _sources_section(manifest: Mapping[str, Any]) -> list[str]:
    """One row per upstream source (``curation.core.report.source_rows``, as ``releases show``)."""
    sources = manifest.get("sources") or []
    if not sources:
        return []
    return [
        "## Sources",
        "",
        markdown_table(SOURCES_HEADER, source_rows(sources)),
        "",
        "`files present / listed`: the source list names every upstream file of a dataset; a "
        "file absent from the mirror is listed (with `present: false` in the manifest) but not "
        "read. `rows read` counts the rows of the present files.",
        "",
    ]


def _pairs_section(pairs: pa.Table | None) -> list[str]:
    """Pair counts per dataset, subset, split and dimension (only when ``pairs`` has rows)."""
    if pairs is None or not pairs.num_rows:
        return []
    return [
        "## Pairs per dataset, subset, split and dimension",
        "",
        markdown_table(
            ["dataset", "subset", "split", "dimension", "pairs"],
            _group_counts(pairs, ["dataset", "subset", "split", "dimension"]),
        ),
        "",
    ]


def _removals_section(removed: pa.Table | None) -> tuple[list[str], dict[str, bytes]]:
    """Removed pairs by reason, and by reason, method and dataset, with a bar chart."""
    counts = removal_counts(removed)
    lines = ["## Removals by reason", ""]
    if not counts or removed is None:
        return [*lines, "No pairs were removed by dedup or decontamination.", ""], {}
    lines += [
        markdown_table(["reason", "pairs removed"], [list(r) for r in counts]),
        "",
        markdown_table(
            ["reason", "method", "dataset", "pairs"],
            _group_counts(removed, ["reason", "method", "dataset"]),
        ),
        "",
        f"![Pairs removed by reason]({REMOVALS_CHART})",
        "",
    ]
    return lines, {REMOVALS_CHART: _bar_chart(counts, "Pairs removed by reason", "pairs")}


#: Examples of the paraphrase section (the highest scores, one per text pair).
PARAPHRASE_EXAMPLES = 10


def _paraphrase_section(manifest: Mapping[str, Any], paraphrases: pa.Table | None) -> list[str]:
    """The paraphrase report: train pairs whose opening reads like a test opening in other
    words (counts per dataset pair, the top examples); nothing for a release without it."""
    if paraphrases is None:
        return []
    decontam = (manifest.get("config") or {}).get("decontam") or {}
    threshold = decontam.get("paraphrase_threshold")
    removed = decontam.get("paraphrase") == "remove"
    lines = [
        "## Paraphrased test prompts",
        "",
        "Train pairs no decontamination rule matched whose opening (first human turn) has a "
        "test opening of close meaning: cosine similarity of static embeddings (wordllama) "
        f"of at least {threshold}. On hand-labelled real rows about two in three such links "
        "are the same question in other words; the others are template siblings, more "
        "specific questions or related ones (see `docs/dedup.md` of the pipeline). "
        + (
            "These pairs were **removed** (`contaminated_paraphrase`)."
            if removed
            else "These pairs are **kept**: this is a report, for the training team to decide."
        )
        + " The `paraphrases` table lists every link with both texts (normalized).",
        "",
    ]
    if decontam.get("paraphrase") == "off":
        return [*lines[:2], "The search was off (`decontam.paraphrase: off`).", ""]
    if paraphrases.num_rows == 0:
        return [*lines, "No train pair was linked to a test opening.", ""]
    from curation.match.paraphrase import (
        paraphrase_markdown,  # polars and scipy: not for `releases`
    )

    by_dataset, top = paraphrase_markdown(paraphrases, PARAPHRASE_EXAMPLES)
    return [*lines, by_dataset, "", "The closest links (one per text pair):", "", top, ""]


def _quarantine_section(quarantine: pa.Table | None) -> list[str]:
    """Quarantined rows by reason (a row counts once per rule it failed)."""
    counts = quarantine_counts(quarantine)
    lines = ["## Quarantine by reason", ""]
    if not counts:
        return [*lines, "No rows were quarantined.", ""]
    return [
        *lines,
        "A quarantined row counts once for each rule it failed.",
        "",
        markdown_table(["reason", "rows"], [list(r) for r in counts]),
        "",
    ]


def _harm_section(pairs: pa.Table | None) -> tuple[list[str], dict[str, bytes]]:
    """The PKU harm category x severity heatmap (only when PKU pairs carry categories)."""
    counts = harm_severity_counts(pairs)
    if not counts:
        return [], {}
    lines = [
        f"## {_labelled()} harm categories by severity",
        "",
        f"Distinct {_labelled()} responses (chosen and rejected) per harm category and "
        "severity level; a response tagged with several categories counts once per category.",
        "",
        f"![PKU harm category by severity]({HARM_CHART})",
        "",
    ]
    return lines, {HARM_CHART: _heatmap(counts)}


def _flat_section(title: str, header: list[str], values: Mapping[str, Any] | None) -> list[str]:
    """A two-column table of a nested mapping (keys joined with `` / ``); nothing if empty."""
    if not values:
        return []
    return [f"## {title}", "", markdown_table(header, [list(r) for r in _flatten(values)]), ""]


def _licences_section() -> list[str]:
    """The upstream licences and what they mean for the derived rows."""
    return [
        "## Licences",
        "",
        markdown_table(
            ["source", "licence", "copyright holder", "upstream"],
            [[v["name"], v["licence"], v["holder"], v["url"]] for v in licences().values()],
        ),
        "",
        " ".join(d.licence.note.format(dataset=d.name) for d in _registry())
        + f" Attribute {'both' if len(_registry()) == 2 else 'all'} upstream datasets when "
        "redistributing. The data contain offensive and harmful text by design (red-teaming and "
        "safety preference data).",
        "",
    ]


def render_card(
    manifest: Mapping[str, Any],
    tables: Mapping[str, pa.Table] | None = None,
    *,
    base_uri: str | None = None,
) -> tuple[str, dict[str, bytes]]:
    """The dataset card markdown and its charts (``{filename: png bytes}``).

    ``tables`` are the release's tables (``pairs``, ``removed``, ``quarantine``...); counts fall
    back to the manifest when a table is not given. ``base_uri`` is the release folder's URI:
    an ``s3://`` one is shown in the loading snippets; a local one never is (it is a path on
    the publishing machine), the snippets then use paths relative to the release folder.
    """
    tables = tables or {}
    removals, removals_chart = _removals_section(tables.get("removed"))
    harm, harm_chart = _harm_section(tables.get("pairs"))
    changes, changes_chart = changes_section(manifest)
    sections = [
        [_front_matter(manifest), ""],
        _title_section(manifest),
        _contents_section(manifest),
        _sources_section(manifest),
        _pairs_section(tables.get("pairs")),
        removals,
        _paraphrase_section(manifest, tables.get("paraphrases")),
        _quarantine_section(tables.get("quarantine")),
        harm,
        changes,
        _flat_section("Pipeline counts", ["count", "value"], manifest.get("counts")),
        checks_section(manifest),
        _licences_section(),
        _loading_section(manifest, _remote_release_uri(base_uri)),
    ]
    markdown = "\n".join(line for section in sections for line in section)
    return markdown.rstrip() + "\n", {**removals_chart, **harm_chart, **changes_chart}


def _remote_release_uri(base_uri: str | None) -> str | None:
    """The release folder's URI when it is one others can use (``s3://``), else ``None``."""
    if base_uri and base_uri.startswith("s3://"):
        return base_uri.rstrip("/")
    return None


def _loading_section(manifest: Mapping[str, Any], remote: str | None) -> list[str]:
    """How to read the release with pandas, DuckDB, polars, ``datasets`` and our reader.

    Paths are relative to the release folder (``base = "."``: the folder of this card), or
    under the store's ``s3://`` URI; never a local path of the machine that published it.
    """
    rid = manifest.get("release_id", "?")
    files = _data_files(manifest)
    pair_splits = sorted(s for s in files.get("pairs", {}) if s is not None) or ["train", "test"]
    split = "train" if "train" in pair_splits else pair_splits[0]
    opts = ", storage_options={...}" if remote else ""
    hf_files = ", ".join(f'"{s}": f"{{base}}/pairs/{s}/*.parquet"' for s in pair_splits)
    if remote:
        base_line = f'base = "{remote}"'
        store_line = f'release = open_release("{remote.rsplit("/releases/", 1)[0]}", "{rid}")'
        where = f"Data files live under `{remote}/<table>/<split>/part-NNNNN.parquet`"
    else:
        base_line = f'base = "."  # this release\'s folder (releases/{rid}/ in the store)'
        store_line = (
            f'release = open_release("path/to/store", "{rid}")  # the folder holding releases/'
        )
        where = (
            "Paths are relative to this release's folder (the folder of this card, "
            f"`releases/{rid}/` in the store): data files live under "
            "`<table>/<split>/part-NNNNN.parquet`"
        )
    lines = [
        "## How to load",
        "",
        f"{where} (`red_team` has no split level); every file of a table has the same schema "
        "and also carries the `split` column. The manifest (`manifest.json`) lists every file "
        "with its row count, size and sha256.",
        "",
    ]
    if remote:
        lines += [
            "For S3, `storage_options` are the usual s3fs options (e.g. `{'endpoint_url': ...}`) "
            "or the `AWS_*` environment variables; DuckDB needs the `httpfs` extension and an S3 secret.",
            "",
        ]
    lines += [
        "pandas:",
        "",
        "```python",
        "import pandas as pd",
        base_line,
        f'train = pd.read_parquet(f"{{base}}/pairs/{split}"{opts})',
        f'pairs = pd.read_parquet(f"{{base}}/pairs"{opts})  # all splits',
        "```",
        "",
        "DuckDB:",
        "",
        "```python",
        "import duckdb",
        base_line,
        "duckdb.sql(",
        '    "SELECT dataset, split, dimension, count(*) AS n "',
        "    f\"FROM read_parquet('{base}/pairs/*/*.parquet') GROUP BY ALL ORDER BY ALL\"",
        ").show()",
        "```",
        "",
        "polars:",
        "",
        "```python",
        "import polars as pl",
        base_line,
        'pairs = pl.scan_parquet(f"{base}/pairs/*/*.parquet").collect()',
        "```",
        "",
        "Hugging Face `datasets` (or `load_dataset(base)`: the `configs` of this card's front "
        "matter name every table and split):",
        "",
        "```python",
        "from datasets import load_dataset",
        base_line,
        f'ds = load_dataset("parquet", data_files={{{hf_files}}}{opts})',
        "```",
        "",
        *_trl_lines(files, base_line, opts),
        "With this project's reader (resolves the manifest, checks nothing is missing, verifies "
        "hashes on demand):",
        "",
        "```python",
        "from curation.publish.reader import open_release",
        store_line,
        f'train = release.to_pandas("pairs", split="{split}")',
        "problems = release.verify()",
        "```",
        "",
    ]
    return lines


def _trl_lines(files: Mapping[str, Any], base_line: str, opts: str) -> list[str]:
    """How to load the ``trl`` view for TRL's trainers (nothing when the release has none)."""
    splits = sorted(s for s in files.get(TRL_VIEW, {}) if s is not None)
    if not splits:
        return []
    data_files = ", ".join(f'"{s}": f"{{base}}/{TRL_VIEW}/{s}/*.parquet"' for s in splits)
    return [
        f"TRL (`DPOTrainer`, `RewardTrainer`): `{TRL_VIEW}` holds the rows of `pairs` in TRL's "
        "conversational preference format: `prompt` (the turns before the responses), `chosen` "
        "and `rejected` (one assistant message each) are lists of `{role, content}` messages "
        "with roles `user`/`assistant`; `pair_id`, `dataset`, `subset`, `split` and `dimension` "
        "join a row back to `pairs` (filter on `dataset` for a licence, on `dimension` for "
        "helpful or harmless preferences):",
        "",
        "```python",
        "from datasets import load_dataset",
        base_line,
        f'prefs = load_dataset("parquet", data_files={{{data_files}}}{opts})',
        f'# or load_dataset(base, "{TRL_VIEW}"): the card\'s `{TRL_VIEW}` config',
        "```",
        "",
    ]
