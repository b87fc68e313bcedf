"""The code location loads with no credentials and no network, validates through the real
workspace file, and its imports point one way with all environment reading in one module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

LOAD = """
import dagster as dg
from pipelines.definitions import defs
repo = defs.get_repository_def()
keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
assert "release" in keys and "curated_pairs" in keys and "hh_rlhf/raw/harmless_base_train" in keys, keys
assert len([k for k in keys if "/raw/" in k]) == 15 and len([k for k in keys if "/upstream/" in k]) == 15
checks = {c.name for c in repo.asset_graph.asset_check_keys}
assert {"schema_suite", "quarantine_rate", "row_accounting", "curated_pairs_suite", "release_verified"} <= checks, checks
defs.resolve_job_def("full_refresh")
# what a code server sends the webserver and daemon: the repository snapshot must serialize
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster_shared.serdes import serialize_value
serialize_value(RepositorySnap.from_def(repo))
print("loaded", len(keys))
"""
LAYERS = {"curation": set(), "assets": {"curation"}, "pipelines": {"curation", "assets"}}
STAGE_MODULES = {"ingest", "normalize", "curate", "publish", "checks", "upstream"}
#: Modules whose imports inside functions are their purpose: the CLI parses its arguments before
#: it imports what the chosen command needs (``tests/test_cli.py`` checks what each loads).
DEFERRED_IMPORTS = {"pipelines.cli", "pipelines.cli_parser"}


def minimal_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DAGSTER_HOME": str(tmp_path),
    }


def test_definitions_load_without_secrets(tmp_path: Path):
    env = {**minimal_env(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", LOAD], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded" in proc.stdout


def test_workspace_loads_and_validates(tmp_path: Path):
    """``dagster definitions validate`` on workspace.yaml, as ``dagster dev`` loads it."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        env=minimal_env(tmp_path),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "Validation successful for code location pipelines.definitions" in output, output


def project_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported project module, imported at module top level) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        else:
            continue
        out += [(m, id(node) in top) for m in modules if m.split(".")[0] in LAYERS]
    return out


def test_imports_point_one_way_and_sit_at_the_top():
    problems = []
    for package, allowed in LAYERS.items():
        for path in sorted((REPO / package).glob("*.py")):
            here = f"{package}.{path.stem}"
            for module, at_top in project_imports(path):
                layer = module.split(".")[0]
                if layer != package and layer not in allowed:
                    problems.append(f"{here} imports {module} (upward)")
                if package != "curation" and not at_top and here not in DEFERRED_IMPORTS:
                    problems.append(f"{here} imports {module} inside a function")
                if (
                    package == "assets"
                    and path.stem in STAGE_MODULES
                    and module.startswith("assets.")
                    and module.split(".")[-1] in STAGE_MODULES
                ):
                    problems.append(f"{here} imports the stage module {module} (sideways)")
    assert problems == []


#: The packages of the project; ``bench/`` scripts (run by hand) set up their own processes.
PACKAGES = ("curation", "assets", "pipelines", "expectations")
ENV_FUNCTIONS = {"getenv", "putenv", "unsetenv", "getenvb", "environ", "environb"}


def environment_uses(source: str) -> list[int]:
    """Lines of ``source`` touching the process environment: ``os.environ``/``os.getenv``/...,
    ``from os import environ``, and ``os.environ`` under another name (``import os as o``)."""
    tree = ast.parse(source)
    os_names = {"os"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {a.asname or a.name for a in node.names if a.name == "os"}
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENV_FUNCTIONS
            and isinstance(node.value, ast.Name)
            and node.value.id in os_names
        ):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(a.name in ENV_FUNCTIONS for a in node.names)
        ):
            lines.append(node.lineno)
    return sorted(lines)


def test_environment_use_is_found_however_written():
    uses = environment_uses(
        "import os\nimport os as o\nfrom os import getenv\n"
        "a = os.environ.get('X')\nb = o.getenv('Y')\nos.environ.setdefault('Z', '1')\n"
        "c = os.path.join('a')\n"
    )
    assert uses == [3, 4, 5, 6]


def test_environment_is_read_only_in_settings():
    """``pipelines/settings.py`` is the one module that reads the environment (and it never
    writes it): the library and the assets get values passed down."""
    readers = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative != "pipelines/settings.py" and environment_uses(path.read_text()):
                readers.append(f"{relative}:{environment_uses(path.read_text())}")
    assert readers == []
    settings = (REPO / "pipelines" / "settings.py").read_text()
    assert "os.environ[" not in settings and "putenv" not in settings  # read, never written
    assert "setdefault" not in settings and ".update(" not in settings


def test_file_assets_have_short_distinct_names_grouped_by_dataset():
    """Each upstream file and its ingested table are named ``<dataset>/upstream|raw/<label>``,
    the label short enough for the UI's asset graph to show it uncut (it shows a key's last
    part, cut in the middle past 31 characters) and distinct within the dataset."""
    import dagster as dg

    from assets.keys import GRAPH_LABEL_MAX, file_label, ingest_asset_key, upstream_asset_key
    from curation.ingest.sources import all_files
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    labels = {}
    for source in all_files():
        label = file_label(source)
        assert len(label) <= GRAPH_LABEL_MAX, label
        labels.setdefault(source.dataset, []).append(label)
        for key in (ingest_asset_key(source), upstream_asset_key(source)):
            assert key.path[-1] == label and key.path[0] == source.dataset.replace("-", "_")
            assert graph.get(key).group_name == f"ingest/{key.path[0]}"
    for dataset, names in labels.items():
        assert len(set(names)) == len(names), dataset
    assert "helpful_rejection_sampled_train" in labels["hh-rlhf"]
    assert graph.get(dg.AssetKey("release")).group_name == "publish"
