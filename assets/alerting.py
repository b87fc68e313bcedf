"""Alert delivery from checks and sensors: a resource holding the webhook URL (a secret).

:meth:`AlertsResource.send` builds the alert, logs it at once and keeps it in the execution's
:class:`~curation.publish.alerts.AlertOutbox`; the resource's teardown delivers what was kept within
``budget_seconds``. Dagster tears resources down when the code that used them is done: with the
in-process executor (``rlhf-curate run``/``refresh`` and, by default, runs from the UI and the
daemon) at the **end of the run**, after the release is published; with a process per step at the
end of each step (the steps of a run then share one budget: each subtracts what the run's earlier
deliveries spent); after each sensor evaluation for the run-failure and freshness alerts.

The outcome (delivered or not, and why) goes to the run's event log as one engine event per
teardown, whose metadata :func:`alert_records` reads back (the CLI prints it). A delivery problem
never fails a run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.events import EngineEventData
from pydantic import PrivateAttr

from curation.publish.alerts import (
    DEFAULT_BUDGET_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    AlertOutbox,
    build_alert,
    summarize,
)

#: Metadata key of the engine event that records a teardown's deliveries.
ALERTS_METADATA = "rlhf/alerts"

_log = logging.getLogger(__name__)


class AlertsResource(dg.ConfigurableResource):
    """Where data-quality alerts go: ``ALERT_WEBHOOK_URL`` (optional), the UI base URL for
    links, and how long a run may spend delivering them (``ALERT_BUDGET_SECONDS``)."""

    webhook_url: str | None = None
    ui_base_url: str = "http://127.0.0.1:3000"
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    retries: int = 3
    budget_seconds: float = DEFAULT_BUDGET_SECONDS

    _outbox: AlertOutbox | None = PrivateAttr(default=None)

    def run_url(self, run_id: str) -> str:
        """Link to a run in the Dagster UI."""
        return f"{self.ui_base_url.rstrip('/')}/runs/{run_id}"

    def outbox(self) -> AlertOutbox:
        """A new, empty outbox with this resource's webhook, budget, timeout and retries."""
        return AlertOutbox(
            self.webhook_url,
            budget=self.budget_seconds,
            timeout=self.timeout_seconds,
            retries=self.retries,
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """A fresh outbox for this run (or step process, or sensor evaluation)."""
        self._outbox = self.outbox()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Deliver the kept alerts within what is left of the run's budget; record the outcome.
        Never raises: alerts never fail a run."""
        outbox, self._outbox = self._outbox, None
        if outbox is None:
            return
        try:
            _deliver_and_record(outbox, context)
        except Exception as exc:  # a delivery problem must not fail the run
            _log.error("alerts: delivery or its record failed: %s", type(exc).__name__)

    def send(
        self,
        *,
        asset: str,
        check: str,
        severity: str,
        counts: Mapping[str, Any],
        run_id: str,
        message: str,
    ) -> None:
        """Build the alert and log it now; it is delivered at teardown (see the module doc).

        Outside an execution (no teardown to come) it is delivered at once, within the budget.
        """
        payload = build_alert(
            asset=asset,
            check=check,
            severity=severity,
            counts=counts,
            run_id=run_id,
            run_url=self.run_url(run_id),
            message=message,
        )
        if self._outbox is not None:
            self._outbox.add(payload)
            return
        outbox = self.outbox()
        outbox.add(payload)
        outbox.flush()


def _deliver_and_record(outbox: AlertOutbox, context: dg.InitResourceContext) -> None:
    """Flush ``outbox`` within the run's remaining budget; an engine event in the run (if any)
    and a log line say what was delivered, what not and why."""
    run, instance = context.dagster_run, context.instance
    spent_before = 0.0
    if run is not None and instance is not None:
        spent_before = sum(record["seconds"] for record in alert_records(instance, run.run_id))
    start = time.monotonic()
    deliveries = outbox.flush(max(outbox.budget - spent_before, 0.0))
    if not deliveries:
        return
    summary = summarize(deliveries, outbox.budget, time.monotonic() - start, outbox.target)
    failed = [d for d in deliveries if not d.delivered]
    message = (
        f"alerts: {summary['delivered']} of {summary['alerts']} delivered to {outbox.target} "
        f"in {summary['seconds']:.1f} s (budget {outbox.budget:g} s)"
    )
    if failed:
        message += "; not delivered: " + "; ".join(d.describe() for d in failed)
    (_log.warning if failed else _log.info)("%s", message)
    if run is not None and instance is not None:
        instance.report_engine_event(
            message,
            run,
            EngineEventData(metadata={ALERTS_METADATA: dg.MetadataValue.json(summary)}),
        )


def alert_records(instance: dg.DagsterInstance, run_id: str) -> list[dict[str, Any]]:
    """What each alert delivery of the run recorded (:func:`curation.publish.alerts.summarize`), in
    order: the target, counts, seconds spent against the budget and every delivery."""
    records = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        value = (data.metadata or {}).get(ALERTS_METADATA) if data is not None else None
        if value is not None:
            records.append(value.value)
    return records
