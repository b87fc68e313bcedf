"""A two-step job on the multiprocess executor whose steps each send an alert (for
``tests/test_alert_budget.py``): each step process tears its ``AlertsResource`` down at its own end,
and the two must share the run's one alert budget."""

import dagster as dg

from assets.alerting import AlertsResource


def _alert(alerts: AlertsResource, asset: str) -> None:
    run_id = dg.OpExecutionContext.get().run_id
    alerts.send(
        asset=asset, check="demo", severity="WARN", counts={}, run_id=run_id, message="demo"
    )


@dg.op
def first_alert(alerts: AlertsResource) -> int:
    """Send one alert (delivered when this step's process ends)."""
    _alert(alerts, "first")
    return 1


@dg.op
def second_alert(alerts: AlertsResource, after: int) -> None:
    """Send one alert, in a later step's process."""
    _alert(alerts, "second")


@dg.job(
    executor_def=dg.multiprocess_executor,
    resource_defs={"alerts": AlertsResource.configure_at_launch()},
)
def two_alerting_steps() -> None:
    """``first_alert`` then ``second_alert``, one process each."""
    second_alert(first_alert())
