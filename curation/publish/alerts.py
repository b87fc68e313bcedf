"""Data-quality alerts: a Slack-compatible JSON payload, POSTed to a webhook and always logged.

``build_alert`` makes the payload (``text`` and ``blocks`` for Slack plus the structured fields
``asset``, ``check``, ``severity``, ``counts``, ``run_id``, ``run_url`` for any other receiver).
``post_alert`` logs it and, if a webhook URL is configured, POSTs it with the standard library,
retrying connection errors, timeouts, HTTP 429 and 5xx with exponential backoff.

A run does not post as it goes: :class:`AlertOutbox` logs each alert at once, keeps it, and
``flush`` delivers all of them at the end within one time **budget** (every attempt's timeout
shrinks to what is left of it, and the deliveries run on a thread joined with the budget, so a
webhook that never answers costs the run at most the budget, not ~23 s per alert). ``flush``
returns a :class:`Delivery` per alert: delivered, or why not (``timeout``, ``connection
refused``, ``HTTP 503``, budget spent).

Webhook URLs carry their secret in the path (``https://hooks.slack.com/services/T…/B…/<token>``)
or query, so the URL is never logged: only ``scheme://host/...``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from curation.core.redact import redact_uri, scrub, split_userinfo, uri_secrets

#: Environment variable the pipeline reads the webhook URL from (unset: alerts are only logged).
WEBHOOK_ENV = "ALERT_WEBHOOK_URL"

#: Total seconds the alerts of one run (or one sensor tick) may take to deliver. A webhook that
#: answers (Slack: well under a second, about one message per second accepted, "Posting
#: messages: 1 per second, short bursts >1 allowed", https://api.slack.com/docs/rate-limits)
#: delivers a run's few alerts in a second or two (the sample's 4: 0.0 s to a local webhook);
#: 10 s is a quarter of a ~40 s sample run and a sixth of Dagster's 60 s limit on a sensor
#: evaluation (``DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS``), where the run-failure and freshness
#: alerts are delivered. ``ALERT_BUDGET_SECONDS`` changes it (docs/operations.md, Alerts).
DEFAULT_BUDGET_SECONDS = 10.0
#: Seconds one attempt may wait for the webhook (each socket operation), at most what is left of
#: the budget. Slack answers a webhook POST in a fraction of a second.
DEFAULT_TIMEOUT_SECONDS = 5.0
#: Extra seconds ``AlertOutbox.flush`` waits for its delivery thread beyond the budget (the
#: thread notices the deadline only between socket operations).
JOIN_GRACE_SECONDS = 1.0

SEVERITY_ICONS = {"ERROR": ":rotating_light:", "WARN": ":warning:", "INFO": ":information_source:"}

_log = logging.getLogger(__name__)


def redact_url(url: str | None) -> str:
    """A webhook URL as it may be logged: ``scheme://host[:port]/...`` (no user info, path,
    query or fragment; :func:`curation.core.redact.redact_uri`)."""
    return redact_uri(url, keep_path=False) if url else "<none>"


def _scrub(text: str, url: str | None) -> str:
    """Remove the URL and its secret-bearing parts (user info, query, path and its token-like
    segments) from free text (e.g. exception messages)."""
    if not url:
        return scrub(text)
    return scrub(text.replace(url, redact_url(url)), uri_secrets(url, path_is_secret=True))


def _severity_name(severity: Any) -> str:
    """Accept ``"ERROR"``/``"warn"``/Dagster's ``AssetCheckSeverity`` enum alike."""
    value = getattr(severity, "value", severity)
    name = str(value).strip().upper() or "ERROR"
    return "WARN" if name == "WARNING" else name


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: getattr(v, "item", lambda: str(v))()))


def build_alert(
    *,
    asset: str,
    check: str,
    severity: Any,
    counts: Mapping[str, Any],
    run_id: str | None,
    run_url: str | None,
    message: str,
) -> dict[str, Any]:
    """A Slack-compatible alert payload with the structured fields alongside.

    ``counts`` is e.g. ``{"rows": 100000, "failed": 12}`` (numpy ints are fine). Slack renders
    ``text`` (and ``blocks``) and ignores the other keys; other receivers read the structured
    fields.
    """
    level = _severity_name(severity)
    counts = _jsonable(dict(counts))
    icon = SEVERITY_ICONS.get(level, ":grey_question:")
    counts_text = ", ".join(f"{k}={v}" for k, v in counts.items()) or "-"
    run_text = f"<{run_url}|{run_id}>" if run_url and run_id else run_url or run_id or "-"
    text = (
        f"{icon} [{level}] data-quality check `{check}` on asset `{asset}`: {message}\n"
        f"counts: {counts_text} | run: {run_text}"
    )
    return {
        "text": text,
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"{icon} *[{level}]* {message}"},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*Asset*\n`{asset}`"},
                    {"type": "mrkdwn", "text": f"*Check*\n`{check}`"},
                    {"type": "mrkdwn", "text": f"*Counts*\n{counts_text}"},
                    {"type": "mrkdwn", "text": f"*Run*\n{run_text}"},
                ],
            },
        ],
        "asset": asset,
        "check": check,
        "severity": level,
        "counts": counts,
        "run_id": run_id,
        "run_url": run_url,
        "message": message,
    }


def suite_counts(result: Any) -> dict[str, int]:
    """Counts for an alert from a ``curation.validate.gx_validate.SuiteResult`` (duck-typed)."""
    unexpected = sum(f.get("unexpected_count") or 0 for f in result.failures)
    return {
        "rows": result.rows,
        "expectations_evaluated": result.evaluated,
        "expectations_failed": result.failed,
        "unexpected_values": unexpected,
    }


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _open(request: urllib.request.Request, timeout: float):
    if _is_loopback(request.full_url):  # never route loopback through an HTTP(S) proxy
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return opener.open(request, timeout=timeout)
    return urllib.request.urlopen(request, timeout=timeout)


@dataclass(frozen=True)
class Delivery:
    """What became of one alert: delivered, or not and why (``reason``)."""

    asset: str
    check: str
    severity: str
    delivered: bool
    reason: str = ""  # "timeout", "connection refused", "HTTP 503", "not sent: ..."
    attempts: int = 0
    seconds: float = 0.0

    @classmethod
    def of(cls, payload: Mapping[str, Any], **outcome: Any) -> Delivery:
        """The delivery of ``payload`` (its asset, check and severity) with ``outcome``."""
        return cls(
            asset=str(payload.get("asset", "?")),
            check=str(payload.get("check", "?")),
            severity=_severity_name(payload.get("severity", "ERROR")),
            **outcome,
        )

    def describe(self) -> str:
        """``WARN quarantine_rate on raw_x: timeout (2 attempts, 4.0 s)``."""
        what = f"{self.severity} {self.check} on {self.asset}"
        if self.delivered:
            return f"{what}: delivered"
        tries = (
            f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}, " if self.attempts else ""
        )
        return f"{what}: {self.reason} ({tries}{self.seconds:.1f} s)"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (for run metadata)."""
        return asdict(self)


def _problem(exc: BaseException, url: str) -> str:
    """A short, secret-free reason for a failed attempt: ``timeout``, ``connection refused``..."""
    reason = getattr(exc, "reason", exc)  # URLError wraps the socket error
    if isinstance(reason, TimeoutError):  # socket.timeout is TimeoutError
        return "timeout"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    kind = type(reason if isinstance(reason, BaseException) else exc).__name__
    return _scrub(f"{kind}: {reason}", url)


def _left(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline - time.monotonic()


def log_alert(payload: Mapping[str, Any], url: str | None, logger: logging.Logger | None) -> str:
    """Log ``payload`` (ERROR or WARNING after its severity, the URL scrubbed); its JSON body."""
    body = json.dumps(payload, ensure_ascii=False, default=str)
    level = (
        logging.ERROR
        if _severity_name(payload.get("severity", "ERROR")) == "ERROR"
        else logging.WARNING
    )
    (logger or _log).log(level, "data-quality alert: %s", _scrub(body, url))
    return body


def post_alert(
    payload: Mapping[str, Any],
    url: str | None,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    retries: int = 3,
    backoff: float = 0.5,
    logger: logging.Logger | None = None,
) -> bool:
    """Log ``payload`` and POST it as JSON to ``url`` if set; True if the webhook accepted it.

    See :func:`deliver` (without a deadline). Against a webhook that never answers it returns
    after about ``(1 + retries) * timeout + backoff * (2**retries - 1)`` seconds: a run uses
    :class:`AlertOutbox` instead, which bounds the total.
    """
    log_alert(payload, url, logger)
    return deliver(
        payload, url, timeout=timeout, retries=retries, backoff=backoff, logger=logger
    ).delivered


def deliver(
    payload: Mapping[str, Any],
    url: str | None,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    retries: int = 3,
    backoff: float = 0.5,
    deadline: float | None = None,
    logger: logging.Logger | None = None,
) -> Delivery:
    """POST ``payload`` as JSON to ``url``; what became of it.

    Up to ``1 + retries`` attempts; ``timeout`` bounds each socket operation (connect, each
    read) of an attempt, and never exceeds what is left until ``deadline`` (a
    ``time.monotonic()`` value; ``None``: no deadline). Connection errors, timeouts, HTTP 429 and
    5xx are retried after ``backoff * 2**attempt`` seconds unless that would pass the deadline;
    other 4xx are not. Never raises for delivery problems; never logs the URL beyond
    ``scheme://host[:port]/...``.
    """
    log = logger or _log
    start = time.monotonic()

    def outcome(delivered: bool, reason: str = "", attempts: int = 0) -> Delivery:
        seconds = round(time.monotonic() - start, 3)
        return Delivery.of(
            payload, delivered=delivered, reason=reason, attempts=attempts, seconds=seconds
        )

    if not url:
        log.info("no alert webhook configured (%s unset): alert logged only", WEBHOOK_ENV)
        return outcome(False, "no webhook configured")
    target = redact_url(url)
    if urlsplit(url).scheme not in ("http", "https"):
        log.error("alert webhook %s: unsupported scheme, not sent", target)
        return outcome(False, "unsupported URL scheme")
    data = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
    target_url, auth = split_userinfo(url)
    attempts = 1 + max(int(retries), 0)
    problem = "not sent: alert time budget spent"
    for attempt in range(attempts):
        left = _left(deadline)
        if left <= 0:
            return outcome(False, problem, attempt)
        request = urllib.request.Request(
            target_url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", **auth},
        )
        retryable = True
        try:
            with _open(request, min(timeout, left)) as response:
                response.read()
                status = response.status
            if 200 <= status < 300:
                log.info("alert delivered to %s (attempt %d/%d)", target, attempt + 1, attempts)
                return outcome(True, attempts=attempt + 1)
            problem = f"HTTP {status}"
            retryable = status == 429 or status >= 500
        except urllib.error.HTTPError as exc:
            exc.close()
            problem = f"HTTP {exc.code}"
            retryable = exc.code == 429 or exc.code >= 500
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            problem = _problem(exc, url)
        if not retryable:
            log.error("alert to %s rejected (%s); not retrying", target, problem)
            return outcome(False, problem, attempt + 1)
        delay = backoff * (2**attempt)
        if attempt + 1 < attempts and delay < _left(deadline):
            log.warning(
                "alert to %s failed (%s), attempt %d/%d; retrying in %.2fs",
                target,
                problem,
                attempt + 1,
                attempts,
                delay,
            )
            time.sleep(delay)
            continue
        log.error("alert to %s failed (%s) after %d attempts", target, problem, attempt + 1)
        return outcome(False, problem, attempt + 1)
    return outcome(False, problem, attempts)  # not reached: the loop returns


_SEVERITY_ORDER = {"ERROR": 0, "WARN": 1}


class AlertOutbox:
    """The alerts of one run (or one sensor tick): logged when added, delivered by ``flush``.

    ``flush`` posts them in order of severity (ERROR first), one after another, within
    ``budget`` seconds in total: each attempt's timeout shrinks to what is left, an alert the
    budget no longer allows is not sent, and the deliveries run on a daemon thread that
    ``flush`` waits for at most ``budget`` (plus :data:`JOIN_GRACE_SECONDS`), so a webhook that
    trickles bytes or a hanging name lookup cannot hold the caller longer either.
    """

    def __init__(
        self,
        url: str | None,
        *,
        budget: float = DEFAULT_BUDGET_SECONDS,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retries: int = 3,
        backoff: float = 0.5,
        logger: logging.Logger | None = None,
    ) -> None:
        self.url = url
        self.budget = max(float(budget), 0.0)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.logger = logger
        self._pending: list[Mapping[str, Any]] = []
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        """The webhook as it may be shown: ``scheme://host[:port]/...``."""
        return redact_url(self.url)

    def add(self, payload: Mapping[str, Any]) -> None:
        """Log ``payload`` now; keep it for :meth:`flush`."""
        log_alert(payload, self.url, self.logger)
        with self._lock:
            self._pending.append(payload)

    def flush(self, budget: float | None = None) -> list[Delivery]:
        """Deliver every kept alert within ``budget`` (default: the outbox's); one
        :class:`Delivery` per alert, ERROR alerts first. Nothing to deliver without a webhook."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending or not self.url:
            return []
        pending.sort(key=lambda p: _SEVERITY_ORDER.get(_severity_name(p.get("severity")), 2))
        budget = self.budget if budget is None else max(float(budget), 0.0)
        start = time.monotonic()
        deadline = start + budget
        done: list[Delivery] = []
        worker = threading.Thread(
            target=self._deliver_all, args=(pending, deadline, done), name="alert-delivery"
        )
        worker.daemon = True  # a connection still hanging after the budget is abandoned
        worker.start()
        worker.join(budget + JOIN_GRACE_SECONDS)
        finished = list(done)
        spent = round(time.monotonic() - start, 3)
        late = f"not delivered within the {budget:g} s alert budget"
        return finished + [
            Delivery.of(p, delivered=False, reason=late, seconds=spent)
            for p in pending[len(finished) :]
        ]

    def _deliver_all(
        self, pending: Iterable[Mapping[str, Any]], deadline: float, done: list[Delivery]
    ) -> None:
        for payload in pending:
            done.append(
                deliver(
                    payload,
                    self.url,
                    timeout=self.timeout,
                    retries=self.retries,
                    backoff=self.backoff,
                    deadline=deadline,
                    logger=self.logger,
                )
            )


def summarize(deliveries: Iterable[Delivery], budget: float, seconds: float, target: str) -> dict:
    """What a run records about its alerts (no secret: the target is redacted, reasons
    scrubbed): counts, the time spent against the budget, and every delivery."""
    deliveries = list(deliveries)
    return {
        "target": target,
        "alerts": len(deliveries),
        "delivered": sum(d.delivered for d in deliveries),
        "budget_seconds": budget,
        "seconds": round(seconds, 3),
        "deliveries": [d.to_json() for d in deliveries],
    }
