"""``rlhf-curate``'s own behaviour, fast: what each command imports (real processes, measured by
the interpreter's ``-X importtime``, not by timing), help texts, ``--version``, the options of
``refresh``, prune's confirmation, a closed output pipe, the progress lines."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from curation.core.store import Store
from curation.core.version import code_version
from curation.publish.release import release_prefix
from pipelines import cli_parser
from pipelines.cli import BROKEN_PIPE_EXIT
from pipelines.cli_releases import run_releases_command
from pipelines.progress import STEP_WIDTH, StepPrinter, header, output_text
from pipelines.settings import REPO
from tests.test_release import Clock, make_tables, publish, release_ids

CLI = Path(sys.executable).parent / "rlhf-curate"
#: What no command but ``run``/``refresh`` may import (``diff`` may import polars).
HEAVY = ("dagster", "great_expectations", "matplotlib", "pandas", "polars", "assets")

pytestmark = pytest.mark.usefixtures("fast_charts")


@pytest.fixture
def two_releases(tmp_path: Path) -> tuple[Store, list[str]]:
    """A local store with two published releases (the second is the latest)."""
    store = Store(tmp_path / "store")
    clock = Clock()
    publish(store, config={"v": 1}, clock=clock)
    publish(store, make_tables(n_pairs=20), config={"v": 2}, clock=clock)
    return store, release_ids(store)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CURATED_", "DAGSTER_"))}
    return {**env, **extra}


def imported_modules(args: list[str], env: dict[str, str]) -> set[str]:
    """The modules the console script imports for ``args`` (from ``python -X importtime``)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(CLI), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def heavy_in(modules: set[str], allowed: tuple[str, ...] = ()) -> set[str]:
    tops = {m.split(".")[0] for m in modules}
    return {m for m in HEAVY if m in tops and m not in allowed}


def test_commands_import_only_what_they_need(two_releases: tuple[Store, list[str]]) -> None:
    store, (first, _) = two_releases
    env = cli_env(CURATED_STORE_URI=str(store.root))
    for args in (["--help"], ["--version"], ["run", "--help"], ["refresh", "--help"]):
        modules = imported_modules(args, env)
        assert "pipelines.cli_parser" in modules  # the measurement sees the CLI's imports
        assert heavy_in(modules) == set() and "curation.publish.reader" not in modules, args
    for args, allowed in (
        (["releases", "list"], ()),
        (["releases", "show"], ()),
        (["releases", "verify", "--no-progress"], ()),
        (["releases", "prune", "--keep", "5", "--dry-run"], ()),
        (["releases", "diff", first, "latest"], ("polars",)),  # diff hashes rows with polars
    ):
        modules = imported_modules(args, env)
        assert "curation.publish.reader" in modules, args
        assert heavy_in(modules, allowed) == set(), args


def _all_parsers(parser: argparse.ArgumentParser, path: str = "rlhf-curate"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, f"{path} {name}")


def test_every_command_and_argument_is_described() -> None:
    missing = []
    for path, parser in _all_parsers(cli_parser.build_parser()):
        if not parser.description or "``" in parser.description:
            missing.append(f"{path}: description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{path} {c.dest}" for c in action._choices_actions if not c.help]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_parser.parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"rlhf-curate 0.1.0 (code version {code_version()})\n"


def test_refresh_takes_the_source_options(capsys: pytest.CaptureFixture) -> None:
    from pipelines.commands import environment_of

    args = cli_parser.parse_args(["refresh", "--store", "/x/store", "--hh", "/x/hh", "--pku", "p"])
    environment = environment_of(args)
    assert (environment.store_uri, environment.hh_rlhf_uri, environment.pku_saferlhf_uri) == (
        "/x/store",
        "/x/hh",
        "p",
    )
    with pytest.raises(SystemExit):  # an unknown option: the sub-command's usage, not the top's
        cli_parser.parse_args(["refresh", "--bogus", "/x"])
    err = capsys.readouterr().err
    assert err.startswith("usage: rlhf-curate refresh [-h]"), err
    assert "unrecognized arguments: --bogus /x" in err


# ---------------------------------------------------------------------------- prune


class Keyboard(io.StringIO):
    """Standard input that says it is a terminal, with the user's answer in it."""

    def isatty(self) -> bool:
        return True


def _prune(monkeypatch: pytest.MonkeyPatch, store: Store, stdin: io.StringIO, *extra: str):
    monkeypatch.setattr(sys, "stdin", stdin)
    args = cli_parser.parse_args(["releases", "prune", "--store", str(store.root), *extra])
    out = io.StringIO()
    return run_releases_command(args, out=out), out.getvalue()


def test_prune_asks_or_needs_yes(
    two_releases: tuple[Store, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    store, (first, second) = two_releases
    code, _ = _prune(monkeypatch, store, io.StringIO(""), "--keep", "0")  # not a terminal
    assert code == 2 and release_ids(store) == [first, second]
    err = capsys.readouterr().err
    assert "would delete 1 release(s)" in err and first in err and "--yes" in err
    code, out = _prune(monkeypatch, store, io.StringIO(""), "--keep", "0", "--dry-run")
    assert code == 0 and f"would delete 1 release(s): {first}" in out
    code, _ = _prune(monkeypatch, store, Keyboard("n\n"), "--keep", "0")
    assert code == 1 and release_ids(store) == [first, second]
    assert f"Delete 1 release(s) of {store.root}: {first}? [y/N]" in capsys.readouterr().err
    code, out = _prune(monkeypatch, store, Keyboard("y\n"), "--keep", "0")
    assert code == 0 and release_ids(store) == [second] and f"deleted 1 release(s): {first}" in out


def test_prune_with_yes_and_in_a_real_process(two_releases: tuple[Store, list[str]]) -> None:
    store, (first, second) = two_releases
    argv = [str(CLI), "releases", "prune", "--keep", "0", "--store", str(store.root)]
    refused = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=cli_env(), timeout=120
    )
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert release_ids(store) == [first, second]
    done = subprocess.run(
        [*argv, "--yes"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and release_ids(store) == [second], done.stderr


# ---------------------------------------------------------------------------- closed pipe


@pytest.mark.parametrize("args", [["--version"], ["releases", "diff", "--json"]])
def test_closed_pipe_ends_quietly(args: list[str], two_releases: tuple[Store, list[str]]) -> None:
    store, (first, _) = two_releases
    if args[0] == "releases":
        args = [*args, first, "latest", "--store", str(store.root)]
    proc = subprocess.Popen(
        [str(CLI), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=REPO,
    )
    proc.stdout.close()  # the reader goes away before the command writes (as `| head` does)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == BROKEN_PIPE_EXIT
    assert err == "", err


# ---------------------------------------------------------------------------- card paths


def test_card_names_no_local_path(two_releases: tuple[Store, list[str]]) -> None:
    store, (_, second) = two_releases
    card = store.get(f"{release_prefix(second)}/README.md").decode()
    assert str(store.root) not in card and "/tmp" not in card
    assert 'base = "."  # this release\'s folder' in card
    assert 'pd.read_parquet(f"{base}/pairs/train")' in card


# ---------------------------------------------------------------------------- progress lines


def _run_events(tmp_path: Path) -> list[dg.EventLogEntry]:
    """The event log of a real run of two multi-assets shaped like the pipeline's first two
    steps (same asset names and metadata), the first logging a warning."""

    @dg.multi_asset(
        outs={f"raw_{i}": dg.AssetOut() for i in range(3)}, name="ingest_files", can_subset=False
    )
    def ingest_files(context):
        context.log.warning("1 upstream files absent (expected_files unset): hh-rlhf/x.jsonl")
        for i, (rows, present) in enumerate([(10, True), (5, True), (0, False)]):
            meta = {"rows_read": rows, "present": present, "dagster/row_count": rows}
            yield dg.Output(None, f"raw_{i}", metadata=meta)

    @dg.multi_asset(
        deps=[f"raw_{i}" for i in range(3)],
        outs={
            n: dg.AssetOut() for n in ("normalized_pairs", "quarantine", "red_team", "source_files")
        },
        name="validate_and_normalize",
    )
    def validate_and_normalize():
        yield dg.Output(None, "normalized_pairs", metadata={"dagster/row_count": 16})
        yield dg.Output(None, "quarantine", metadata={"dagster/row_count": 1})
        yield dg.Output(None, "red_team", metadata={"dagster/row_count": 2})
        yield dg.Output(None, "source_files", metadata={"dagster/row_count": 3, "rows_read": 15})

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize([ingest_files, validate_and_normalize], instance=instance)
        assert result.success
        return list(instance.all_logs(result.run_id))


def test_progress_lines_are_aligned_named_and_plain(tmp_path: Path) -> None:
    out = io.StringIO()
    printer = StepPrinter(out, tty=False)
    for entry in _run_events(tmp_path):
        printer.handle_entry(entry)
    printer.finish()
    lines = out.getvalue().splitlines()
    assert lines[0] == header()
    assert [line.split()[0] for line in lines] == [
        "step",
        "ingest_files",
        "warning:",
        "validate_and_normalize",
    ]
    ingest, warning, validate = lines[1:]
    assert ingest.endswith("  15 rows read from 2 of 3 files")
    assert warning == (
        "    warning: 1 upstream files absent (expected_files unset): hh-rlhf/x.jsonl"
    )
    assert validate.endswith(
        "  16 pairs, 2 red-team, 1 quarantined from 15 rows read"
        " (a PKU-SafeRLHF row gives one pair per dimension)"
    )
    # the seconds sit in the same columns on every step line, whatever the text after them
    seconds = slice(3 + STEP_WIDTH, 3 + STEP_WIDTH + 8)
    assert header()[seconds] == " seconds"
    assert all(float(line[seconds]) >= 0 for line in (ingest, validate))


def test_output_text_of_removals_and_release() -> None:
    removed = {"curated_pairs": {"dagster/row_count": 2324}}
    removed["decontam_removed"] = {"dagster/row_count": 65}
    removed["reference_files"] = {"dagster/row_count": 0}
    assert output_text(removed) == "2,324 pairs, 65 removed"
    assert output_text({"release": {"pairs": 2324}}) == "2,324 pairs published"
    assert output_text({}) == ""


def test_a_failed_step_prints_its_error_not_dagsters_skips(tmp_path: Path) -> None:
    from pipelines.commands import failure_text

    @dg.asset
    def boom(context) -> None:
        context.log.warning("about to fail")
        raise ValueError("the upstream file is truncated")

    @dg.asset(deps=[boom])
    def after() -> None:
        pass

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize([boom, after], instance=instance, raise_on_error=False)
        entries = list(instance.all_logs(result.run_id))
    out = io.StringIO()
    printer = StepPrinter(out, tty=False)
    for entry in entries:
        printer.handle_entry(entry)
    printer.finish()
    lines = out.getvalue().splitlines()[1:]
    assert [line.split()[:2] for line in lines] == [["FAILED", "boom"], ["warning:", "about"]]
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "ValueError: the upstream file is truncated" in failure_text(failure)
