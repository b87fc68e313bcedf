"""The interface every dataset implements, and the pieces it is built from.

A dataset is one module under ``curation/datasets/`` holding one :class:`PreferenceDataset`
(its name, source list, field specs and layout variants, row rules, mapping onto
:data:`~curation.core.schema.PAIRS`, GX suites, licence and card text) and one line in the registry
(:mod:`curation.datasets`). Everything else in the pipeline reaches a dataset through the
registry, by the ``dataset`` of a file or row; no other module names one
(``tests/test_dataset_registry.py``).

This module sits low in the library: it imports only the schema, the JSON Lines parser, the
rule declarations and the suite builder, so that the modules it serves (sources, ingest,
normalize, the suites, the card) can import the registry without a cycle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from curation.core.jsonl import SOURCE_LINE, FieldSpec, ParsedFile, parse_jsonl
from curation.core.schema import PAIRS
from curation.core.source_file import SourceFile
from curation.core.suite_builder import SuiteBuilder

if TYPE_CHECKING:  # the rules import polars; the source list (`releases` commands) must not
    from curation.core.rules import RuleFamily


@dataclass(frozen=True)
class Licence:
    """The upstream licence of a dataset, as the card's Licences section shows it."""

    licence: str
    holder: str
    url: str
    #: What the licence means for the derived rows (one paragraph of the card, ``{dataset}``
    #: standing for the dataset's name as written in the ``dataset`` column).
    note: str


@dataclass(frozen=True)
class PairPart:
    """Pairs of one group of validated rows (``pair_id`` not filled), one part per group of
    pairs numbered together (a dimension of a dataset giving several pairs a row).

    The normalized prompt, chosen and rejected texts may be passed when computed already (the
    pair id hashes them), so that a text shared by several parts is normalized once.
    """

    key: str
    pairs: pa.Table
    prompt: pa.Array | None = None
    chosen: pa.Array | None = None
    rejected: pa.Array | None = None


#: A suite definition: its notes and the function adding its expectations to a builder.
SuiteDef = tuple[str, Callable[[SuiteBuilder], None]]
#: Parse the decompressed bytes of one file: the parsed rows and the detected layout variant.
Reader = Callable[[bytes], tuple[ParsedFile, str]]
#: Normalize one object of a JSON-array file: (object, reason code or None, detail).
ObjectNormalizer = Callable[[dict], tuple[dict, str | None, str]]

#: The layout variant of a file whose dataset has one layout only.
DEFAULT_VARIANT = "current"


def constant(value: str | None, n: int) -> pa.Array:
    """``n`` copies of a string (or nulls)."""
    return pa.array([value] * n, pa.string())


def null_labels(n: int) -> dict[str, pa.Array]:
    """The safety label columns of :data:`~curation.core.schema.PAIRS`, all null (a dataset without
    safety labels)."""
    return {
        "chosen_is_safe": pa.nulls(n, pa.bool_()),
        "rejected_is_safe": pa.nulls(n, pa.bool_()),
        "chosen_severity": pa.nulls(n, pa.int8()),
        "rejected_severity": pa.nulls(n, pa.int8()),
        "chosen_harm_categories": pa.nulls(n, pa.list_(pa.string())),
        "rejected_harm_categories": pa.nulls(n, pa.list_(pa.string())),
    }


def pair_table(
    table: pa.Table,
    *,
    dimension: str | pa.Array | pa.ChunkedArray,
    prompt: pa.Array | pa.ChunkedArray,
    prompt_turns: pa.Array | pa.ChunkedArray,
    chosen: pa.Array | pa.ChunkedArray,
    rejected: pa.Array | pa.ChunkedArray,
    labels: Mapping[str, pa.Array] | None = None,
) -> pa.Table:
    """:data:`~curation.core.schema.PAIRS` rows of validated rows ``table`` (``pair_id``
    empty; dataset, subset, split, file and line from ``table``): what every dataset's
    :meth:`PreferenceDataset.pairs` builds, from its own prompt, responses and labels
    (default: none, :func:`null_labels`)."""
    n = table.num_rows
    columns = {
        "pair_id": constant("", n),
        "dataset": table.column("dataset"),
        "subset": table.column("subset"),
        "split": table.column("split"),
        "source_file": table.column("source_file"),
        "source_line": table.column(SOURCE_LINE),
        "dimension": constant(dimension, n) if isinstance(dimension, str) else dimension,
        "prompt": prompt,
        "prompt_turns": prompt_turns,
        "chosen": chosen,
        "rejected": rejected,
        **(null_labels(n) if labels is None else labels),
    }
    return pa.table(columns, schema=PAIRS)


class PreferenceDataset(ABC):
    """One preference dataset: where its files are, how to read and check them, how a valid
    row becomes pairs, and what the release says about it.

    Subclasses set the class attributes and implement the abstract methods; the defaults fit a
    dataset of JSON Lines files in one layout that gives one pair per row.
    """

    #: The dataset's name: the ``dataset`` column, file names (``<name>/<relpath>``), asset keys.
    name: ClassVar[str]
    #: Its name in prose (the card).
    title: ClassVar[str]
    #: The stem of its settings: environment ``<STEM>_URI``/``<STEM>_REVISION`` (upper case),
    #: ``SourcesResource`` fields ``<stem>_uri``/``<stem>_revision``.
    setting: ClassVar[str]
    #: The folder of its sample mirror under ``sample_data/`` (the default source).
    sample: ClassVar[str]
    licence: ClassVar[Licence]
    #: Whether its pairs carry harm categories and severity levels (the card's harm chart).
    harm_labels: ClassVar[bool] = False
    #: Rows of each upstream file (by relative path) where upstream publishes them, to tell a
    #: sample or partial mirror from the real one.
    upstream_rows: ClassVar[Mapping[str, int]] = {}

    @property
    def uri_field(self) -> str:
        """The ``SourcesResource`` field (and ``Environment`` attribute) of its mirror's URI."""
        return f"{self.setting}_uri"

    @property
    def revision_field(self) -> str:
        """The ``SourcesResource`` field of its mirror's pinned revision."""
        return f"{self.setting}_revision"

    @property
    def uri_variable(self) -> str:
        """The environment variable of its mirror's URI (``<STEM>_URI``)."""
        return f"{self.setting.upper()}_URI"

    @abstractmethod
    def files(self) -> list[SourceFile]:
        """Every file of the upstream layout (the source list)."""

    @abstractmethod
    def fields(self, source: SourceFile, variant: str = DEFAULT_VARIANT) -> list[FieldSpec]:
        """The field specs of ``source`` in layout ``variant`` (an absent file's empty table)."""

    @abstractmethod
    def rule_family(self, source: SourceFile) -> RuleFamily:
        """The row rules of ``source``."""

    @abstractmethod
    def rule_families(self) -> tuple[RuleFamily, ...]:
        """Every rule family of the dataset (each reason code declared once per family)."""

    @abstractmethod
    def pairs(self, table: pa.Table) -> pa.Table:
        """Validated rows of one file → :data:`~curation.core.schema.PAIRS` rows, ``pair_id`` empty."""

    @abstractmethod
    def suites(self) -> Mapping[str, SuiteDef]:
        """The GX suites of the dataset's raw files, by name (``expectations/<name>.json``)."""

    @abstractmethod
    def suite_for(self, subset: str, variant: str | None) -> str:
        """The suite of an ingested file of ``subset`` read in layout ``variant``."""

    def reader(self, source: SourceFile) -> Reader:
        """How the decompressed bytes of ``source`` are parsed (default: JSON Lines with
        :meth:`fields`, one layout)."""
        specs = self.fields(source)
        return lambda data: (parse_jsonl(data, specs), DEFAULT_VARIANT)

    def array_reader(self, source: SourceFile) -> ObjectNormalizer | None:
        """For a file that may be one JSON array (parsed element by element in Python): how
        each object's keys are normalized first; ``None`` (default) for JSON Lines files."""
        return None

    def pair_parts(self, good: pa.Table) -> list[PairPart]:
        """The pairs of validated rows of one file, in parts numbered separately (default: one
        part, :meth:`pairs`)."""
        return [PairPart("", self.pairs(good))]

    def pairs_per_row(self, subset: str) -> int:
        """Pairs a valid row of ``subset`` yields (0: the file gives no pairs)."""
        return 1

    def is_large(self, source: SourceFile) -> bool:
        """Whether ingesting ``source`` alone holds several hundred MB (one at a time)."""
        return False

    def raw_prompt(self, row: Mapping[str, Any]) -> tuple[str, list[dict]] | None:
        """The prompt and its turns (``{"role", "text"}``) of one upstream row (a parsed JSON
        object) as a pair would have it, or None when it has none; used for the prompts of
        quarantined test rows, which stay decontamination references
        (:func:`curation.match.references.quarantined_test_prompts`). Default: a ``prompt`` string,
        one human turn."""
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return None
        return prompt, [{"role": "human", "text": prompt}]

    def declared_root(self) -> tuple[str, str | None] | None:
        """``(URI, revision)`` of a dataset declared with its own mirror (the settings file);
        ``None`` (default) for a built-in dataset, whose mirror is a ``SourcesResource`` field."""
        return None

    def empty_table(self, source: SourceFile) -> pa.Table | None:
        """The parsed table of an absent file (``None``, default: built from :meth:`fields`)."""
        return None

    def keeps_lines(self, source: SourceFile) -> bool:
        """Whether a quarantined row keeps its line as read (default); otherwise (a parquet
        file) the parsed row is kept re-serialized as JSON."""
        return True

    def empty_pairs(self) -> pa.Table:
        """No pairs."""
        return PAIRS.empty_table()
