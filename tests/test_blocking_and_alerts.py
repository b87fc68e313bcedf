"""A failing ERROR check blocks publish in the same run, and its alert reaches a local webhook."""

from __future__ import annotations

from pathlib import Path

from assets.alerting import AlertsResource
from assets.resources import CurationSettings
from tests.pipeline_helpers import check_results, environment, materialize, release_metadata


def test_error_check_blocks_publish_and_alerts(tmp_path: Path, webhook):
    url, received = webhook
    store = tmp_path / "warehouse"
    # 13 of 2,312 real harmless-base rows are quarantined (0.56 %): an error rate of 0.1 % fails.
    settings = CurationSettings(quarantine_error_rate=0.001, quarantine_warn_rate=0.0005)
    result = materialize(
        environment(tmp_path, str(store)),
        settings=settings,
        alerts=AlertsResource(webhook_url=url, retries=0),
    )
    checks = check_results(result)
    failing = checks[("hh_rlhf/raw/harmless_base_train", "quarantine_rate")]
    assert not failing.passed and failing.severity.value == "ERROR"
    assert release_metadata(result) == {}
    assert not (store / "latest.json").exists()
    assert not (store / "releases").exists() or not any((store / "releases").iterdir())
    alerts = [a for a in received if a["check"] == "quarantine_rate"]
    assert {a["asset"] for a in alerts} >= {"hh_rlhf/raw/harmless_base_train"}
    alert = next(a for a in alerts if a["asset"] == "hh_rlhf/raw/harmless_base_train")
    assert alert["severity"] == "ERROR" and alert["run_id"] == result.run_id
    assert alert["counts"]["rows_quarantined"] == 9
    assert "text" in alert and result.run_id in alert["run_url"]


def test_warn_check_does_not_block(tmp_path: Path, webhook):
    url, received = webhook
    store = tmp_path / "warehouse"
    settings = CurationSettings(quarantine_warn_rate=0.005)  # the default (1 %) stays quiet here
    result = materialize(
        environment(tmp_path, str(store)),
        settings,
        alerts=AlertsResource(webhook_url=url, retries=0),
    )
    assert result.success
    checks = check_results(result)
    warn = checks[("hh_rlhf/raw/harmless_base_train", "quarantine_rate")]
    assert not warn.passed and warn.severity.value == "WARN"  # 0.60 % > 0.5 % warn, < 5 % error
    assert release_metadata(result)["status"] == "published"
    assert any(a["severity"] == "WARN" for a in received)
