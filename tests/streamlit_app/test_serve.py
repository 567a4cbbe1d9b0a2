"""`workbench dashboard` as a user starts it: one-line errors for bad input, and the served
app in a real browser (Debian's chromium driven by playwright) showing an episode's steps."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.streamlit_app.conftest import SCRIPT
from workbench.store import Store
from workbench.store import play as play_store

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


def test_browser_shows_an_episode_step_by_step(served, filled, tmp_path):
    url, _ = served
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    store = Store(filled.path)
    episode = next(e for e in play_store.list_episodes(store, filled.random_run) if e["moves"] >= 3)
    actions = [s["action"] for s in play_store.get_steps(store, episode["id"])]
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{url}/episode?episode={episode['id']}", timeout=60_000)
            page.get_by_text("step 0 ·").first.wait_for(timeout=60_000)
            page.get_by_text("step 0 ·").first.click()  # open the first step
            page.get_by_text("admissible commands", exact=True).first.wait_for(
                state="attached", timeout=30_000
            )
            body = page.inner_text("body")
            assert "Steps" in body and "Tips in force" in body
            assert f"step {len(actions) - 1} ·" in body
            assert actions[0] in body
            shot = tmp_path / "episode.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
            if os.environ.get("DASHBOARD_SCREENSHOT"):
                shutil.copy(shot, Path(os.environ["DASHBOARD_SCREENSHOT"]))

            # HTML in game and LLM text arrives as text: visible, never executed.
            page.goto(f"{url}/episode?episode={filled.script_episode}", timeout=60_000)
            page.get_by_text("step 0 ·").first.click()
            observation = page.get_by_test_id("stText").filter(has_text=SCRIPT).first
            observation.wait_for(timeout=30_000)
            assert SCRIPT in observation.inner_text()
            assert page.evaluate("document.querySelectorAll('b').length") == 0
        finally:
            browser.close()
    assert dialogs == []
