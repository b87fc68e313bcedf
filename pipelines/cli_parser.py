"""The argument parser of ``rlhf-curate``: every command, option and help text, nothing else.

Only the standard library is imported here, so ``--help``, ``--version`` and argument errors
answer at once; a command's own module (Dagster and the pipeline for ``run``/``refresh``,
``curation/`` for ``releases``) is imported by :mod:`pipelines.cli` once the arguments parsed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DESCRIPTION = (
    "Curate Anthropic HH-RLHF and PKU-SafeRLHF into versioned parquet releases: run the "
    "pipeline, refresh it incrementally, and inspect the published releases."
)
EPILOG = (
    "Environment: HH_RLHF_URI, PKU_SAFERLHF_URI, CURATED_STORE_URI, DAGSTER_HOME (see README). "
    "Run 'rlhf-curate COMMAND --help' for a command's options."
)
CONFIG_HELP = (
    "YAML file of CurationSettings fields, e.g. 'dedup: {prompt_dedup: true}' (or the same under "
    "'resources: {settings: {config: ...}}', as in the UI launchpad); checked before any work"
)
RUN_DESCRIPTION = (
    "Run the whole pipeline in this process (observe the sources, ingest, validate, normalize, "
    "deduplicate, decontaminate, publish) and print where the release is. The run is recorded "
    "in the Dagster instance in $DAGSTER_HOME, so it shows up in the UI ('make dev'). Same "
    "inputs, code and settings give the same release id (nothing new is written)."
)
REFRESH_DESCRIPTION = (
    "Observe the upstream files, then run only what the automation conditions request: a "
    "changed file and everything downstream of it, or a stage whose code or settings changed. "
    "When nothing changed, only the observation runs and no computation is launched."
)
RELEASES_DESCRIPTION = (
    "Inspect, verify, diff and prune the versioned releases of a curated store. Exit status: "
    "0 ok, 1 verification problems found, 2 error (unknown id, unreachable store, refused)."
)
STORE_ENV = "CURATED_STORE_URI"
DEFAULT_STORE = "./warehouse"


class CommandParser(argparse.ArgumentParser):
    """A sub-command's parser: an unknown argument is reported with this command's usage
    (argparse's default hands it back to the top-level parser, which prints its own usage)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


class VersionAction(argparse.Action):
    """``--version``: the package version and the code version (a digest of ``curation/`` and
    ``expectations/`` that names releases); computed only when asked for."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any):
        kwargs.setdefault("help", "print the package version and the code version, then exit")
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        print(version_text())
        parser.exit()


def version_text() -> str:
    """``rlhf-curate 0.1.0 (code version 0.1.0+1a2b3c4d5e6f)``."""
    from curation import __version__
    from curation.core.version import code_version

    return f"rlhf-curate {__version__} (code version {code_version()})"


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """``--hh``, ``--pku``, ``--store``, ``--config`` and ``-v``: shared by ``run`` and ``refresh``."""
    parser.add_argument(
        "--hh", metavar="URI", help="HH-RLHF mirror root (default: $HH_RLHF_URI or the sample)"
    )
    parser.add_argument(
        "--pku",
        metavar="URI",
        help="PKU-SafeRLHF mirror root (default: $PKU_SAFERLHF_URI or the sample)",
    )
    parser.add_argument(
        "--store",
        metavar="URI",
        help=f"curated store: a folder or s3://bucket/prefix (default: ${STORE_ENV} or "
        f"{DEFAULT_STORE})",
    )
    parser.add_argument("--config", metavar="FILE.yaml", help=CONFIG_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help="show Dagster's step logs")


def _release_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--store`` and ``--json``, given after the sub-command."""
    p.add_argument(  # SUPPRESS: never clobber a --store given to the parent parser
        "--store",
        metavar="URI",
        default=argparse.SUPPRESS,
        help=f"store: a folder or s3://bucket/prefix (default: ${STORE_ENV}, else {DEFAULT_STORE})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine-readable JSON output",
    )
    return p


def add_release_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``releases {list,show,verify,diff,prune,promote}`` on an argparse ``subparsers``;
    the chosen one is ``args.releases_command`` (``pipelines.cli_releases.HANDLERS``)."""
    releases = subparsers.add_parser(
        "releases",
        help="inspect, verify, diff, prune and promote published releases",
        description=RELEASES_DESCRIPTION,
    )
    sub = releases.add_subparsers(dest="releases_command", metavar="COMMAND")
    sub.required = True

    def command(name: str, text: str, description: str | None = None) -> argparse.ArgumentParser:
        return _release_options(sub.add_parser(name, help=text, description=description or text))

    command("list", "published releases, oldest first (* = the latest)")
    p = command("show", "a release's header, tables, sources, counts and checks")
    p.add_argument("release_id", nargs="?", default="latest", help="id, unique prefix or 'latest'")
    p = command(
        "verify",
        "check a release against its manifest",
        "Check every file's size and sha256, the manifest's digests and id, the row counts and "
        "the accounting identity; exit 1 when a problem is found.",
    )
    p.add_argument("release_id", nargs="?", default="latest", help="id, unique prefix or 'latest'")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = command("diff", "pairs added/removed/changed from release A to release B")
    p.add_argument("a", metavar="A", help="the older release: id, unique prefix or 'latest'")
    p.add_argument(
        "b", metavar="B", nargs="?", default="latest", help="the newer release (default: latest)"
    )
    p.add_argument("--examples", type=int, default=5, help="example ids per category (default 5)")
    p = command(
        "prune",
        "delete old releases",
        "Delete every release but the newest N, the pinned ones and the latest. Asks for "
        "confirmation on a terminal; elsewhere --yes is required (--dry-run never deletes).",
    )
    p.add_argument(
        "--keep", type=int, required=True, metavar="N", help="keep the newest N releases"
    )
    p.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="ID",
        help="also keep this release (id, unique prefix or 'latest'; unknown: error, nothing deleted)",
    )
    p.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    p.add_argument(
        "-y", "--yes", action="store_true", help="delete without asking for confirmation"
    )
    p = command(
        "promote",
        "accept a held release and point latest at it",
        "Accept a release that an ERROR drift kept from 'latest' (the alert and the card name "
        "it): records who accepted it, when and why beside the release, where the next "
        "release's manifest quotes it, and moves 'latest' to it.",
    )
    p.add_argument("release_id", help="the held release: id or unique prefix")
    p.add_argument("--reason", required=True, help="why it is accepted (recorded)")
    p.add_argument(
        "--by", default=None, help="who accepts it (recorded; default: the login name, $USER)"
    )
    return releases


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rlhf-curate``."""
    parser = argparse.ArgumentParser(prog="rlhf-curate", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    sub.required = True
    run = sub.add_parser(
        "run", help="run the whole pipeline and publish a release", description=RUN_DESCRIPTION
    )
    add_source_options(run)
    refresh = sub.add_parser(
        "refresh",
        help="incremental refresh: observe the sources, re-run only what changed",
        description=REFRESH_DESCRIPTION,
    )
    add_source_options(refresh)
    add_release_commands(sub)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: the process's arguments)."""
    return build_parser().parse_args(sys.argv[1:] if argv is None else argv)
