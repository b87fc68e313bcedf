"""Data-quality alerts: a Slack-compatible JSON payload, POSTed to a webhook and always logged.

``build_alert`` makes the payload (``text`` and ``blocks`` for Slack plus the structured fields
``asset``, ``check``, ``severity``, ``counts``, ``run_id``, ``run_url`` for any other receiver).
``post_alert`` logs it and, if a webhook URL is configured, POSTs it with the standard library,
retrying connection errors, timeouts, HTTP 429 and 5xx with exponential backoff.

Webhook URLs carry their secret in the path (``https://hooks.slack.com/services/T…/B…/<token>``)
or query, so the URL is never logged: only ``scheme://host/...``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from curation.redact import redact_uri, scrub, split_userinfo, uri_secrets

#: Environment variable the pipeline reads the webhook URL from (unset: alerts are only logged).
WEBHOOK_ENV = "ALERT_WEBHOOK_URL"

SEVERITY_ICONS = {"ERROR": ":rotating_light:", "WARN": ":warning:", "INFO": ":information_source:"}

_log = logging.getLogger(__name__)


def redact_url(url: str | None) -> str:
    """A webhook URL as it may be logged: ``scheme://host[:port]/...`` (no user info, path,
    query or fragment; :func:`curation.redact.redact_uri`)."""
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
    """Counts for an alert from a ``curation.gx_validate.SuiteResult`` (duck-typed)."""
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


def post_alert(
    payload: Mapping[str, Any],
    url: str | None,
    *,
    timeout: float = 5.0,
    retries: int = 3,
    backoff: float = 0.5,
    logger: logging.Logger | None = None,
) -> bool:
    """Log ``payload`` and POST it as JSON to ``url`` if set; True if the webhook accepted it.

    Up to ``1 + retries`` attempts; ``timeout`` bounds each socket operation (connect, each
    read) of an attempt. Connection errors, timeouts, HTTP 429 and 5xx are retried after
    ``backoff * 2**attempt`` seconds; other 4xx are not. Against a webhook that never answers it
    returns after about ``(1 + retries) * timeout + backoff * (2**retries - 1)`` seconds. Never
    raises for delivery problems; never logs the URL beyond ``scheme://host[:port]/...``.
    """
    log = logger or _log
    body = json.dumps(payload, ensure_ascii=False, default=str)
    level = (
        logging.ERROR
        if _severity_name(payload.get("severity", "ERROR")) == "ERROR"
        else logging.WARNING
    )
    log.log(level, "data-quality alert: %s", _scrub(body, url))
    if not url:
        log.info("no alert webhook configured (%s unset): alert logged only", WEBHOOK_ENV)
        return False

    target = redact_url(url)
    if urlsplit(url).scheme not in ("http", "https"):
        log.error("alert webhook %s: unsupported scheme, not sent", target)
        return False
    data = body.encode("utf-8")
    target_url, auth = split_userinfo(url)
    attempts = 1 + max(int(retries), 0)
    for attempt in range(attempts):
        request = urllib.request.Request(
            target_url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", **auth},
        )
        retryable = True
        try:
            with _open(request, timeout) as response:
                response.read()
                status = response.status
            if 200 <= status < 300:
                log.info("alert delivered to %s (attempt %d/%d)", target, attempt + 1, attempts)
                return True
            problem = f"HTTP {status}"
            retryable = status == 429 or status >= 500
        except urllib.error.HTTPError as exc:
            exc.close()
            problem = f"HTTP {exc.code}"
            retryable = exc.code == 429 or exc.code >= 500
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            problem = _scrub(f"{type(exc).__name__}: {reason}", url)
        if not retryable:
            log.error("alert to %s rejected (%s); not retrying", target, problem)
            return False
        if attempt + 1 < attempts:
            delay = backoff * (2**attempt)
            log.warning(
                "alert to %s failed (%s), attempt %d/%d; retrying in %.2fs",
                target,
                problem,
                attempt + 1,
                attempts,
                delay,
            )
            time.sleep(delay)
        else:
            log.error("alert to %s failed (%s) after %d attempts", target, problem, attempts)
    return False
