"""``releases`` sub-command of the CLI: list, show, verify, diff, prune and promote releases.

The arguments are defined in :mod:`pipelines.cli_parser` (``add_release_commands``); the main
CLI imports this module only for a ``releases`` command and calls ``run_releases_command(args)``,
which runs the handler named by ``args.releases_command``.
``python -m pipelines.cli_releases releases list`` also works. Only ``curation/`` is imported
here (no Dagster, GX, pandas or matplotlib: ``tests/test_cli.py``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from curation.core.report import SOURCES_HEADER, plain_table, source_rows
from curation.core.store import StoreError, credentials_refused
from curation.publish import reader, release
from curation.publish.release import ReleaseError
from pipelines.cli import main as cli_main
from pipelines.cli_parser import add_release_commands
from pipelines.settings import Environment

__all__ = ["HANDLERS", "add_release_commands", "run_releases_command"]


class Refused(ValueError):
    """A command that would delete releases without the user's confirmation."""


def _default_store() -> str:
    """The store ``rlhf-curate run`` publishes to (``$CURATED_STORE_URI``, else the repo's
    ``warehouse``), wherever the command is started. Credentials in it are refused
    (``curation.core.store.credentials_refused``)."""
    environment = Environment.from_env()
    if "CURATED_STORE_URI" in environment.secrets_set:
        raise credentials_refused(environment.store_uri)
    return environment.store_uri


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    print(plain_table(header, rows), file=out)


def _n(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


Handler = Callable[[str, argparse.Namespace, TextIO], int]


def list_command(store: str, args: argparse.Namespace, out: TextIO) -> int:
    """``releases list``: one row per published release, oldest first."""
    rows = reader.list_releases(store)
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2), file=out)
        return 0
    if not rows:
        print(f"no published releases in {store}", file=out)
        return 0
    header = [
        "",
        "release_id",
        "seq",
        "created_at",
        "code_version",
        "pairs",
        "removed",
        "quarantine",
    ]
    _table(
        header,
        [
            [
                "*" if r["latest"] else "",
                r["release_id"],
                r["sequence"],
                r["created_at"],
                r["code_version"],
                _n(r["rows"].get("pairs", "")),
                _n(r["rows"].get("removed", "")),
                _n(r["rows"].get("quarantine", "")),
            ]
            for r in rows
        ],
        out,
    )
    print("(* = latest)", file=out)
    return 0


def _show_tables(manifest: dict[str, Any], out: TextIO) -> None:
    rows = []
    for name, info in sorted(manifest.get("tables", {}).items()):
        splits = ", ".join(f"{k}={v:,}" for k, v in (info.get("splits") or {}).items())
        size = sum(int(f["bytes"]) for f in info.get("files", []))
        rows.append([name, _n(info.get("rows", 0)), len(info.get("files", [])), _n(size), splits])
    _table(["table", "rows", "files", "bytes", "splits"], rows, out)


def _show_sources(manifest: dict[str, Any], out: TextIO) -> None:
    print(file=out)
    rows = source_rows(manifest["sources"])
    _table(SOURCES_HEADER, [[*row[:-1], _n(row[-1])] for row in rows], out)


def show_command(store: str, args: argparse.Namespace, out: TextIO) -> int:
    """``releases show``: a release's header, tables, sources, counts and checks."""
    release = reader.open_release(store, args.release_id)
    manifest = release.manifest
    if getattr(args, "json", False):
        print(json.dumps(manifest, indent=2), file=out)
        return 0
    latest = reader.resolve_release_id(store, "latest")
    tag = "  (latest)" if latest == release.release_id else ""
    print(f"{'release_id':<18} {release.release_id}{tag}", file=out)
    print(f"{'uri':<18} {release.uri}", file=out)
    for key in ("sequence", "parent_release_id", "created_at", "code_version", "format_version"):
        print(f"{key:<18} {manifest.get(key)}", file=out)
    print(file=out)
    _show_tables(manifest, out)
    if manifest.get("sources"):
        _show_sources(manifest, out)
    if manifest.get("counts"):
        print("\ncounts: " + json.dumps(manifest["counts"], sort_keys=True), file=out)
    if manifest.get("checks"):
        print("checks: " + json.dumps(manifest["checks"], sort_keys=True), file=out)
    return 0


def verify_command(store: str, args: argparse.Namespace, out: TextIO) -> int:
    """``releases verify``: every listed file's size and sha256; 1 when problems were found."""
    as_json = getattr(args, "json", False)
    release = reader.open_release(store, args.release_id)
    problems = release.verify(progress=not (as_json or getattr(args, "no_progress", False)))
    if as_json:
        report = {
            "release_id": release.release_id,
            "ok": not problems,
            "problems": [p.to_dict() for p in problems],
        }
        print(json.dumps(report, indent=2), file=out)
    elif problems:
        print(f"release {release.release_id}: {len(problems)} problem(s)", file=out)
        _table(["file", "kind", "detail"], [[p.path, p.kind, p.message] for p in problems], out)
    else:
        n = sum(len(i.get("files", [])) for i in release.manifest.get("tables", {}).values())
        n += len(release.manifest.get("assets") or [])
        print(f"release {release.release_id}: OK ({n} files match the manifest)", file=out)
    return 1 if problems else 0


def diff_command(store: str, args: argparse.Namespace, out: TextIO) -> int:
    """``releases diff``: pairs added/removed/changed per table and split, reasons' deltas."""
    result = reader.diff_releases(store, args.a, args.b, examples=args.examples)
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2), file=out)
        return 0
    print(f"diff {result['a']} -> {result['b']}", file=out)
    cv = result["code_version"]
    if cv["a"] != cv["b"]:
        print(f"code_version: {cv['a']} -> {cv['b']}", file=out)
    for key, change in result["config_changes"].items():
        print(f"config {key}: {change['a']!r} -> {change['b']!r}", file=out)
    print(file=out)
    rows = [
        [
            name,
            "(all)" if split == "*" else split,
            _n(d["added"]),
            _n(d["removed"]),
            _n(d["changed"]),
            _n(d["unchanged"]),
        ]
        for name, per in result["tables"].items()
        for split, d in per.items()
    ]
    _table(["table", "split", "added", "removed", "changed", "unchanged"], rows, out)
    for name, reasons in result["reasons"].items():
        changed = [
            [r, _n(v["a"]), _n(v["b"]), f"{v['delta']:+,}"]
            for r, v in reasons.items()
            if v["delta"]
        ]
        if changed:
            print(f"\n{name} by reason:", file=out)
            _table(["reason", "a", "b", "delta"], changed, out)
    _print_drift(result.get("drift") or [], args.examples, out)
    return 0


def _print_drift(checks: list[dict], examples: int, out: TextIO) -> None:
    """The release-over-release checks of B against A (what the card and the alert say): each
    check's result, and up to ``examples`` findings each with the previous and new value."""
    if not checks:
        return
    print("\nrelease-over-release checks (B against A):", file=out)
    rows = [[c["check"], c["severity"], _n(len(c["findings"])), _n(c["compared"])] for c in checks]
    _table(["check", "result", "findings", "compared"], rows, out)
    for check in checks:
        for finding in check["findings"][: max(examples, 0)]:
            print(
                f"  {finding['severity']} {finding['check']} {finding['key']}: {finding['detail']}",
                file=out,
            )
        more = len(check["findings"]) - max(examples, 0)
        if more > 0:
            print(f"  ... and {more} more {check['check']} findings", file=out)


def prune_command(store: str, args: argparse.Namespace, out: TextIO) -> int:
    """``releases prune``: delete all but the newest N, the pinned and the latest release.

    A prune that would delete something needs ``--yes`` or a "y" on a terminal; without a
    terminal and without ``--yes`` it is refused (exit 2). What was confirmed is all that can
    go: every other release is pinned for the actual prune, so a release published meanwhile
    cannot widen it.
    """
    pins = list(args.pin)
    if not args.dry_run and not args.yes:
        doomed = reader.prune(store, args.keep, pins, dry_run=True)
        if doomed and not _confirm_deletion(store, doomed):
            print("nothing deleted", file=sys.stderr)
            return 1
        listed = [r["release_id"] for r in reader.list_releases(store)]
        pins += [rid for rid in listed if rid not in doomed]
    deleted = reader.prune(store, args.keep, pins, dry_run=args.dry_run)
    if getattr(args, "json", False):
        print(json.dumps({"deleted": deleted, "dry_run": args.dry_run}, indent=2), file=out)
    elif deleted:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {len(deleted)} release(s): " + ", ".join(deleted), file=out)
    else:
        print("nothing to prune", file=out)
    return 0


def _confirm_deletion(store: str, doomed: list[str]) -> bool:
    """Ask on the terminal whether ``doomed`` may be deleted; :class:`Refused` without one."""
    what = f"{len(doomed)} release(s) of {store}: {', '.join(doomed)}"
    if not sys.stdin.isatty():
        raise Refused(
            f"releases prune would delete {what}; add --yes to delete them "
            "(no terminal to ask on), or --dry-run to only list them"
        )
    print(f"Delete {what}? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def promote_command(store: str, args: argparse.Namespace, out: TextIO) -> int:
    """``releases promote``: accept a held release (who, when, why) and point latest at it."""
    release_id = reader.resolve_release_id(store, args.release_id)
    by = args.by or getpass.getuser()
    record = release.promote_release(store, release_id, by=by, reason=args.reason)
    if getattr(args, "json", False):
        print(json.dumps(record, indent=2), file=out)
        return 0
    print(
        f"release {release_id} promoted by {record['by']} at {record['at']} "
        f"(latest was {record['latest_before']}): {record['reason']}",
        file=out,
    )
    return 0


#: ``releases COMMAND`` -> its handler.
HANDLERS: dict[str, Handler] = {
    "list": list_command,
    "show": show_command,
    "verify": verify_command,
    "diff": diff_command,
    "prune": prune_command,
    "promote": promote_command,
}


def run_releases_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run a parsed ``releases`` command (its ``handler``); returns the process exit code.

    0 = ok, 1 = verification problems found, 2 = error (bad id, unreachable store...).
    """
    out = out or sys.stdout
    handler = HANDLERS.get(getattr(args, "releases_command", None) or "")
    if handler is None:
        print(
            "releases: choose a command: list, show, verify, diff, prune, promote",
            file=sys.stderr,
        )
        return 2
    try:
        store = getattr(args, "store", None) or _default_store()
        return handler(store, args, out)
    except (ReleaseError, StoreError, KeyError, ValueError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if getattr(args, "json", False):
            print(json.dumps({"error": str(message)}), file=out)
        print(f"error: {message}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.cli_releases releases ...``: the ``rlhf-curate`` entry point."""
    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
