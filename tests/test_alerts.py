"""Alerts: payload shape, delivery to a local webhook, retries, timeouts, no secret in logs."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from curation.publish import alerts

TOKEN = "XoXbSeCrEtToKeN42"


@dataclass
class Hook:
    """A local webhook: answers ``statuses`` in turn (then 200) and records every request."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            state.requests.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "authorization": self.headers.get("Authorization"),
                    "body": json.loads(self.rfile.read(length)),
                }
            )
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"error")

        def log_message(self, *args):  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/services/T01/B02/{TOKEN}?key={TOKEN}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A socket that accepts connections (kernel backlog) but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook/{TOKEN}"
    finally:
        sock.close()


def _payload(**overrides):
    kwargs = {
        "asset": "pku_saferlhf_raw",
        "check": "gx_schema",
        "severity": "ERROR",
        "counts": {"rows": 100, "failed": 3},
        "run_id": "run-123",
        "run_url": "http://localhost:3000/runs/run-123",
        "message": "3 of 169 expectations failed",
    }
    return alerts.build_alert(**(kwargs | overrides))


def test_build_alert_shape():
    import numpy as np

    payload = _payload(counts={"rows": np.int64(7), "failed": 1}, severity="warning")
    assert json.loads(json.dumps(payload)) == payload
    assert payload["asset"] == "pku_saferlhf_raw" and payload["check"] == "gx_schema"
    assert payload["severity"] == "WARN"
    assert payload["counts"] == {"rows": 7, "failed": 1}
    assert payload["run_id"] == "run-123"
    assert payload["run_url"] == "http://localhost:3000/runs/run-123"
    assert "gx_schema" in payload["text"] and "pku_saferlhf_raw" in payload["text"]
    assert "<http://localhost:3000/runs/run-123|run-123>" in payload["text"]
    assert payload["blocks"][0]["type"] == "section"


def test_build_alert_accepts_enum_severity_and_missing_run():
    class Severity:  # stands in for dagster.AssetCheckSeverity.ERROR
        value = "ERROR"

    payload = _payload(severity=Severity(), run_id=None, run_url=None)
    assert payload["severity"] == "ERROR"
    assert payload["run_id"] is None and "run: -" in payload["text"]


def test_suite_counts():
    class Result:
        rows, evaluated, failed = 10, 5, 2

        def __init__(self):
            self.failures = [{"unexpected_count": 3}, {"unexpected_count": None}]

    assert alerts.suite_counts(Result()) == {
        "rows": 10,
        "expectations_evaluated": 5,
        "expectations_failed": 2,
        "unexpected_values": 3,
    }


def test_alert_is_delivered_as_json(hook, caplog):
    payload = _payload()
    with caplog.at_level(logging.INFO, logger="curation.publish.alerts"):
        assert alerts.post_alert(payload, hook.url, timeout=2.0, retries=0) is True
    assert len(hook.requests) == 1
    request = hook.requests[0]
    assert request["body"] == payload
    assert request["content_type"].startswith("application/json")
    assert request["path"].endswith(f"/{TOKEN}?key={TOKEN}")
    assert "data-quality alert" in caplog.text and "gx_schema" in caplog.text
    assert TOKEN not in caplog.text
    assert "http://127.0.0.1:" in caplog.text and "/..." in caplog.text


def test_retries_after_two_500s(hook, caplog):
    hook.statuses = [500, 503]
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="curation.publish.alerts"):
        assert alerts.post_alert(_payload(), hook.url, timeout=2.0, retries=3, backoff=0.05)
    assert len(hook.requests) == 3
    assert all(r["body"]["check"] == "gx_schema" for r in hook.requests)
    assert time.monotonic() - start >= 0.05 + 0.1  # backoff 0.05, then 0.1
    assert "HTTP 500" in caplog.text and "HTTP 503" in caplog.text
    assert TOKEN not in caplog.text


def test_gives_up_after_retries(hook):
    hook.statuses = [500] * 5
    assert alerts.post_alert(_payload(), hook.url, timeout=2.0, retries=2, backoff=0.01) is False
    assert len(hook.requests) == 3


def test_client_error_is_not_retried(hook, caplog):
    hook.statuses = [400]
    with caplog.at_level(logging.INFO, logger="curation.publish.alerts"):
        assert alerts.post_alert(_payload(), hook.url, retries=3, backoff=0.01) is False
    assert len(hook.requests) == 1
    assert "HTTP 400" in caplog.text and TOKEN not in caplog.text


def test_timeout_returns_false_within_bound(silent_url, caplog):
    timeout, retries, backoff = 0.3, 1, 0.05
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="curation.publish.alerts"):
        delivered = alerts.post_alert(
            _payload(), silent_url, timeout=timeout, retries=retries, backoff=backoff
        )
    elapsed = time.monotonic() - start
    assert delivered is False
    assert elapsed < (1 + retries) * timeout + backoff + 1.0
    assert "after 2 attempts" in caplog.text
    assert TOKEN not in caplog.text


def test_connection_refused_is_retried_then_false(caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/services/{TOKEN}"
    with caplog.at_level(logging.INFO, logger="curation.publish.alerts"):
        assert alerts.post_alert(_payload(), url, timeout=1.0, retries=2, backoff=0.01) is False
    assert caplog.text.count("retrying") == 2
    assert TOKEN not in caplog.text


def test_without_url_the_alert_is_only_logged(caplog):
    with caplog.at_level(logging.INFO, logger="curation.publish.alerts"):
        assert alerts.post_alert(_payload(), None) is False
    assert "3 of 169 expectations failed" in caplog.text
    records = [r for r in caplog.records if "data-quality alert" in r.getMessage()]
    assert records and records[0].levelno == logging.ERROR


def test_custom_logger_and_warn_level(hook, caplog):
    logger = logging.getLogger("test.alerts.custom")
    with caplog.at_level(logging.INFO, logger="test.alerts.custom"):
        assert alerts.post_alert(_payload(severity="WARN"), hook.url, logger=logger)
    records = [r for r in caplog.records if r.name == "test.alerts.custom"]
    assert any(
        r.levelno == logging.WARNING and "data-quality alert" in r.getMessage() for r in records
    )
    assert TOKEN not in caplog.text


def test_redact_url():
    assert (
        alerts.redact_url(f"https://user:pw@hooks.slack.com/services/T/B/{TOKEN}?x=1")
        == "https://hooks.slack.com/..."
    )
    assert alerts.redact_url("http://127.0.0.1:8080/a/b") == "http://127.0.0.1:8080/..."
    assert alerts.redact_url(None) == "<none>"


def test_url_in_payload_is_scrubbed_from_logs(caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/{TOKEN}"
    payload = _payload(message=f"misconfigured webhook {url}")
    with caplog.at_level(logging.INFO, logger="curation.publish.alerts"):
        assert alerts.post_alert(payload, url, timeout=0.5, retries=0) is False
        assert alerts.post_alert(payload | {"message": TOKEN}, "ftp://h/" + TOKEN) is False
    assert TOKEN not in caplog.text
    assert "unsupported scheme" in caplog.text


def test_basic_auth_in_the_url_is_sent_as_a_header(hook, caplog):
    """``https://user:pass@host/...`` delivers, with the credentials in an Authorization header
    (the receiver checks it) and never in the logs."""
    import base64

    password = "Pa55w0rd-" + TOKEN
    url = hook.url.replace("http://", f"http://alerts-bot:{password}@")
    with caplog.at_level(logging.DEBUG, logger="curation.publish.alerts"):
        assert alerts.post_alert(_payload(), url, retries=0)
    (request,) = hook.requests
    expected = base64.b64encode(f"alerts-bot:{password}".encode()).decode()
    assert request["authorization"] == f"Basic {expected}"
    assert request["path"].startswith("/services/T01/B02/")
    assert password not in caplog.text and "alerts-bot" not in caplog.text
    assert TOKEN not in caplog.text


# --- the outbox: deliver at the end, within one budget -------------------------------------------


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    return f"http://127.0.0.1:{port}/services/{TOKEN}"


def test_outbox_sends_nothing_before_flush_then_each_alert_once(hook, caplog):
    outbox = alerts.AlertOutbox(hook.url, budget=10.0, retries=0)
    with caplog.at_level(logging.INFO, logger="curation.publish.alerts"):
        outbox.add(_payload(asset="a", severity="WARN"))
        outbox.add(_payload(asset="b", severity="ERROR"))
        outbox.add(_payload(asset="c", severity="WARN"))
        assert hook.requests == []  # kept, not sent
        assert caplog.text.count("data-quality alert") == 3  # but logged at once
        deliveries = outbox.flush()
    assert [r["body"]["asset"] for r in hook.requests] == ["b", "a", "c"]  # ERROR first
    assert [(d.asset, d.delivered, d.attempts) for d in deliveries] == [
        ("b", True, 1),
        ("a", True, 1),
        ("c", True, 1),
    ]
    assert outbox.flush() == []  # nothing is sent twice
    assert len(hook.requests) == 3


def test_outbox_against_a_silent_webhook_stops_at_the_budget(silent_url):
    budget = 0.6
    outbox = alerts.AlertOutbox(silent_url, budget=budget, timeout=5.0, retries=3, backoff=0.05)
    for asset in ("a", "b", "c"):
        outbox.add(_payload(asset=asset))
    start = time.monotonic()
    first, *rest = outbox.flush()
    elapsed = time.monotonic() - start
    assert not first.delivered and first.reason == "timeout" and first.attempts >= 1
    assert [d.reason for d in rest] == ["not sent: alert time budget spent"] * 2
    assert elapsed < budget + alerts.JOIN_GRACE_SECONDS + 2.0  # generous: not a speed test
    assert all(TOKEN not in d.describe() for d in [first, *rest])


def test_outbox_reasons_refused_and_http_status(hook):
    refused = alerts.AlertOutbox(_closed_port_url(), budget=10.0, retries=1, backoff=0.01)
    refused.add(_payload())
    [delivery] = refused.flush()
    assert (delivery.delivered, delivery.reason, delivery.attempts) == (
        False,
        "connection refused",
        2,
    )
    assert "connection refused (2 attempts" in delivery.describe()

    hook.statuses = [503, 503, 400]
    outbox = alerts.AlertOutbox(hook.url, budget=10.0, retries=1, backoff=0.01)
    outbox.add(_payload(asset="a"))
    outbox.add(_payload(asset="b"))
    a, b = outbox.flush()
    assert (a.reason, a.attempts, b.reason, b.attempts) == ("HTTP 503", 2, "HTTP 400", 1)


def test_outbox_stops_a_trickling_webhook_at_the_budget():
    """A server that answers one byte at a time never trips the per-read timeout; the delivery
    thread is still given up after the budget (plus the join grace)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            while not stop.wait(0.1):
                try:
                    conn.sendall(b"H")
                except OSError:
                    return

    threading.Thread(target=trickle, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/hook/{TOKEN}"
    outbox = alerts.AlertOutbox(url, budget=0.5, timeout=5.0, retries=0)
    outbox.add(_payload())
    try:
        [delivery] = outbox.flush()
    finally:
        stop.set()
        server.close()
    assert not delivery.delivered
    assert delivery.reason == "not delivered within the 0.5 s alert budget"


def test_outbox_without_webhook_only_logs(caplog):
    outbox = alerts.AlertOutbox(None)
    with caplog.at_level(logging.INFO, logger="curation.publish.alerts"):
        outbox.add(_payload())
        assert outbox.flush() == []
    assert "data-quality alert" in caplog.text
