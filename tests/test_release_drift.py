"""Release-over-release checks on real rows (issue 21), through real materializations.

The bundled sample is real upstream rows (``sample_data``: the real ``harmless-base/test`` file
split into a test and a train part, the 45 real PKU-SafeRLHF rows, 120 real red-team
transcripts). A baseline release is published, then releases after controlled upstream changes,
each on its own and together, each compared with the release ``latest`` named:

- 30 % of the ``harmless-base/test`` lines removed: ``drift_rows`` ERROR (796 -> 558 pairs);
- ``safer_response_id`` flipped on a fifth of the PKU rows (every fifth line): ``drift_pairs``
  ERROR (6 of the 30 harmless train pairs have the other response chosen; the 3 of 15 test pairs
  are under ``min_rows``); no label distribution is significant on 45 rows (flipping a pair of
  two safe, or two equally unsafe, responses changes no count: that is why pairs are compared);
- the red-team file vanished under ``allow_missing_files``: ``drift_rows`` WARN.

An ERROR holds ``latest`` and one alert per new release reaches a real local webhook; a rerun
with no change and a change of the code version alone (every table equal) fire nothing.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
from pathlib import Path

import dagster as dg
import pytest

import curation.core.version as version_module
from assets.alerting import AlertsResource
from assets.checks import ALL_CHECKS
from assets.resources import CurationSettings
from curation.publish.drift import CHECKS
from curation.publish.reader import diff_releases, open_release
from curation.publish.release import promote_release, read_promotion
from curation.validate.gx_validate import warm_up
from pipelines.definitions import build_definitions, build_resources
from pipelines.settings import SAMPLE
from tests.pipeline_helpers import environment, release_metadata

RED_TEAM = "hh-rlhf/red-team-attempts/*"
HH_TEST = "hh-rlhf/harmless-base/test.jsonl.gz"
PKU_FILES = ("data/Alpaca-7B/train.jsonl", "data/Alpaca-7B/test.jsonl")


@pytest.fixture(autouse=True)
def gx_imported():
    warm_up().join()


class Scenario:
    """A writable copy of the sample mirrors, a store, a webhook; one materialization a step."""

    def __init__(self, tmp_path: Path, webhook: tuple[str, list[dict]]):
        self.tmp = tmp_path
        self.mirror = tmp_path / "mirror"
        self.store = tmp_path / "store"
        self.url, self.received = webhook
        self.restore()

    def restore(self) -> None:
        shutil.rmtree(self.mirror, ignore_errors=True)
        shutil.copytree(SAMPLE / "hh-rlhf", self.mirror / "hh-rlhf")
        shutil.copytree(SAMPLE / "PKU-SafeRLHF", self.mirror / "PKU-SafeRLHF")

    def cut(self) -> None:
        """30 % of the harmless-base test lines removed (a seeded random choice)."""
        path = self.mirror / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"
        lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
        random.Random(0).shuffle(lines)
        path.write_bytes(gzip.compress(b"".join(lines[: int(len(lines) * 0.7)])))

    def flip(self) -> None:
        """``safer_response_id`` flipped on every fifth PKU row."""
        for relpath in PKU_FILES:
            path = self.mirror / "PKU-SafeRLHF" / relpath
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            for index, row in enumerate(rows):
                if index % 5 == 0:
                    row["safer_response_id"] = 1 - row["safer_response_id"]
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def vanish(self) -> None:
        shutil.rmtree(self.mirror / "hh-rlhf" / "red-team-attempts")

    def latest(self) -> str:
        return json.loads((self.store / "latest.json").read_text())["release_id"]

    def publish(self, defs: dg.Definitions | None = None) -> tuple[dict, dict]:
        """Materialize the graph; the release's metadata and its drift check results."""
        env = environment(
            self.tmp,
            str(self.store),
            hh_rlhf_uri=str(self.mirror / "hh-rlhf"),
            pku_saferlhf_uri=str(self.mirror / "PKU-SafeRLHF"),
        )
        resources = build_resources(env)
        resources["settings"] = CurationSettings(allow_missing_files=[RED_TEAM])
        resources["alerts"] = AlertsResource(webhook_url=self.url, retries=0)
        computed = [
            a
            for a in (defs or build_definitions(env)).assets
            if isinstance(a, dg.AssetsDefinition) and not a.is_observable
        ]
        result = dg.materialize(
            [*computed, *ALL_CHECKS],
            resources=resources,
            raise_on_error=False,
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
        checks = {
            e.check_name: e
            for e in result.get_asset_check_evaluations()
            if e.asset_key == dg.AssetKey("release") and e.check_name in CHECKS
        }
        return release_metadata(result), checks

    def drift_alerts(self) -> list[dict]:
        return [a for a in self.received if a.get("check") == "release_drift"]


def fired(checks: dict) -> dict[str, str]:
    """``{check: severity}`` of the drift checks that did not pass."""
    return {n: c.severity.value for n, c in checks.items() if not c.passed}


def findings(store: Path, release_id: str) -> list[tuple[str, str, str, object, object]]:
    manifest = open_release(str(store), release_id).manifest
    return [
        (f["check"], f["key"], f["severity"], f["previous"], f["new"])
        for c in manifest["changes"]["checks"]
        for f in c["findings"]
    ]


def test_controlled_upstream_changes_fire_exactly_their_checks(
    tmp_path: Path, webhook, monkeypatch: pytest.MonkeyPatch
):
    run = Scenario(tmp_path, webhook)
    base, checks = run.publish()
    assert set(checks) == set(CHECKS)
    assert fired(checks) == {} and all("baseline" in c.description for c in checks.values())
    assert run.drift_alerts() == []
    baseline = base["release_id"]

    run.cut()  # 30 % of harmless-base/test gone: held, one ERROR alert
    cut, checks = run.publish()
    assert fired(checks) == {"drift_rows": "ERROR"}
    assert findings(run.store, cut["release_id"]) == [
        ("drift_rows", "hh-rlhf/harmless-base/test/harmless", "ERROR", 796, 558)
    ]
    assert cut["held"] and run.latest() == baseline
    [alert] = run.drift_alerts()
    assert alert["severity"] == "ERROR"
    assert baseline in alert["message"] and cut["release_id"] in alert["message"]
    assert f"rlhf-curate releases promote {cut['release_id']}" in alert["message"]
    assert "796 -> 558 pairs" in alert["message"]

    run.restore()
    run.flip()  # a fifth of the PKU labels flipped
    flip, checks = run.publish()
    assert fired(checks) == {"drift_pairs": "ERROR"}
    assert findings(run.store, flip["release_id"]) == [
        ("drift_pairs", "pku-saferlhf/Alpaca-7B/train/harmless", "ERROR", 0, 6)
    ]
    assert flip["held"] and run.latest() == baseline

    run.restore()
    run.cut()
    run.flip()
    run.vanish()  # all three together, against the baseline still
    together, checks = run.publish()
    assert fired(checks) == {"drift_rows": "ERROR", "drift_pairs": "ERROR"}
    assert sorted(findings(run.store, together["release_id"])) == [
        ("drift_pairs", "pku-saferlhf/Alpaca-7B/train/harmless", "ERROR", 0, 6),
        ("drift_rows", "hh-rlhf/harmless-base/test/harmless", "ERROR", 796, 558),
        (
            "drift_rows",
            "hh-rlhf/red-team-attempts/red_team_attempts.jsonl.gz",
            "WARN",
            "present",
            "absent",
        ),
    ]
    assert len(run.drift_alerts()) == 3  # one per new release that drifted

    run.restore()
    run.vanish()  # allowed to vanish: a WARN, latest moves, a WARN alert
    vanish, checks = run.publish()
    assert fired(checks) == {"drift_rows": "WARN"}
    assert not vanish["held"] and run.latest() == vanish["release_id"]
    assert run.drift_alerts()[-1]["severity"] == "WARN"
    alerts = len(run.drift_alerts())

    again, checks = run.publish()  # no change: the same release, no alert
    assert (again["release_id"], again["status"]) == (vanish["release_id"], "unchanged")
    assert len(run.drift_alerts()) == alerts

    # the code version alone changes (every table equal): a new release, nothing fires
    real = version_module.source_bytes
    monkeypatch.setattr(
        version_module,
        "source_bytes",
        lambda p: real(p) + (b"\n# edited\n" if p == "curation/publish/card.py" else b""),
    )
    env = environment(
        tmp_path,
        str(run.store),
        hh_rlhf_uri=str(run.mirror / "hh-rlhf"),
        pku_saferlhf_uri=str(run.mirror / "PKU-SafeRLHF"),
    )
    code, checks = run.publish(build_definitions(env))
    assert code["release_id"] != vanish["release_id"] and code["status"] == "published"
    assert fired(checks) == {} and run.latest() == code["release_id"]
    assert len(run.drift_alerts()) == alerts

    # diff, card and manifest say the same as the checks did
    diff = diff_releases(str(run.store), baseline, cut["release_id"])
    rows = next(c for c in diff["drift"] if c["check"] == "drift_rows")
    assert [(f["key"], f["previous"], f["new"]) for f in rows["findings"]] == [
        ("hh-rlhf/harmless-base/test/harmless", 796, 558)
    ]
    card = open_release(str(run.store), cut["release_id"]).read_asset().decode()
    assert f"## Changes since {baseline}" in card and "**Held:**" in card
    assert "| hh-rlhf/harmless-base/test/harmless | ERROR | 796 | 558 |" in card.replace(
        "| drift_rows ", "|"
    ).replace("|| ", "| ")


def test_a_held_release_moves_latest_only_when_promoted(tmp_path: Path, webhook):
    run = Scenario(tmp_path, webhook)
    baseline = run.publish()[0]["release_id"]
    run.cut()
    held = run.publish()[0]["release_id"]
    assert run.latest() == baseline
    # a rerun on the same inputs adopts the held release but does not move latest either
    again = run.publish()[0]
    assert (again["release_id"], again["status"], again["held"]) == (held, "unchanged", True)
    assert run.latest() == baseline

    record = promote_release(str(run.store), held, by="a.reviewer", reason="upstream trimmed")
    assert run.latest() == held
    assert read_promotion(run.store.as_posix(), held) == record
    assert record["latest_before"] == baseline and record["by"] == "a.reviewer"
    pointer = json.loads((run.store / "latest.json").read_text())
    assert pointer["release_id"] == held

    run.vanish()  # the next release quotes the acceptance in its manifest (the chain)
    after = run.publish()[0]
    manifest = open_release(str(run.store), after["release_id"]).manifest
    assert manifest["previous_release"] == held
    assert manifest["previous_promotion"] == record
