"""Bad ``--config`` files and bad settings stop before any work, one clear line per problem
(issue 22 items 5 and 6).

Most cases are pure (``settings_config`` on a real file, the same function ``rlhf-curate`` calls
before its preflight); a few run the installed ``rlhf-curate run --config`` in a subprocess and
check what the user sees: exit 2, one ``error: FILE: ...`` line per problem, no traceback, and no
Dagster home or store created (no run started).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from assets.resources import CurationSettings, settings_from_mapping, settings_problems
from curation.core.bounds import QUOTE_LIMIT, InvalidConfig, describe_range, quoted
from curation.match.decontam import DecontamConfig
from curation.match.dedup import DedupConfig
from pipelines.config_file import MAX_CONFIG_BYTES, MAX_DEPTH, ConfigError, settings_config
from tests.cli_helpers import cli, cli_env

#: (YAML text, the key its one problem line must name): the values of the issue, then more.
BAD_VALUES = [
    ("dedup: {threshold: 1.5}", "dedup.threshold"),
    ("dedup: {threshold: -0.5}", "dedup.threshold"),
    ("dedup: {num_perm: 0}", "dedup.num_perm"),
    ("dedup: {shingle_words: 0}", "dedup.shingle_words"),
    ("threads: -4", "threads"),
    ("decontam: {ngram_n: -5}", "decontam.ngram_n"),
    ("quarantine_error_rate: -1", "quarantine_error_rate"),
    ("quarantine_warn_rate: -1", "quarantine_warn_rate"),
    # beyond the list
    ("quarantine_error_rate: 1.5", "quarantine_error_rate"),
    ("quarantine_warn_rate: 0.5", "quarantine_warn_rate"),  # above the default error rate
    ("{quarantine_error_rate: 0.1, quarantine_warn_rate: 0.2}", "quarantine_warn_rate"),
    ("quarantine_error_rate: .nan", "quarantine_error_rate"),
    ("ingest_threads: -1", "ingest_threads"),
    ("threads: true", "threads"),
    ("threads: '4'", "threads"),
    ("threads: 2.5", "threads"),
    ("gx_sample_rows: -1", "gx_sample_rows"),
    ("malloc_mmap_threshold: -1", "malloc_mmap_threshold"),
    ("malloc_mmap_threshold: 68719476736", "malloc_mmap_threshold"),
    ("dedup: {threshold: .nan}", "dedup.threshold"),
    ("dedup: {threshold: 0}", "dedup.threshold"),
    ("dedup: {lsh_min_recall: 1.5}", "dedup.lsh_min_recall"),
    ("dedup: {max_edit_fraction: 1.0}", "dedup.max_edit_fraction"),
    ("dedup: {max_word_substitutions: -1}", "dedup.max_word_substitutions"),
    ("dedup: {typo_words: 0}", "dedup.typo_words"),
    ("dedup: {typo_min_chars: 0}", "dedup.typo_min_chars"),
    ("dedup: {long_min_words: 0}", "dedup.long_min_words"),
    ("dedup: {max_bucket_size: 1}", "dedup.max_bucket_size"),
    ("dedup: {seed: -1}", "dedup.seed"),
    ("dedup: {seed: 18446744073709551616}", "dedup.seed"),
    (
        "dedup: {substitution_min_words: 10, substitution_max_words: 5}",
        "dedup.substitution_max_words",
    ),
    ("dedup: {prompt_dedup: 1}", "dedup.prompt_dedup"),
    ("dedup: {num_perm: 128.0}", "dedup.num_perm"),
    ("dedup: {prompt_dedupe: true}", "dedup.prompt_dedupe"),
    ("dedup: 5", "dedup"),
    ("decontam: {ngram_min_overlap: 1.5}", "decontam.ngram_min_overlap"),
    ("decontam: {max_matches: -1}", "decontam.max_matches"),
    ("decontam: {min_words: 0}", "decontam.min_words"),
    ("decontam: {min_opening_words: 0}", "decontam.min_opening_words"),
    ("decontam: {min_words_with_rare: 0}", "decontam.min_words_with_rare"),
    ("decontam: {threshold: 2}", "decontam.threshold"),
    ("rule_levels: {sha256_mismatch: loud}", "rule_levels.sha256_mismatch"),
    ("rule_levels: {no_such_rule: warn}", "rule_levels.no_such_rule"),
    ("rule_levels: {invalid_json: warn}", "rule_levels.invalid_json"),
    ("expected_files: ['pku/data/*']", "expected_files"),
    ("allow_missing_files: ['hh-rlhf/nope/*']", "allow_missing_files"),
    ("extra_reference_uris: ['#prompt']", "extra_reference_uris[0]"),
    ("dedupp: {prompt_dedup: true}", "dedupp"),
    ("resources: {settings: {config: {threads: -4}}}", "threads"),  # the launchpad shape
]


def write(tmp_path: Path, text: str | bytes, name: str = "settings.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def refusal(path: Path) -> list[str]:
    """The lines ``settings_config`` refuses ``path`` with (each checked to name the file)."""
    with pytest.raises(ConfigError) as refused:
        settings_config(str(path))
    lines = str(refused.value).splitlines()
    assert lines and all(line.startswith(f"{path}: ") for line in lines), lines
    assert lines == [f"{path}: {p}" for p in refused.value.problems]
    return lines


@pytest.mark.parametrize(("text", "key"), BAD_VALUES, ids=[t for t, _ in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_its_key(tmp_path: Path, text: str, key: str):
    [line] = refusal(write(tmp_path, text + "\n"))
    assert f": {key}:" in line or f": {key}." in line or f"'{key}'" in line, line
    assert len(line) < 1000 and "Traceback" not in line  # the longest lists the known rules


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path):
    text = (
        "dedup: {threshold: 1.5, num_perm: 0, shingle_words: 0}\n"
        "decontam: {ngram_n: -5}\n"
        "threads: -4\n"
        "quarantine_error_rate: -1\n"
        "quarantine_warn_rate: -1\n"
        "rule_levels: {sha256_mismatch: loud, nope: warn}\n"
    )
    lines = refusal(write(tmp_path, text))
    named = [line.split(": ", 2)[1] for line in lines]
    assert sorted(named) == sorted(
        [
            "dedup.threshold",
            "dedup.num_perm",
            "dedup.shingle_words",
            "decontam.ngram_n",
            "threads",
            "quarantine_error_rate",
            "quarantine_warn_rate",
            "rule_levels.sha256_mismatch",
            "rule_levels.nope",
        ]
    ), lines
    assert (
        f"{tmp_path / 'settings.yaml'}: dedup.threshold: 1.5 is out of range: must be in (0, 1]"
        in lines
    )


def test_good_values_at_the_edges_of_their_ranges_pass(tmp_path: Path):
    text = (
        "dedup: {threshold: 1, num_perm: 1, lsh_min_recall: 0, max_edit_fraction: 0,"
        " max_word_substitutions: 0, max_bucket_size: 2, seed: 18446744073709551615}\n"
        "decontam: {ngram_min_overlap: 0, max_matches: 0, ngram_n: 1}\n"
        "quarantine_error_rate: 1\nquarantine_warn_rate: 1\n"
        "threads: 0\ningest_threads: 0\ngx_sample_rows: 0\nmalloc_mmap_threshold: 33554432\n"
    )
    settings = settings_from_mapping(settings_config(str(write(tmp_path, text))))
    assert settings.dedup_config().threshold == 1 and settings.decontam_config().ngram_n == 1
    # an integer for a number is kept as a float, as before: the release config (and so the
    # release id) is the same whether `1` or `1.0` was written
    assert settings.dedup == {**settings.dedup, "threshold": 1.0}
    assert isinstance(settings.dedup["threshold"], float)
    assert isinstance(settings.release_config()["decontam"]["ngram_min_overlap"], float)
    settings = CurationSettings(quarantine_error_rate=0, quarantine_warn_rate=0)
    assert settings.quarantine_warn_rate == 0


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "holds no settings"),
        (b"# only a comment\n", "holds no settings"),
        (b"dedup: {threshold: 0.9}\n# caf\xe9\n", "line 2, column 6: not UTF-8 text (byte 0xe9)"),
        (b"\xff\xfe d\x00e\x00", "line 1, column 1: not UTF-8 text (byte 0xff)"),
        (b"- dedup\n- threads\n", "must be a mapping of settings (key: value), not a list"),
        (b"just a string\n", "not a string"),
        (b"42\n", "not a number"),
        (b"a: 1\n---\nb: 2\n", "line 2, column 1: invalid YAML"),
        (b"dedup: {threshold: 0.9\nthreads: 2\n", "line 2, column 8: invalid YAML"),
        (b"threads: !!python/object:os.system 1\n", "line 1, column 10: invalid YAML"),
        (b"threads: 2020-02-30\n", "line 1, column 10: invalid YAML: cannot read this value"),
        (b"threads: " + b"1" * 5000 + b"\n", "line 1, column 10: invalid YAML: cannot read"),
        (b"threads: 1\x01\n", "line 1, column 11: invalid YAML"),
        (b"[" * 10_000 + b"]" * 10_000, f"nested deeper than {MAX_DEPTH} levels"),
        (b"resources: [settings]\n", "resources: must be a mapping, not a list"),
        (b"resources: {store: {config: {uri: /x}}}\n", "not ['resources.store']"),
        (b"resources: {settings: {config: {}, x: 1}}\n", "not ['resources.settings.x']"),
    ],
)
def test_a_bad_file_is_one_line(tmp_path: Path, content: bytes, says: str):
    [line] = refusal(write(tmp_path, content))
    assert says in line, line
    assert len(line) < 400, line


def test_unreadable_and_oversized_files(tmp_path: Path):
    [line] = refusal(tmp_path / "absent.yaml")
    assert "cannot read it: No such file or directory" in line
    [line] = refusal(tmp_path)
    assert "cannot read it: Is a directory" in line
    big = write(tmp_path, b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1), "big.yaml")
    [line] = refusal(big)
    assert f"larger than {MAX_CONFIG_BYTES:,} bytes" in line


def bomb(levels: int, width: int = 9) -> str:
    """A "billion laughs" under a known key: ``levels`` nested aliases of ``width`` each."""
    names = "abcdefghijklmnop"
    parts = [f"&a [{','.join(['lol'] * width)}]"]
    parts += [f"&{names[i]} [{','.join(['*' + names[i - 1]] * width)}]" for i in range(1, levels)]
    return "dedup:\n  threshold: [" + ", ".join(parts) + "]\n"


@pytest.mark.timeout(60)  # before the fix: 2.6 GB and growing after 150 s
def test_yaml_bomb_is_refused_at_its_line_and_column(tmp_path: Path):
    text = bomb(9)
    assert len(text) == 327  # 9^9 = 387 M leaves when expanded
    [line] = refusal(write(tmp_path, text))
    assert line.endswith(
        "line 2, column 15: invalid YAML: anchors and aliases (&name, *name) are not allowed "
        "in a settings file"
    ), line
    # merge keys need aliases too, and a lone anchor is refused as well
    [line] = refusal(write(tmp_path, "base: &b {threads: 2}\n<<: *b\n"))
    assert "line 1, column 7: invalid YAML: anchors and aliases" in line
    [line] = refusal(write(tmp_path, "threads: &t 2\n"))
    assert "line 1, column 10: invalid YAML: anchors and aliases" in line


@pytest.mark.timeout(60)
def test_quoted_values_are_capped_whatever_their_size():
    # the value the 213-byte bomb expanded to (a 481,743-character message before the fix),
    # built in Python (YAML aliases are refused now): nine levels of shared nine-item lists
    value: typing.Any = ["lol"] * 9
    for _ in range(8):
        value = [value] * 9
    huge_string = "x" * 100_000
    long_key = "k" * 10_000
    for config in (
        {"dedup": {"threshold": value}},
        {"decontam": {"ngram_n": huge_string}},
        {"threads": huge_string},
        {"rule_levels": {long_key: "warn", "sha256_mismatch": huge_string}},
        {"dedup": {long_key: 1}},
        {long_key: 1},
        {"expected_files": [huge_string]},
        {"extra_reference_uris": ["#" + huge_string]},
    ):
        problems = settings_problems(config)
        assert problems, config.keys()
        for problem in problems:  # the value is cut; a known-keys list may follow
            assert "x" * QUOTE_LIMIT not in problem and "k" * QUOTE_LIMIT not in problem
            assert problem.count("lol") < 10 and len(problem) < 1000, problem[:200]
    assert len(quoted(value)) <= QUOTE_LIMIT and len(quoted(huge_string)) == QUOTE_LIMIT
    assert settings_problems([value]) == [
        "settings must be a mapping of CurationSettings fields (key: value), not a list"
    ]


def test_the_library_checks_its_own_ranges():
    with pytest.raises(InvalidConfig) as refused:
        DedupConfig(threshold=1.5, num_perm=0)
    assert refused.value.problems == [
        "num_perm: 0 is out of range: must be >= 1",
        "threshold: 1.5 is out of range: must be in (0, 1]",
    ]
    with pytest.raises(InvalidConfig, match=r"ngram_n: -5 is out of range: must be >= 1"):
        DecontamConfig(ngram_n=-5)
    with pytest.raises(InvalidConfig, match="is not an integer"):
        DecontamConfig(max_matches="10")
    with pytest.raises(InvalidConfig, match=r"must be >= substitution_min_words \(3\)"):
        DedupConfig(substitution_min_words=3, substitution_max_words=2)


def test_every_numeric_setting_declares_its_range():
    """A new numeric field without a range would let any value through to the steps."""
    for cls in (DedupConfig, DecontamConfig):
        for name, hint in typing.get_type_hints(cls, include_extras=True).items():
            annotated = typing.get_origin(hint) is typing.Annotated
            base, *metadata = typing.get_args(hint) if annotated else (hint,)
            if base in (int, float):
                assert describe_range(metadata), f"{cls.__name__}.{name}"
    for name, field in CurationSettings.model_fields.items():
        if field.annotation in (int, float):
            assert describe_range(field.metadata), f"CurationSettings.{name}"
    # the defaults are valid and unchanged by the declarations
    assert dataclasses.asdict(DedupConfig())["threshold"] == 0.8
    assert DecontamConfig().ngram_n == 13 and CurationSettings().threads == 0


@pytest.mark.parametrize(
    ("content", "keys"),
    [
        (
            "dedup: {threshold: 1.5, num_perm: 0, shingle_words: 0}\n"
            "decontam: {ngram_n: -5}\nthreads: -4\n"
            "quarantine_error_rate: -1\nquarantine_warn_rate: -1\n",
            [
                "dedup.num_perm",
                "dedup.threshold",
                "dedup.shingle_words",
                "decontam.ngram_n",
                "quarantine_error_rate",
                "quarantine_warn_rate",
                "threads",
            ],
        ),
        (bomb(9), ["line 2, column 15"]),  # hung for minutes before the fix
        ("dedup: {threshold: 0.9}\n# caf\xe9\n".encode("latin-1"), ["line 2, column 6"]),
    ],
    ids=["bad-values", "yaml-bomb", "not-utf8"],  # the other files: the pure tests above
)
def test_cli_stops_before_any_work(tmp_path: Path, content: str | bytes, keys: list[str]):
    config = write(tmp_path, content, "bad.yaml")
    env = cli_env(tmp_path)
    proc = cli(["run", "--config", str(config)], env, tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == len(keys), proc.stderr[-2000:]
    assert all(line.startswith(f"error: {config}: ") for line in lines), lines
    for key in keys:
        assert sum(key in line for line in lines) == 1, (key, lines)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    # no run: neither the Dagster home nor the store was created
    assert not (tmp_path / "home").exists() and not (tmp_path / "store").exists()


def test_launchpad_shape_round_trips(tmp_path: Path):
    launchpad = {"resources": {"settings": {"config": {"dedup": {"threshold": 0.85}}}}}
    path = write(tmp_path, yaml.safe_dump(launchpad))
    assert settings_config(str(path)) == {"dedup": {"threshold": 0.85}}
