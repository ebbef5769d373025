"""Notebook 06's inspector in a real browser: JupyterLab, headless Chromium, Playwright.

The test serves a temporary copy of ``notebooks/`` with JupyterLab on 127.0.0.1 (a free
port, a random token, ``CHH_PROFILE=smoke``), opens notebook 06 in Debian's Chromium
(Playwright cannot download its own browser offline), runs all cells from the Run menu,
then changes the inspector's landmark and temperature and checks that the ERE it shows
and its figure change each time. A screenshot lands in ``runs/browser/inspector.png``.
The notebook's phantom and run directory are rewritten into the temporary folder, and so
are Jupyter's, IPython's, matplotlib's and Chromium's own files; the server is always stopped.

It skips, saying why, when Playwright or Chromium is missing; ``.ci/run`` installs both.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "06_heatmap_inspector.ipynb"
SCREENSHOT = ROOT / "runs" / "browser" / "inspector.png"
#: Where Debian puts its chromium; ``$CHROMIUM`` names another binary.
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
#: The flags the CI machine needs: root (no sandbox), no GPU, no traffic to the closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
SERVER_START_S = 60
#: The kernel starts in a few seconds; the bound is for a loaded CI machine.
KERNEL_START_MS = 120_000
#: Run All under smoke took 8 to 12 s on 2 shared cores (a two-epoch training included).
RUN_ALL_S = 300
#: One redraw takes well under a second; the bound only turns a lost message into a failure.
REDRAW_MS = 60_000


def _chromium() -> str | None:
    candidates = [os.environ.get("CHROMIUM", ""), *CHROMIUM_PATHS, shutil.which("chromium") or ""]
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


@dataclass(frozen=True)
class Server:
    """A running JupyterLab: its base URL, token, log file and the notebook's folders."""

    url: str
    token: str
    log: Path
    run_dir: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _private_env(base: Path) -> dict[str, str]:
    """The environment with every per-user folder (Jupyter, IPython, matplotlib, XDG, temp) under ``base``."""
    folders = {name: base / name.lower() for name in (
        "HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR", "JUPYTER_CONFIG_DIR",
        "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR",
        "IPYTHONDIR", "MPLCONFIGDIR", "TMPDIR")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    folders["XDG_RUNTIME_DIR"].chmod(0o700)
    env = {**os.environ, **{name: str(folder) for name, folder in folders.items()}}
    env.pop("JUPYTER_PATH", None)
    return env


def _quiet_lab_settings(settings_dir: Path) -> None:
    """No news and no update check: they would only add a notification toast to the screenshot."""
    notification = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text('{"fetchNews": "false", "checkForUpdates": false}', encoding="utf-8")


def _notebook_copy(base: Path) -> tuple[Path, Path]:
    """Copy ``notebooks/`` to ``base`` with notebook 06's phantom and run directory inside ``base``."""
    folder = base / "notebooks"
    shutil.copytree(ROOT / "notebooks", folder, ignore=shutil.ignore_patterns("src", "*.py", ".ipynb_checkpoints"))
    data_dir, run_dir = base / "phantom_smoke", base / "run"
    path = folder / NOTEBOOK
    notebook = nbformat.read(path, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    source = re.sub(r"(?m)^data_dir = None\b.*$", f"data_dir = {str(data_dir)!r}", cell.source)
    source = re.sub(r"(?m)^run_dir = None\b.*$", f"run_dir = {str(run_dir)!r}", source)
    assert source.count(str(base)) == 2, "notebook 06's parameter cell no longer sets data_dir and run_dir to None"
    cell.source = source
    nbformat.write(notebook, path)
    return folder, run_dir


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (the server shuts its kernels down), then SIGKILL to the whole process group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=20)


def _wait_until_up(process: subprocess.Popen, url: str, token: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def lab(tmp_path) -> Iterator[Server]:
    """JupyterLab serving a copy of the notebooks on 127.0.0.1, stopped whatever happens."""
    folder, run_dir = _notebook_copy(tmp_path)
    env = _private_env(tmp_path / "user")
    _quiet_lab_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
    env["CHH_PROFILE"] = "smoke"
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={folder}", "--ServerApp.allow_root=True", "--LabApp.news_url=None"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(process, url, token, log)
        yield Server(url, token, log, run_dir)
    finally:
        _stop(process)


@pytest.fixture
def browser_page(tmp_path, monkeypatch):
    """A Chromium page (1400 x 1400) driven by Playwright; skips when either is missing."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]' installs it")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium could not be installed: no chromium at /usr/bin/chromium, $CHROMIUM or on PATH "
                    "(.ci/run installs Debian's package with apt-get; run 'apt-get install -y chromium')")
    env = _private_env(tmp_path / "browser")
    # Playwright's temporary profile and Chromium's singleton socket: a short path, since a
    # Unix socket's path is limited to 107 bytes and tmp_path can be longer.
    scratch = Path(tempfile.mkdtemp(prefix="chh-browser-"))
    env["TMPDIR"] = str(scratch)
    monkeypatch.setenv("TMPDIR", str(scratch))
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, env=env,
                                                 timeout=60_000)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1400})
                page.set_default_timeout(REDRAW_MS)
                yield page
            finally:
                browser.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_all(page, lab: Server) -> None:
    """Wait for the kernel, Run > Run All Cells, and wait for the last cell (or a traceback)."""
    from playwright.sync_api import expect

    expect(page.locator("#jp-main-statusbar")).to_contain_text("| Idle", timeout=KERNEL_START_MS)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    traceback = page.locator(".jp-OutputArea-output").filter(has_text="Traceback (most recent call last)")
    done = page.locator(".jp-OutputArea-output").filter(has_text=re.compile(r"^wrote .*metrics\.json"))
    expect(done.or_(traceback).first).to_be_attached(timeout=RUN_ALL_S * 1000)
    assert traceback.count() == 0, f"a cell of notebook 06 failed in the browser:\n{traceback.first.inner_text()}"
    assert (lab.run_dir / "06_heatmap_inspector" / "metrics.json").is_file()


def _changes(ere, figure, action) -> tuple[str, float]:
    """Do ``action``; wait until the ERE text and the figure both differ. Returns the new ERE text and the delay (s)."""
    from playwright.sync_api import expect

    ere_before, png_before = ere.inner_text(), figure.get_attribute("src")
    started = time.perf_counter()
    action()
    expect(ere).not_to_have_text(ere_before, timeout=REDRAW_MS)
    expect(figure).not_to_have_attribute("src", png_before, timeout=REDRAW_MS)
    return ere.inner_text(), time.perf_counter() - started


def test_inspector_updates_in_the_browser(browser_page, lab):
    """Run All, then the landmark and the temperature each change the ERE shown and the figure."""
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}", wait_until="domcontentloaded")
    try:
        _run_all(page, lab)
        # The first of the notebook's three inspectors (each is a VBox holding a dropdown).
        inspector = page.locator(".widget-vbox").filter(has=page.locator(".widget-dropdown")).first
        inspector.scroll_into_view_if_needed()
        ere = inspector.locator("tr:has(td:text-is('ERE')) td").nth(1)
        figure = inspector.locator(".widget-output img")
        temperature = inspector.locator(".widget-slider").filter(
            has=page.locator("label.widget-label", has_text=re.compile(r"^T$"))).locator(".widget-readout")
        expect(ere).to_have_text(re.compile(r"^\d+\.\d\d mm$"))
        expect(figure).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
        landmark = inspector.locator(".widget-dropdown select")
        assert landmark.input_value().startswith("Go "), "the inspector does not start on gonion"

        shown, delay = _changes(ere, figure, lambda: landmark.select_option(label="S · sella"))
        expect(inspector.locator(".widget-html-content b").filter(has_text="· sella").first).to_be_visible()
        print(f"landmark Go -> S: ERE {shown}, redrawn in {delay:.2f} s")

        fitted = float(temperature.inner_text())
        new_temperature = f"{min(4 * fitted, 30):.3g}"

        def set_temperature() -> None:
            temperature.click()
            page.keyboard.press("Control+A")
            page.keyboard.type(new_temperature)
            page.keyboard.press("Enter")

        shown, delay = _changes(ere, figure, set_temperature)
        expect(inspector.locator("tr:has(td:text-is('temperature T')) td").nth(1)).to_contain_text(
            f"{float(new_temperature):.3g} (fitted {fitted:.3g})")
        print(f"T {fitted:.3g} -> {new_temperature}: ERE {shown}, redrawn in {delay:.2f} s")
    finally:
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
