"""A team's own preference data, declared in the settings file instead of written as code.

A declaration (the ``datasets:`` section of a ``--config`` file or of ``$CURATION_CONFIG``)::

    datasets:
      acme-prefs:
        uri: s3://bucket/acme-prefs        # any URI a built-in source accepts, no credentials
        format: trl                        # TRL's preference format (curation.datasets.trl_format)
        splits: {train: "train*.jsonl.gz", test: "test.jsonl"}   # names or globs under uri
        licence: "CC-BY-4.0"
        dimension: helpful                 # optional, default "preference"
        revision: v1                       # optional, like *_REVISION of a built-in source

becomes one :class:`TrlDataset`: a :class:`~curation.datasets.base.PreferenceDataset` like the
built-in ones, with one source file per split (subset :data:`SUBSET`; a split whose pattern
is a glob reads every matching file, :func:`curation.ingest.ingest.ingest_file`), the ``trl`` rule
family, a GX suite generated from the declaration, and the licence it declares. The registry
holds the declared datasets of the process beside the built-in ones
(:func:`curation.datasets.use_declared`).

Every problem of a declaration is one line naming its key (``datasets.acme-prefs.splits``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.bounds import key_text, quoted
from curation.core.jsonl import FieldSpec
from curation.core.redact import has_credentials, redact_uri
from curation.core.rules import ERROR, Masks, Rule, RuleFamily, blank, np_values
from curation.core.schema import DIMENSIONS, SPLITS, TURN
from curation.core.suite_builder import STR_TYPES, SuiteBuilder
from curation.datasets import trl_format
from curation.datasets.base import (
    Licence,
    PreferenceDataset,
    Reader,
    SourceFile,
    SuiteDef,
    pair_table,
)

#: Formats a declaration may name.
FORMATS = ("trl",)
#: ``SourceFile.kind`` of a declared TRL file.
TRL_KIND = "trl"
#: The subset of every declared dataset's files (Hugging Face's name of a dataset's one config).
SUBSET = "default"
#: File name endings a split may match (JSON Lines, gzip or not, and parquet).
SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
#: A dataset name: lower case letters, digits, ``-`` and ``_`` (it becomes an asset key part
#: and a folder name), starting with a letter or digit.
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: Keys of one declaration: required, optional.
REQUIRED_KEYS = ("uri", "format", "splits", "licence")
OPTIONAL_KEYS = ("dimension", "revision")
#: The dimension of a declared dataset's pairs when its declaration names none.
DEFAULT_DIMENSION = trl_format.DEFAULT_DIMENSION


@dataclass(frozen=True)
class Declaration:
    """One declared dataset, checked (:func:`parse_declarations`)."""

    name: str
    uri: str
    splits: tuple[tuple[str, str], ...]  # (split, name or glob under uri), in SPLITS order
    licence: str
    format: str = "trl"
    dimension: str = DEFAULT_DIMENSION
    revision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The declaration as the settings file gives it (recorded in the release)."""
        out: dict[str, Any] = {
            "uri": self.uri,
            "format": self.format,
            "splits": dict(self.splits),
            "licence": self.licence,
            "dimension": self.dimension,
        }
        if self.revision:
            out["revision"] = self.revision
        return out


def _resolve_uri(uri: str, base_dir: Path | None) -> str:
    """A relative local path is taken from the settings file's folder."""
    if "://" in uri or base_dir is None or Path(uri).is_absolute():
        return uri
    return str((base_dir / uri).resolve())


def _pattern_problem(pattern: Any) -> str | None:
    if not isinstance(pattern, str) or not pattern.strip():
        return f"must be a file name or a glob under uri, not {quoted(pattern)}"
    parts = pattern.replace("\\", "/").split("/")
    if pattern.startswith("/") or ".." in parts or "://" in pattern:
        return f"{quoted(pattern)} must stay under uri (no absolute path, no ..)"
    if not pattern.endswith(SUFFIXES) and not pattern.endswith("*"):
        return f"{quoted(pattern)} must end with one of {list(SUFFIXES)} (or be a glob ending in *)"
    return None


def _declaration(
    name: str, body: Any, base_dir: Path | None
) -> tuple[Declaration | None, list[str]]:
    where = f"datasets.{key_text(name)}"
    if not isinstance(body, Mapping):
        return None, [f"{where}: must be a mapping of {list(REQUIRED_KEYS)}, not {quoted(body)}"]
    problems = [
        f"{where}.{key_text(k)}: unknown key; known: {[*REQUIRED_KEYS, *OPTIONAL_KEYS]}"
        for k in body
        if k not in (*REQUIRED_KEYS, *OPTIONAL_KEYS)
    ]
    problems += [f"{where}.{k}: required" for k in REQUIRED_KEYS if body.get(k) in (None, "")]
    uri, fmt, licence = body.get("uri"), body.get("format"), body.get("licence")
    dimension, revision, splits = (
        body.get("dimension", DEFAULT_DIMENSION),
        body.get("revision"),
        body.get("splits"),
    )
    if uri is not None and not isinstance(uri, str):
        problems.append(f"{where}.uri: must be a string, not {quoted(uri)}")
    elif isinstance(uri, str) and has_credentials(uri):
        problems.append(
            f"{where}.uri: {redact_uri(uri)} has credentials in it (they would be recorded); "
            "give them in the environment (AWS_*, SOURCES_HTTP_HEADERS, HF_TOKEN)"
        )
    if fmt is not None and fmt not in FORMATS:
        problems.append(f"{where}.format: {quoted(fmt)} is not one of {list(FORMATS)}")
    if licence is not None and (not isinstance(licence, str) or not licence.strip()):
        problems.append(f"{where}.licence: must be a licence name, not {quoted(licence)}")
    if dimension not in (*DIMENSIONS,):
        problems.append(f"{where}.dimension: {quoted(dimension)} is not one of {list(DIMENSIONS)}")
    if revision is not None and not isinstance(revision, str):
        problems.append(f"{where}.revision: must be a string, not {quoted(revision)}")
    pairs: list[tuple[str, str]] = []
    if splits is not None and (not isinstance(splits, Mapping) or not splits):
        problems.append(f"{where}.splits: must map split names {list(SPLITS)} to file names")
    elif isinstance(splits, Mapping):
        for split, pattern in splits.items():
            if split not in SPLITS:
                problems.append(f"{where}.splits.{key_text(split)}: not one of {list(SPLITS)}")
                continue
            problem = _pattern_problem(pattern)
            if problem:
                problems.append(f"{where}.splits.{split}: {problem}")
            else:
                pairs.append((split, pattern.strip()))
    if problems:
        return None, problems
    ordered = tuple(sorted(pairs, key=lambda p: SPLITS.index(p[0])))
    return (
        Declaration(
            name=name,
            uri=_resolve_uri(uri, base_dir),
            splits=ordered,
            licence=licence.strip(),
            format=fmt,
            dimension=dimension,
            revision=revision,
        ),
        [],
    )


def parse_declarations(
    section: Any, *, base_dir: Path | None = None, reserved: Collection[str] = ()
) -> tuple[list[Declaration], list[str]]:
    """The declarations of a ``datasets:`` section, and one line per problem (names: lower case
    letters, digits, ``-``, ``_``; not one of ``reserved``, the built-in datasets)."""
    if section is None:
        return [], []
    if not isinstance(section, Mapping):
        return [], [f"datasets: must map dataset names to declarations, not {quoted(section)}"]
    found, problems = [], []
    for name, body in section.items():
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(
                f"datasets.{key_text(name)}: a dataset name is lower case letters, digits, - "
                "and _ (at most 63)"
            )
            continue
        if name in reserved:
            problems.append(f"datasets.{name}: a built-in dataset; declare another name")
            continue
        declaration, more = _declaration(name, body, base_dir)
        problems += more
        if declaration is not None:
            found.append(declaration)
    return found, problems


# ---------------------------------------------------------------------------- rules

_TURNS = ("prompt_turns", "chosen", "rejected")
TRL_RULES = (
    Rule("empty_content", ERROR, "a prompt turn, the chosen or the rejected text is blank", _TURNS),
    Rule(
        "prompt_not_ending_with_user",
        ERROR,
        "the prompt's last turn is not a user turn",
        ("prompt_turns",),
    ),
    Rule("identical_responses", ERROR, "chosen and rejected are identical", ("chosen", "rejected")),
    Rule(
        "context_mismatch",
        ERROR,
        "an implicit-prompt row whose chosen and rejected give different prompts",
        ("prompt", "rejected_prompt"),
    ),
)


def _last_roles(turns: pa.ChunkedArray) -> np.ndarray:
    """The role of each row's last turn (``""`` for a row without turns)."""
    lengths = np_values(pc.fill_null(pc.list_value_length(turns), 0)).astype(np.int64)
    roles = np_values(pc.struct_field(pc.list_flatten(turns), "role")).astype(object)
    out = np.full(len(lengths), "", dtype=object)
    has = lengths > 0
    out[has] = roles[np.cumsum(lengths)[has] - 1]
    return out


def _trl_masks(table: pa.Table) -> Masks:
    """TRL preference rows: content present, the prompt ends with a user turn, two different
    responses, one prompt for both sides."""
    turns = table.column("prompt_turns")
    blank_turn = np.zeros(table.num_rows, bool)
    flat = pc.list_flatten(turns)
    if len(flat):
        rows = np_values(pc.list_parent_indices(turns)).astype(np.int64)
        np.logical_or.at(blank_turn, rows, blank(pc.struct_field(flat, "text")))
    chosen, rejected = table.column("chosen"), table.column("rejected")
    empty = blank_turn | blank(chosen) | blank(rejected)
    same_prompt = pc.equal(table.column("prompt"), table.column("rejected_prompt"))
    return {
        "empty_content": empty,
        "prompt_not_ending_with_user": _last_roles(turns) != "human",
        "identical_responses": np_values(pc.fill_null(pc.equal(chosen, rejected), False)).astype(
            bool
        ),
        "context_mismatch": ~np_values(pc.fill_null(same_prompt, False)).astype(bool),
    }


TRL_FAMILY = RuleFamily(TRL_KIND, TRL_RULES, _trl_masks)


def _trl_suite(b: SuiteBuilder) -> None:
    """The raw suite of a declared TRL dataset: its parsed columns (every form has them)."""
    b.exists(*trl_format.TRL_ROWS.names)
    b.types(STR_TYPES, "form", "prompt", "chosen", "rejected")
    b.in_set(list(trl_format.FORMS), "form")
    b.not_null("prompt", "chosen", "rejected")
    b.non_blank("chosen", "rejected")


# ---------------------------------------------------------------------------- the dataset


class TrlDataset(PreferenceDataset):
    """A dataset in TRL's preference format, from its :class:`Declaration`."""

    harm_labels = False
    setting = ""
    sample = ""

    def __init__(self, declaration: Declaration) -> None:
        self.declaration = declaration
        self.name = declaration.name  # type: ignore[misc]
        self.title = declaration.name  # type: ignore[misc]
        self.licence = Licence(  # type: ignore[misc]
            licence=declaration.licence,
            holder="as declared",
            url=redact_uri(declaration.uri),
            note="Rows with `dataset == '{dataset}'` come from a dataset declared in the "
            f"settings file, under the licence it declares (**{declaration.licence}**).",
        )

    def declared_root(self) -> tuple[str, str | None]:
        return self.declaration.uri, self.declaration.revision

    def files(self) -> list[SourceFile]:
        """One file (or glob) per declared split."""
        return [
            SourceFile(self.name, SUBSET, split, pattern, TRL_KIND)
            for split, pattern in self.declaration.splits
        ]

    def fields(self, source: SourceFile, variant: str = "current") -> list[FieldSpec]:
        return []

    def empty_table(self, source: SourceFile) -> pa.Table:
        return trl_format.empty_rows()

    def reader(self, source: SourceFile) -> Reader:
        """TRL rows, in the form most of the file's rows have (the variant)."""

        def read(data: bytes) -> tuple[Any, str]:
            parsed = trl_format.parse_trl(data, source.relpath)
            forms = parsed.table.column("form").unique().to_pylist()
            return parsed, forms[0] if forms else "empty"

        return read

    def keeps_lines(self, source: SourceFile) -> bool:
        """A parquet file has no lines: its quarantined rows are kept re-serialized as JSON."""
        return not source.relpath.endswith(trl_format.PARQUET_SUFFIXES)

    def rule_family(self, source: SourceFile) -> RuleFamily:
        return TRL_FAMILY

    def rule_families(self) -> tuple[RuleFamily, ...]:
        return (TRL_FAMILY,)

    def pairs(self, table: pa.Table) -> pa.Table:
        return pair_table(
            table,
            dimension=self.declaration.dimension,
            prompt=table.column("prompt"),
            prompt_turns=table.column("prompt_turns").cast(pa.list_(TURN)),
            chosen=table.column("chosen"),
            rejected=table.column("rejected"),
        )

    def suites(self) -> Mapping[str, SuiteDef]:
        return {
            self.suite_name: (
                f"{self.name}: rows in TRL's preference format, declared in the settings file.",
                _trl_suite,
            )
        }

    @property
    def suite_name(self) -> str:
        return f"declared_{self.name.replace('-', '_')}_raw"

    def suite_for(self, subset: str, variant: str | None) -> str:
        return self.suite_name

    def raw_prompt(self, row: Mapping[str, Any]) -> tuple[str, list[dict]] | None:
        """The prompt of a TRL row read as far as it parses (a quarantined test row's prompt is
        a decontamination reference)."""
        try:
            parsed = trl_format.row_columns(dict(row))
        except ValueError:
            return None
        turns = parsed["prompt_turns"]
        if parsed["prompt"] and any(t["role"] == "human" and t["text"].strip() for t in turns):
            return parsed["prompt"], turns
        return None
