"""The stage-table IO manager: per-run folders, subset runs reading earlier runs, clean-up."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa

from assets.io import ArrowTableIOManager


@dg.asset
def numbers() -> pa.Table:
    return pa.table({"n": [1, 2, 3]})


@dg.asset
def doubled(numbers: pa.Table) -> pa.Table:
    return pa.table({"n": [2 * v for v in numbers.column("n").to_pylist()]})


def _files(base: Path) -> dict[str, set[str]]:
    """``run_id -> {table file names}`` under the stage store."""
    runs = base / "runs"
    if not runs.exists():
        return {}
    return {d.name: {f.name for f in d.glob("*.arrow")} for d in runs.iterdir()}


def test_run_folders_subset_runs_and_clean_up(tmp_path: Path) -> None:
    base = tmp_path / "tables"
    resources = {"io_manager": ArrowTableIOManager(base_dir=str(base))}
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:

        def run(selection):
            result = dg.materialize(
                [numbers, doubled], selection=selection, resources=resources, instance=instance
            )
            assert result.success
            return result

        first = run([numbers, doubled])
        assert _files(base) == {first.run_id: {"numbers.arrow", "doubled.arrow"}}
        # A subset run reads `numbers` from the run that materialized it last.
        second = run([doubled])
        assert second.output_for_node("doubled").column("n").to_pylist() == [2, 4, 6]
        assert _files(base) == {
            first.run_id: {"numbers.arrow", "doubled.arrow"},
            second.run_id: {"doubled.arrow"},
        }
        # The next run removes what no asset's latest materialization points at any more.
        third = run([numbers, doubled])
        assert _files(base) == {
            first.run_id: {"numbers.arrow"},  # still the latest `numbers` when `third` started
            second.run_id: {"doubled.arrow"},
            third.run_id: {"numbers.arrow", "doubled.arrow"},
        }
        fourth = run([numbers])
        assert _files(base) == {
            third.run_id: {"numbers.arrow", "doubled.arrow"},
            fourth.run_id: {"numbers.arrow"},
        }
