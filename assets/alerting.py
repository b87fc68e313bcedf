"""Alert delivery from checks and sensors: a resource holding the webhook URL (a secret)."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from curation.alerts import build_alert, post_alert


class AlertsResource(dg.ConfigurableResource):
    """Where data-quality alerts go: ``ALERT_WEBHOOK_URL`` (optional) and the UI base URL for links."""

    webhook_url: str | None = None
    ui_base_url: str = "http://127.0.0.1:3000"
    timeout_seconds: float = 5.0
    retries: int = 3

    def run_url(self, run_id: str) -> str:
        """Link to a run in the Dagster UI."""
        return f"{self.ui_base_url.rstrip('/')}/runs/{run_id}"

    def send(
        self,
        *,
        asset: str,
        check: str,
        severity: str,
        counts: Mapping[str, Any],
        run_id: str,
        message: str,
    ) -> bool:
        """Build and post an alert (always logged; delivered when a webhook is configured)."""
        payload = build_alert(
            asset=asset,
            check=check,
            severity=severity,
            counts=counts,
            run_id=run_id,
            run_url=self.run_url(run_id),
            message=message,
        )
        return post_alert(
            payload, self.webhook_url, timeout=self.timeout_seconds, retries=self.retries
        )
