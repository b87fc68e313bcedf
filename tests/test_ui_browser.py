"""The Dagster UI serves this code location: the asset graph and the release's freshness policy
render in headless Chromium.

Starts ``dagster-webserver -w workspace.yaml`` on a free loopback port with a temporary
DAGSTER_HOME, opens the global asset lineage with the validate/curate/publish groups expanded and
checks asset names are on screen. Needs Playwright (dev extra) and a Chromium binary: Debian's
``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) or
``$CHROMIUM_PATH``; skipped with a message otherwise. ``UPDATE_UI_SCREENSHOT=1`` also writes the
screenshot to ``docs/ui-asset-graph.png`` (otherwise it goes to the test's tmp dir only).
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
from pathlib import Path

import pytest

from tests.conftest import REPO

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)

GROUPS_SHOWN = ("validate", "curate", "publish")  # ingest (30 nodes) stays one collapsed box
SCREENSHOT = REPO / "docs" / "ui-asset-graph.png"


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


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[str]:
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    log = (home / "webserver.log").open("wb")
    binary = Path(sys.executable).with_name("dagster-webserver")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CURATED_STORE_URI": str(home / "store"),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    proc = subprocess.Popen(
        [str(binary), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the code server goes down with it
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited: {(home / 'webserver.log').read_text()}")
            try:
                if get(f"{base}/server_info") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver not serving after 180 s on {base}")
            time.sleep(0.5)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
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
    context = browser.new_context(viewport={"width": width, "height": height})
    # dismiss the "join the community" dialog shown on localhost
    context.add_init_script("window.localStorage.setItem('communityNux', '1')")
    return context.new_page()


def test_asset_graph_shows_the_pipeline(webserver: str, browser, tmp_path: Path):
    page = new_page(browser)
    expanded = ",".join(f"global@global:{group}" for group in GROUPS_SHOWN)
    page.goto(f"{webserver}/asset-groups?expanded={expanded}", wait_until="domcontentloaded")
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
    for group in ("ingest", *GROUPS_SHOWN):
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    page.wait_for_timeout(1000)  # let edges settle before the picture
    shot = tmp_path / "ui-asset-graph.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_UI_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)


def test_release_page_shows_freshness_policy_and_automation(webserver: str, browser):
    page = new_page(browser)
    page.goto(f"{webserver}/assets/release", wait_until="domcontentloaded")
    expect = sync_api.expect
    expect(
        page.get_by_text("Fails if more than 36 hours since last materialization").first
    ).to_be_visible(timeout=90_000)
    expect(page.get_by_text("full_refresh").first).to_be_visible()
    expect(page.get_by_text("publish", exact=True).first).to_be_visible()
