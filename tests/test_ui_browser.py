"""The Dagster UI as ``make dev`` serves it: the asset graph, the release's page, no first-visit
dialog, no warning at start; checked in headless Chromium.

Starts ``python -m pipelines.dev`` (what ``make dev`` runs: it prepares the Dagster home, then
becomes ``dagster dev``) on a free loopback port with a temporary, empty DAGSTER_HOME, opens the
global asset lineage with the groups expanded and checks the asset names are on screen in full.
Needs Playwright (dev extra) and a Chromium binary: Debian's ``/usr/bin/chromium`` (``apt-get
install chromium``; ``.ci/run`` installs it) or ``$CHROMIUM_PATH``; skipped with a message
otherwise. ``UPDATE_UI_SCREENSHOT=1`` also writes the screenshot to ``docs/ui-asset-graph.png``
(otherwise it goes to the test's tmp dir only).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from assets.keys import file_label, ingest_asset_key
from curation.ingest.sources import all_files
from tests.conftest import REPO

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)

GROUPS_SHOWN = ("validate", "curate", "publish")
SCREENSHOT = REPO / "docs" / "ui-asset-graph.png"
COMMUNITY_DIALOG = "Join the Dagster community"


def chromium_path() -> str | None:
    candidates = [os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium"]
    candidates += [shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    with opener.open(url, timeout=timeout) as response:
        return response.status


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found: apt-get install chromium (or set CHROMIUM_PATH)")
    return path


@dataclass
class Dev:
    """The running ``make dev``: its URL, Dagster home and log."""

    url: str
    home: Path
    log: Path


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[Dev]:
    home = tmp_path_factory.mktemp("dagster_home")  # empty: pipelines.dev prepares it
    port = free_port()
    log_path = home.parent / f"{home.name}-dev.log"
    log = log_path.open("wb")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CURATED_STORE_URI": str(home.parent / f"{home.name}-store"),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: webserver, daemon and code server
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"make dev (pipelines.dev) exited: {log_path.read_text()}")
            try:
                if get(f"{base}/server_info") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster dev not serving after 180 s on {base}")
            time.sleep(0.5)
        yield Dev(url=base, home=home, log=log_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:  # dagster dev does not stop on SIGTERM within 30 s: no use waiting long
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(chromium: str):
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox"]
        )
        try:
            yield instance
        finally:
            instance.close()


def new_page(browser, width: int = 1600, height: int = 1000):
    """A fresh browser context: no local storage, as on a first visit."""
    context = browser.new_context(viewport={"width": width, "height": height})
    return context.new_page()


def test_asset_graph_shows_the_pipeline_grouped_by_dataset(dev: Dev, browser, tmp_path: Path):
    page = new_page(browser)
    groups = ["ingest", *GROUPS_SHOWN]  # ingest shows its two datasets, collapsed
    expanded = ",".join(f"global@global:{group}" for group in groups)
    page.goto(f"{dev.url}/asset-groups?expanded={expanded}", wait_until="domcontentloaded")
    expect = sync_api.expect
    expect(page.get_by_text("normalized_pairs", exact=True).first).to_be_visible(timeout=90_000)
    page.get_by_text("Hide navigation").click()
    # zoom out one notch so the whole graph fits (ctrl + wheel zooms the lineage view)
    page.mouse.move(800, 500)
    page.keyboard.down("Control")
    page.mouse.wheel(0, 100)
    page.keyboard.up("Control")
    for name in ("release", "curated_pairs", "deduplicated_pairs", "normalized_pairs"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=30_000)
    for group in ("hh_rlhf", "pku_saferlhf", *GROUPS_SHOWN):  # the datasets, each in its box
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    page.wait_for_timeout(1000)  # let edges settle before the picture
    shot = tmp_path / "ui-asset-graph.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_UI_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)


def test_the_longest_file_name_reads_in_full_in_the_graph(dev: Dev, browser):
    """``helpful_rejection_sampled_train``, 31 characters: the upstream file and its ingested
    table both show it uncut (the old ``upstream_hh_rlhf__helpful_rejection_sampled__train``
    showed as ``upstream_hh_rlhf__helpfu…_train``)."""
    longest = max(all_files(), key=lambda source: len(file_label(source)))
    key = ingest_asset_key(longest).to_user_string()
    page = new_page(browser)
    page.goto(f"{dev.url}/assets/{key}?view=lineage", wait_until="domcontentloaded")
    label = page.get_by_text(file_label(longest), exact=True)
    sync_api.expect(label).to_have_count(2, timeout=90_000)  # upstream file and ingested table


def test_release_page_shows_freshness_policy_automation_and_its_check(dev: Dev, browser):
    page = new_page(browser)
    page.goto(f"{dev.url}/assets/release", wait_until="domcontentloaded")
    expect = sync_api.expect
    expect(
        page.get_by_text("Fails if more than 36 hours since last materialization").first
    ).to_be_visible(timeout=90_000)
    expect(page.get_by_text("full_refresh").first).to_be_visible()
    expect(page.get_by_text("publish", exact=True).first).to_be_visible()
    # the description links to the checks that gate publishing
    link = page.get_by_role("link", name="curated_pairs", exact=True).first
    expect(link).to_have_attribute("href", "/assets/curated_pairs?view=checks")
    page.goto(f"{dev.url}/assets/release?view=checks", wait_until="domcontentloaded")
    expect(page.get_by_text("release_verified").first).to_be_visible(timeout=60_000)


def test_first_visit_shows_no_community_dialog(dev: Dev, browser):
    page = new_page(browser)  # nothing in local storage: what a new user's browser has
    page.goto(f"{dev.url}/asset-groups", wait_until="domcontentloaded")
    sync_api.expect(page.get_by_text("Reload definitions").first).to_be_visible(timeout=90_000)
    page.wait_for_timeout(3000)  # the dialog opens one second after the page
    assert page.get_by_text(COMMUNITY_DIALOG).count() == 0
    settings = yaml.safe_load((dev.home / "dagster.yaml").read_text())
    assert settings["nux"] == {"enabled": False} and settings["telemetry"] == {"enabled": False}


def test_make_dev_starts_without_a_warning(dev: Dev):
    log = dev.log.read_text()
    assert "Serving dagster-webserver" in log
    assert "SupersessionWarning" not in log and "dg dev" not in log, log[:2000]
