"""The ``--config FILE.yaml`` of ``rlhf-curate run`` / ``refresh``: read, parsed and checked
before any work, every problem reported on one line naming the file (and line and column where
there is one).

Reading is bounded: at most :data:`MAX_CONFIG_BYTES`, UTF-8 only, and YAML without anchors and
aliases (a settings file needs neither, and aliases are what make a few hundred bytes expand to
gigabytes, the "billion laughs") nested at most :data:`MAX_DEPTH` deep. The settings are then
checked by :func:`assets.resources.settings_problems` (known keys, types, declared ranges).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from assets.resources import settings_problems
from curation.core.bounds import key_text, quoted
from curation.datasets import BUILT_IN
from curation.datasets.declared import Declaration, parse_declarations

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "ConfigError",
    "SettingsLoader",
    "load_config",
    "settings_config",
]

#: Largest settings file read (a real one is a few lines; this bounds the work on any file).
MAX_CONFIG_BYTES = 1 << 20

#: Deepest nesting of a settings file (the launchpad form, ``resources: settings: config:
#: dedup: {...}``, is 5 levels).
MAX_DEPTH = 20

#: Longest YAML parser message kept (it can quote a tag or an anchor of any length).
_MESSAGE_LIMIT = 160


class ConfigError(ValueError):
    """A ``--config`` file that cannot be used: ``problems`` holds one line per problem; the
    message is those lines, each prefixed with the file's path."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = [" ".join(str(p).split()) for p in problems]  # one line each
        super().__init__("\n".join(f"{path}: {p}" for p in self.problems))


class SettingsLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors and aliases (``&a``, ``*a``, ``<<: *a``) and
    nesting deeper than :data:`MAX_DEPTH`, with the line and column of the offending node."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ComposerError(
                None,
                None,
                "anchors and aliases (&name, *name) are not allowed in a settings file",
                event.start_mark,
            )
        if self._depth >= MAX_DEPTH:
            raise ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        """A scalar Python cannot hold (an integer of 5,000 digits, the date 2020-02-30) is a
        YAML error at its line and column, not a bare ``ValueError``."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise ConstructorError(
                None, None, f"cannot read this value: {exc}", node.start_mark
            ) from None


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _where(text: str, offset: int) -> str:
    """``line L, column C`` (1-based) of character ``offset`` of ``text``."""
    line = text.count("\n", 0, offset) + 1
    return f"line {line}, column {offset - (text.rfind(chr(10), 0, offset) + 1) + 1}"


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """A YAML error as one line: where, then what (PyYAML's own text spans several lines)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = ": ".join(part for part in (exc.context, exc.problem) if part)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return f"{where}invalid YAML: {_shorten(what)}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"{_where(text, exc.position)}: invalid YAML: {_shorten(exc.reason)}"
    return f"invalid YAML: {_shorten(str(exc))}"


def _read_text(path: str) -> str:
    """The file's text: at most :data:`MAX_CONFIG_BYTES`, UTF-8 (a BOM is allowed)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, [f"cannot read it: {exc.strerror or exc}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            path, [f"larger than {MAX_CONFIG_BYTES:,} bytes; a settings file is a few lines"]
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        where = _where(data.decode("latin-1"), exc.start)
        raise ConfigError(
            path, [f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8"]
        ) from None


def _kind(value: Any) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    return f"{names.get(type(value), type(value).__name__)} ({quoted(value)})"


def load_yaml(path: str) -> Any:
    """The parsed YAML of ``path`` (:class:`SettingsLoader`); :class:`ConfigError` otherwise."""
    text = _read_text(path)
    try:
        return yaml.load(text, Loader=SettingsLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(path, [_yaml_problem(exc, text)]) from None
    except RecursionError:  # defensive: MAX_DEPTH stops nesting long before Python's limit
        raise ConfigError(path, ["invalid YAML: nested too deeply"]) from None


def _launchpad_settings(path: str, loaded: dict) -> Any:
    """The ``config`` of ``resources: {settings: {config: {...}}}`` (the launchpad's shape);
    nothing else may be set there."""
    resources = loaded["resources"]
    if resources is not None and not isinstance(resources, dict):
        raise ConfigError(path, [f"resources: must be a mapping, not {_kind(resources)}"])
    settings = (resources or {}).get("settings")
    if settings is not None and not isinstance(settings, dict):
        raise ConfigError(path, [f"resources.settings: must be a mapping, not {_kind(settings)}"])
    extra = (
        [key_text(k) for k in loaded if k != "resources"]
        + [f"resources.{key_text(k)}" for k in resources or {} if k != "settings"]
        + [f"resources.settings.{key_text(k)}" for k in settings or {} if k != "config"]
    )
    if extra:
        raise ConfigError(path, [f"only resources.settings.config may be set here, not {extra}"])
    return (settings or {}).get("config") or {}


def settings_config(path: str | None) -> dict[str, Any]:
    """The ``CurationSettings`` fields of a ``--config`` YAML file, validated (``{}`` if none);
    :func:`load_config` without the datasets it declares."""
    return load_config(path)[0]


def load_config(path: str | None) -> tuple[dict[str, Any], list[Declaration]]:
    """The ``CurationSettings`` fields and the declared datasets of a settings file, validated
    (``({}, [])`` if none).

    Accepts the plain form (top-level ``CurationSettings`` keys, and ``datasets:``, the
    datasets declared in it: :mod:`curation.datasets.declared`; a relative ``uri`` is taken
    from the file's folder) and the launchpad form (``resources: {settings: {config: {...}}}``,
    nothing else). Raises :class:`ConfigError` listing every problem: an unreadable, oversized,
    non-UTF-8, empty or invalid YAML file, a top level that is not a mapping, unknown keys,
    wrong types, values outside their ranges, a dataset declaration that cannot be used.
    """
    if not path:
        return {}, []
    loaded = load_yaml(path)
    if loaded is None:
        raise ConfigError(
            path,
            [
                "holds no settings (the file is empty or only comments); leave out --config to "
                "run with the defaults"
            ],
        )
    if not isinstance(loaded, dict):
        raise ConfigError(
            path, [f"must be a mapping of settings (key: value), not {_kind(loaded)}"]
        )
    if "resources" in loaded:
        loaded = _launchpad_settings(path, loaded)
    settings = {k: v for k, v in loaded.items() if k != "datasets"}
    declarations, problems = parse_declarations(
        loaded.get("datasets"), base_dir=Path(path).resolve().parent, reserved=BUILT_IN
    )
    problems += settings_problems(settings)
    if problems:
        raise ConfigError(path, problems)
    return settings, declarations
