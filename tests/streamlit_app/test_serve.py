"""`workbench dashboard` as a user starts it: one-line errors for bad input, and the served
app in a real browser (Debian's chromium driven by playwright, a 1400 x 900 window) on a
database filled by real runs: every page no wider than the window, a ~300-token agent
prompt's heatmap wrapped, a non-converged IG flagged, a running run shown as running,
explain-step masses that add up, text that stays text, and no console errors. Screenshots
of each page land in $DASHBOARD_SCREENSHOTS when set (the README's docs/)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.streamlit_app.conftest import EXPLAINED_STEP, SCRIPT
from workbench.store import Store, explanations

WIDTH, HEIGHT = 1400, 900
# Opened at a page's own address, Streamlit's frontend looks for its server under that
# path first (`/episode/_stcore/health`, then `/_stcore/health`): the browser logs the
# first probe's 404. That is Streamlit finding its base URL, not a fault of a page.
BASE_PROBE = re.compile(r"404 \(Not Found\) \(http://[^/]+/[\w-]+/_stcore/(health|host-config)\)$")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def dashboard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", "dashboard", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_line_error(done: subprocess.CompletedProcess, fragment: str) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], done.stderr


def test_bad_database_and_port_are_one_line_errors(tmp_path):
    one_line_error(dashboard("--db", str(tmp_path / "missing.duckdb")), "no database at")
    assert not (tmp_path / "missing.duckdb").exists()  # never created by the dashboard
    junk = tmp_path / "notes.duckdb"
    junk.write_text("these are not the tables you are looking for" * 10)
    one_line_error(dashboard("--db", str(junk)), "is not a DuckDB database")
    db = tmp_path / "ok.duckdb"
    Store(db).migrate()
    one_line_error(dashboard("--db", str(db), "--port", "70000"), "out of range")
    one_line_error(dashboard("--db", str(db), "--port", "0"), "out of range")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_error(dashboard("--db", str(db), "--port", str(port)), "in use")


@pytest.fixture(scope="module")
def served(filled, tmp_path_factory):
    """`workbench dashboard` on the filled database, with Streamlit's script health check
    on; yields (url, its output file). Stopped (and reaped) afterwards."""
    port = free_port()
    log = tmp_path_factory.mktemp("dashboard") / "output.txt"
    env = {**os.environ, "STREAMLIT_SERVER_SCRIPT_HEALTH_CHECK_ENABLED": "true"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "dashboard", "--db", str(filled.path)]
            + ["--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.read() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"dashboard exited early: {log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail("dashboard did not answer within 90 s")
            time.sleep(0.5)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def listening_addresses(port: int) -> set[str]:
    """The local IPv4/IPv6 addresses (hex, as /proc/net/tcp* writes them) listening on a
    port."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def test_dashboard_serves_the_app_on_localhost_only(served, filled):
    url, log = served
    port = int(url.rsplit(":", 1)[1])
    # The app's script runs to the end on the filled database (HTTP 503 with the error
    # otherwise), as Streamlit's script health check reports it.
    with urllib.request.urlopen(f"{url}/_stcore/script-health-check", timeout=60) as reply:
        assert reply.status == 200 and reply.read() == b"ok"
    # It said where it serves which database, and listens on the loopback address only.
    assert f"dashboard on {url} for {filled.path.resolve()}" in log.read_text()
    if Path("/proc/net/tcp").exists():
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, not 0.0.0.0 or ::


@pytest.fixture(scope="module")
def browser(served):
    """Debian's chromium, headless, driven by playwright; one window of 1400 x 900 that
    records every console error and uncaught page error."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            problems: list[str] = []
            dialogs: list[str] = []
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text} ({m.location.get('url')})")
                    if m.type == "error"
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            yield page, problems, dialogs
        finally:
            browser.close()


def show(page, url: str, *expect: str) -> str:
    """Open `url` and return the page's text once the script has finished and every text in
    `expect` is on the page at the same time. A page re-runs on its own while a run is live,
    and a finished state can be seen before the first run has drawn, so the texts are polled
    together (playwright's wait_for_function, with a deadline) rather than read once."""
    page.goto(url, timeout=60_000)
    page.wait_for_function(
        """texts => document.querySelector('[data-testid="stApp"]')
            ?.getAttribute('data-test-script-state') === 'notRunning'
            && texts.every(t => document.body.innerText.includes(t))""",
        arg=list(expect),
        timeout=60_000,
    )
    return page.inner_text("body")


def settle(page) -> None:
    """Wait until the app's script is not running (charts and heatmaps are drawn)."""
    page.wait_for_function(
        "document.querySelector('[data-testid=\"stApp\"]')"
        "?.getAttribute('data-test-script-state') === 'notRunning'",
        timeout=60_000,
    )


def no_wider_than_the_window(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= WIDTH, f"the page is {width} px wide in a {WIDTH} px window"


def screenshot(page, name: str, folder: Path, top: str | None = None) -> None:
    """The window as a PNG (scrolled so that the text `top` is at its top); copied, reduced
    to a palette, into $DASHBOARD_SCREENSHOTS (the README's docs/) when that is set."""
    if top is not None:
        page.get_by_text(top).first.evaluate("e => e.scrollIntoView({block: 'start'})")
    shot = folder / f"dashboard-{name}.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    target = os.environ.get("DASHBOARD_SCREENSHOTS")
    if target:
        from PIL import Image

        with Image.open(shot) as image:
            small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
            small.save(Path(target) / shot.name, optimize=True)


def test_browser_pages_read_well_and_say_what_to_trust(served, browser, filled, tmp_path):
    url, _ = served
    page, problems, dialogs = browser
    store = Store(filled.path)

    # The overview has its own address, and a run that is running says so.
    running = "live-l1 (play) is running: 1 of 4 episodes"
    body = show(page, f"{url}/overview", "Runs overview", running)
    assert running in body
    no_wider_than_the_window(page)
    screenshot(page, "overview", tmp_path)

    # An agent step read step by step, with the tiny model's ranked candidates.
    why = ("margin over the runner-up", "game state at this step")
    body = show(page, f"{url}/episode?episode={filled.tiny_episode}&step=2", "Step 2 of 4", *why)
    assert all(text in body for text in why)
    no_wider_than_the_window(page)
    screenshot(page, "episode", tmp_path, top="Step 2 of 4")
    page.get_by_role("button", name="next step →").click()
    page.get_by_text("Step 3 of 4").first.wait_for(timeout=30_000)

    # The heatmap of a ~300-token agent prompt wraps like the prompt: in sections, no
    # wider than the window; and its IG, run with too few steps, is flagged.
    prompt = explanations.get_explanation(store, filled.step_explanation)
    assert len(prompt["input_tokens"]) >= 300
    body = show(
        page,
        f"{url}/explanations?explanation={filled.step_explanation}",
        "Token heatmap",
        "Not converged",
        "--steps auto",
    )
    assert "Not converged" in body and "--steps auto" in body
    heatmap = page.get_by_test_id("stHtml").filter(has_text="section totals").first
    box = heatmap.bounding_box()
    assert box["width"] <= WIDTH and box["height"] > 20 * 20  # many lines, not one long one
    no_wider_than_the_window(page)
    screenshot(page, "explanation", tmp_path, top="Token heatmap")

    # Explain this step adds up: the tips' masses plus the scaffold are the tips segment.
    body = show(
        page,
        f"{url}/explain-step?episode={filled.tiny_episode}&step={EXPLAINED_STEP}",
        "the tips' masses plus the scaffold make the tips segment",
        "Not converged",
    )
    parts = body.split("the tips' masses plus the scaffold make the tips segment: ")[1]
    left, right = parts.split()[0], parts.split()[2]
    assert left == right, parts[:60]
    assert "Not converged" in body
    no_wider_than_the_window(page)
    screenshot(page, "explain-step", tmp_path, top="Attribution by prompt segment")

    for name, path, expect, top in [
        ("compare", f"/compare?runs={filled.random_run},{filled.expert_run}", "B - A per game",
         "Paired test"),
        ("tips", f"/tips?tipset={filled.tipsets[1]}", "Diff of two sets", None),
        ("search", "/search?q=Open%20the%20fridge%20first", "tiny-llm-l1: episode", None),
        ("methods", f"/methods?comparison={filled.comparison}", "Heatmaps for target", None),
        ("probing", f"/probing?probe={filled.probe}", "Selectivity is zero or negative", None),
        ("patching", f"/patching?explanation={filled.patching}", "Restoration",
         "Restoration (0 = corrupted, 1 = clean)"),
        ("mistakes", f"/mistakes?run={filled.tiny_run}&episode={filled.tiny_episode}"
         f"&step={EXPLAINED_STEP}", "Attribution by prompt segment",
         "A mistake beside a correct decision of the same kind"),
    ]:  # fmt: skip
        show(page, url + path, expect)
        no_wider_than_the_window(page)
        screenshot(page, name, tmp_path, top=top)

    # HTML in game and LLM text arrives as text: visible, never executed.
    show(page, f"{url}/episode?episode={filled.script_episode}", "Step 0 of 1")
    observation = page.get_by_test_id("stText").filter(has_text=SCRIPT).first
    observation.wait_for(timeout=30_000)
    assert SCRIPT in observation.inner_text()
    assert page.evaluate("document.querySelectorAll('b').length") == 0
    assert dialogs == []
    assert [p for p in problems if not BASE_PROBE.search(p)] == []
