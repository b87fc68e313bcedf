"""Shared fixtures: a real S3 endpoint (moto's threaded server on loopback), stores on both
backends, free ports, fast chart rendering and sample paths."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import boto3
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return _free_port()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 for the whole session and yield its URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment pointing AWS clients (boto3, s3fs) at the moto endpoint with fake credentials."""
    env = {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def s3_client(s3_env: dict[str, str]):
    """A boto3 S3 client for the moto endpoint."""
    return boto3.client(
        "s3",
        endpoint_url=s3_env["AWS_ENDPOINT_URL"],
        aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
        region_name=s3_env["AWS_DEFAULT_REGION"],
    )


@pytest.fixture
def s3_bucket(s3_client) -> str:
    """A fresh, empty bucket on the moto server; yields its name."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh empty store: a local folder, or a prefix in a fresh moto bucket."""
    from curation.core.store import Store

    if request.param == "local":
        return Store(tmp_path / "store")
    return Store(f"s3://{request.getfixturevalue('s3_bucket')}/curated")


@pytest.fixture
def declare_acme() -> Iterator[Callable[..., None]]:
    """Register ``acme-prefs``, a TRL dataset as a settings file would declare it (its root and
    dimension may be given again), and leave the registry with the built-in datasets after."""
    from curation.datasets import use_declared
    from curation.datasets.declared import Declaration

    def declare(root: str = ".", dimension: str = "preference") -> None:
        splits = (("train", "train.jsonl"), ("test", "test.jsonl"))
        use_declared([Declaration("acme-prefs", str(root), splits, "MIT", dimension=dimension)])

    declare()
    yield declare
    use_declared([])


@pytest.fixture
def fast_charts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering a chart costs ~0.3 s of CPU: a fixed placeholder PNG instead (still
    deterministic, so the publishing protocol is unaffected)."""
    from curation.publish import card, card_changes

    for module in (card, card_changes):
        monkeypatch.setattr(module, "png", lambda fig: b"\x89PNG\r\n\x1a\nplaceholder")


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A local HTTP webhook on 127.0.0.1; yields (URL with a fake token, received JSON bodies)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/secret-token", received
    server.shutdown()


#: Test files that take minutes (real daemons, several CLI processes, many materializations),
#: longest first. ``make test`` hands whole files to two pytest-xdist workers in collection
#: order (``--no-loadscope-reorder``: xdist would otherwise order files by their number of
#: tests); starting these first keeps one long file from running alone at the end (longest
#: processing time first: the suite ends close to half its total work, not at half plus the
#: last long file).
LONGEST_FIRST = (
    "test_postgres_deploy.py",
    "test_concurrent_runs.py",
    "test_stage_io.py",
    "test_automation.py",
    "test_trust_across_runs.py",
    "test_release_drift.py",
    "test_run_errors.py",
    "test_credentials_e2e.py",
    "test_matching_real.py",
    "test_cli_e2e.py",
    "test_alert_budget.py",
    "test_source_presence.py",
    "test_pipeline.py",
    "test_ui_browser.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the long files of :data:`LONGEST_FIRST` first, in that order (a stable sort:
    the order of tests within a file, and of the other files, is unchanged)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
