"""The notebooks in a real browser: headless Chromium, driven by Selenium, against JupyterLab started by
`make lab` (on a free loopback port, with a token), as a user opens them from the file browser.

    .venv/bin/python -m pytest -q tests/test_notebooks_browser.py     # 5 minutes on 2 busy CPU cores

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them with apt); without them the tests
skip and say so. Screenshots land in each test's tmp folder (`pytest --basetemp DIR` keeps them in DIR).
JupyterLab's autosave is turned off and the stored notebooks are checked unchanged afterwards: typing into the
parameters cell must never write outputs into the repository.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("selenium", reason="selenium is in the dev extra: pip install -e '.[dev]'")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

pytestmark = pytest.mark.slow  # trains the tiny model: 2 to 3 minutes each on 2 busy cores

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
JUPYTER = Path(sys.executable).with_name("jupyter")
# JupyterLab settings for the test's session only (JUPYTERLAB_SETTINGS_DIR): never save into the repository;
# every cell in the page (no windowing), so the page can be read in one pass; no news prompt in the screenshots.
SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
}
# Seconds: a notebook's Run All with the smoke config (the tiny model, 8 steps: under a minute on 2 idle
# cores), with room for cores other work holds.
RUN_ALL_TIMEOUT = 900
# Seconds for JupyterLab, a page or a kernel to start (5 to 20 s on 2 idle cores).
START_TIMEOUT = 300


def _skip_reason() -> str | None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return (
            "Chromium is not installed (need `chromium` and `chromedriver` on PATH: "
            "apt-get install chromium chromium-driver, as .ci/run does)"
        )
    if not JUPYTER.is_file():
        return f"{JUPYTER}: JupyterLab is not installed (the notebooks extra: pip install -e '.[notebooks]')"
    if shutil.which("make") is None:
        return "GNU make is not installed (the test starts JupyterLab with `make lab`)"
    return None


if _skip_reason():
    pytest.skip(_skip_reason(), allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - our own server on 127.0.0.1
        return r.read()


class Lab:
    def __init__(self, url: str, token: str, proc: subprocess.Popen, log: Path):
        self.url, self.token, self.proc, self.log = url, token, proc, log

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.url}{path}", method=method)
        req.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
            body = r.read()
        return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`make lab` on a free port, its token from JUPYTER_TOKEN, the worktree's code in the kernel, autosave off."""
    tmp = tmp_path_factory.mktemp("lab")
    for plugin, values in SETTINGS.items():
        path = tmp / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,
        # The kernel imports this checkout's toolcall_kit, whatever is installed in the venv.
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "TOOLCALL_KIT_NO_PROGRESS": "1",
    }
    log = tmp / "lab.log"
    # make's own command line, with this interpreter's folder for BIN and no install step (STAMP empty).
    cmd = ["make", "-s", "-C", str(ROOT), "lab", f"LAB_PORT={port}", f"BIN={JUPYTER.parent}", "STAMP="]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Lab(f"http://127.0.0.1:{port}", token, proc, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"make lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                server.api("/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not answer on port {port} in {START_TIMEOUT} s:\n{log.read_text()[-3000:]}"
                    )
                time.sleep(0.5)
        # Without the token the server refuses: `make lab` never serves token-less.
        with pytest.raises(urllib.error.HTTPError) as denied:
            _get(f"{server.url}/api/contents/notebooks")
        assert denied.value.code == 403
        yield server
    finally:
        try:
            for k in server.api("/api/kernels") or []:
                server.api(f"/api/kernels/{k['id']}", method="DELETE")
        except OSError:
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # make and the jupyter it started: one process group, ours
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def browser(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=opts)
    except WebDriverException as e:
        pytest.fail(f"Chromium is installed but did not start: {e.msg}")
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def jupyter(lab, browser):
    """The server and a browser; the test's kernels are shut down after it (they hold a model each)."""
    yield lab, browser
    for k in lab.api("/api/kernels") or []:
        lab.api(f"/api/kernels/{k['id']}", method="DELETE")


@pytest.fixture
def stored_notebooks_unchanged():
    """The stored notebooks are byte for byte as before; the checkpoints JupyterLab makes on opening a notebook
    (notebooks/.ipynb_checkpoints/, git-ignored) are removed again if the test made them."""
    before = {p: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")}
    checkpoints = ROOT / "notebooks" / ".ipynb_checkpoints"
    had = set(checkpoints.iterdir()) if checkpoints.is_dir() else None
    yield
    for path in set(checkpoints.iterdir() if checkpoints.is_dir() else ()) - (had or set()):
        path.unlink()
    if had is None and checkpoints.is_dir():
        checkpoints.rmdir()
    changed = [p.name for p, data in before.items() if p.read_bytes() != data]
    assert not changed, f"the browser session wrote into the stored notebooks: {changed}"


# ------------------------------------------------------------------------------------------ driving JupyterLab


def _wait(what: str, fn, timeout: float, driver=None, shot: Path | None = None, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fn()
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            if driver is not None and shot is not None:
                driver.save_screenshot(str(shot))
            pytest.fail(
                f"timed out after {timeout:.0f} s waiting for {what}"
                + (f" (screenshot {shot})" if shot else "")
            )
        time.sleep(every)


# One round trip per look at the page: each cell's source, prompt and images, and the error outputs.
PAGE_STATE = """
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
if (!panel) return null;
const text = (el) => (el ? el.textContent : '') || '';
return {
  cells: [...panel.querySelectorAll('.jp-Notebook .jp-Cell')].map((c) => ({
    source: text(c.querySelector('.cm-content')),
    prompt: text(c.querySelector('.jp-InputPrompt')).trim(),
    widget_images: c.querySelectorAll('.widget-output img').length,
    widget_src: ((c.querySelector('.widget-output img') || {}).src || '').slice(-64),
    images: c.querySelectorAll('.jp-OutputArea-output img').length,
    output: text(c.querySelector('.jp-Cell-outputArea')),
  })),
  errors: [...panel.querySelectorAll("[data-mime-type='application/vnd.jupyter.error']")].map(
    (e) => e.textContent.slice(-1500)),
};
"""


def page(driver) -> dict:
    return driver.execute_script(PAGE_STATE) or {"cells": [], "errors": []}


def cell(state: dict, text: str) -> dict | None:
    return next((c for c in state["cells"] if text in c["source"]), None)


def ran(c: dict | None) -> bool:
    return c is not None and any(ch.isdigit() for ch in c["prompt"])


def finished(driver, last_cell_text: str) -> dict | None:
    """The page once the last cell ran (its prompt holds a number) or a cell failed, else None."""
    state = page(driver)
    return state if state["errors"] or ran(cell(state, last_cell_text)) else None


def open_notebook(driver, lab: Lab, name: str, shots: Path):
    """Open notebooks/NAME as the file browser does; its kernel (python3) starts in notebooks/. A workspace of
    the test's own: nothing an earlier test opened is restored beside it."""
    driver.get(f"{lab.url}/lab/workspaces/{shots.name}/tree/notebooks/{name}?token={lab.token}")
    _wait(
        f"{name} to open",
        lambda: cell(page(driver), "pipeline.write_stage("),
        START_TIMEOUT,
        driver,
        shots / "open-timeout.png",
    )

    def idle():
        kernels = lab.api("/api/kernels")
        return kernels and all(k["execution_state"] == "idle" for k in kernels)

    _wait("the kernel to start", idle, START_TIMEOUT, driver, shots / "kernel-timeout.png", every=1)
    panels = driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel")
    assert len(panels) == 1, f"{len(panels)} notebooks open: the page reader expects one"


def screenshot(driver, path: Path, cell_text: str) -> None:
    """A screenshot with the outputs of the cell whose source holds `cell_text` in view."""
    driver.execute_script(
        """const c = [...document.querySelectorAll('.jp-Notebook .jp-Cell')].find(
             (c) => (c.querySelector('.cm-content') || {}).textContent?.includes(arguments[0]));
           const out = c && (c.querySelector('.jp-Cell-outputArea img') || c.querySelector('.jp-Cell-outputArea'));
           if (out) out.scrollIntoView({block: 'center'});""",
        cell_text,
    )
    driver.save_screenshot(str(path))


def set_parameters(driver, text: str):
    """Replace the parameters cell's text by typing, as a user does."""
    editor = next(
        e
        for e in driver.find_elements(
            By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content"
        )
        if 'config = "configs/' in (e.get_attribute("textContent") or "")
    )
    editor.click()
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(Keys.DELETE)
    for line in text.strip().splitlines():
        editor.send_keys(line)
        editor.send_keys(Keys.ENTER)
        editor.send_keys(Keys.HOME)  # undo any auto-indent
    got = editor.get_attribute("textContent")
    for line in text.strip().splitlines():
        assert line in got, f"the parameters cell reads {got!r} after typing {line!r}"
    editor.send_keys(Keys.ESCAPE)


def run_all(driver):
    driver.find_element(By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']").click()
    _wait(
        "the Run menu",
        lambda: driver.find_elements(
            By.XPATH, "//div[contains(@class,'lm-Menu-itemLabel') and text()='Run All Cells']"
        ),
        10,
    )[0].click()


# ------------------------------------------------------------------------------------------ the tests


def test_train_notebook_in_jupyterlab_shows_the_live_loss_curve(
    jupyter, tmp_path, stored_notebooks_unchanged
):
    """03_train.ipynb as opened from the file browser (kernel in notebooks/), smoke config, Run All."""
    (lab, driver), runs = jupyter, tmp_path / "runs"
    open_notebook(driver, lab, "03_train.ipynb", tmp_path)
    set_parameters(driver, f'config = "configs/smoke.yaml"\noverrides = {{"output.dir": "{runs}"}}')
    driver.save_screenshot(str(tmp_path / "03-before-run.png"))
    run_all(driver)

    frames = set()  # the loss widget's images seen while the training cell still runs (redrawn in place)
    deadline = time.monotonic() + RUN_ALL_TIMEOUT
    while True:
        state = page(driver)
        train = cell(state, "pipeline.train_stage(cfg)")
        if train and train["prompt"] == "[*]:" and train["widget_src"] and train["widget_src"] not in frames:
            frames.add(train["widget_src"])
            screenshot(
                driver, tmp_path / f"03-training-live-curve-{len(frames)}.png", "pipeline.train_stage(cfg)"
            )
        if state["errors"] or ran(cell(state, 'pipeline.write_stage(cfg, "train", result)')):
            break
        if time.monotonic() > deadline:
            driver.save_screenshot(str(tmp_path / "03-timeout.png"))
            pytest.fail(f"Run All did not finish in {RUN_ALL_TIMEOUT} s (screenshot in {tmp_path})")
        time.sleep(0.5)
    screenshot(driver, tmp_path / "03-finished.png", "explore.loss_plot(cfg)")
    assert not state["errors"], f"a cell failed:\n{state['errors'][0]}"
    assert frames, "the loss widget showed no image while the training cell ran"
    train = cell(state, "pipeline.train_stage(cfg)")
    assert train["widget_images"] == 1, "the live curve is redrawn in place: one image in the widget"

    result = json.loads((runs / "smoke" / "stages" / "03_train.json").read_text())
    assert result["status"] == "completed" and result["steps"] == result["max_steps"]
    # The final curve as an image output, outside the widget (what a saved notebook keeps), then the health.
    shown = cell(state, "explore.loss_plot(cfg)")
    assert shown["images"] == 1 and not shown["widget_images"], "the final loss plot is not an image output"
    assert "peak RSS" in shown["output"] and "warnings" in shown["output"]


def test_evaluate_notebook_in_jupyterlab_lists_failed_cases(jupyter, tmp_path, stored_notebooks_unchanged):
    """05_evaluate.ipynb after a headless smoke pipeline: plots shown, failed-cases table filterable by reason."""
    (lab, driver), runs = jupyter, tmp_path / "runs"
    overrides = {"output.dir": str(runs), "train.max_steps": 2, "train.eval_steps": 2, "train.save_steps": 2}
    code = (
        "from toolcall_kit.pipeline import run_all; "
        f"run_all('configs/smoke.yaml', {overrides!r}, stages=('prepare', 'train', 'merge'))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOOLCALL_KIT_NO_PROGRESS": "1"}
    subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, timeout=600
    )

    open_notebook(driver, lab, "05_evaluate.ipynb", tmp_path)
    set_parameters(
        driver,
        f'config = "configs/smoke.yaml"\noverrides = {json.dumps(overrides)}\neval_limit = 6\nbase = False',
    )
    run_all(driver)
    state = _wait(
        "Run All to finish",
        lambda: finished(driver, 'pipeline.write_stage(cfg, "evaluate", result)'),
        RUN_ALL_TIMEOUT,
        driver,
        tmp_path / "05-timeout.png",
        every=1,
    )
    screenshot(driver, tmp_path / "05-plots.png", "explore.eval_plots(cfg)")
    assert not state["errors"], f"a cell failed:\n{state['errors'][0]}"
    assert cell(state, "explore.eval_plots(cfg)")["images"] == 2, (
        "the confusion and per-tool plots are not shown"
    )
    view = _wait(
        "the failed-cases table",
        lambda: driver.find_elements(By.CSS_SELECTOR, ".toolcall-kit-failed-cases-view"),
        30,
        driver,
        tmp_path / "05-no-table.png",
    )[0]
    failed = [
        json.loads(line) for line in (runs / "smoke" / "eval" / "predictions.jsonl").read_text().splitlines()
    ]
    failed = [p for p in failed if not p["correct"]]
    assert failed, "the 2-step tiny model got every case right: nothing to filter"
    rows = view.find_elements(By.CSS_SELECTOR, "table.toolcall-kit-failed-cases tbody tr")
    assert len(rows) == len(failed)
    headers = [
        th.get_attribute("textContent") for th in view.find_elements(By.CSS_SELECTOR, "table thead th")
    ]
    assert headers == ["id", "request", "raw output", "expected", "reason"]

    # Filter by the rarest reason: only its rows remain.
    reason = min({p["reason"] for p in failed}, key=lambda r: sum(p["reason"] == r for p in failed))
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", view)
    driver.save_screenshot(str(tmp_path / "05-failed-cases.png"))
    choose = Select(view.find_element(By.CSS_SELECTOR, "select"))
    choose.select_by_visible_text(f"{reason} ({sum(p['reason'] == reason for p in failed)})")

    def filtered():
        shown = view.find_elements(By.CSS_SELECTOR, "table.toolcall-kit-failed-cases tbody tr")
        return shown if len(shown) == sum(p["reason"] == reason for p in failed) else None

    shown = _wait(
        f"the table filtered to {reason!r}", filtered, 20, driver, tmp_path / "05-filter-timeout.png"
    )
    assert all(reason in r.find_elements(By.TAG_NAME, "td")[-1].get_attribute("textContent") for r in shown)
    driver.save_screenshot(str(tmp_path / "05-filtered.png"))
