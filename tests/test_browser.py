"""The lessons in a real browser: JupyterLab + headless Chromium, driven by Playwright.

Starts JupyterLab on 127.0.0.1 (with a token) serving a temporary copy of notebooks/, opens lesson
01 and lesson 03, runs all cells, clicks the garage's buttons and moves sliders, and checks that
the page changed. Screenshots go to tests/artifacts/. Needs Debian's ``chromium`` (``make
chromium`` installs it as root) and the ``playwright`` Python package; never downloads a browser.
Skipped where Chromium is missing, except in CI (CI=true), where it must run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOW_TO_ENABLE = ("the browser test needs Chromium: install Debian's package (`sudo apt-get install "
                 "chromium`, or `make chromium` as root) and `pip install playwright`; it never "
                 "downloads a browser (no `playwright install`)")

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = _find_chromium()
    if path is None and IN_CI and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                       "apt-get install -y -qq chromium", shell=True, check=False)
        path = _find_chromium()
    if path is None:
        if IN_CI:
            pytest.fail("CI=true but Chromium is missing and could not be installed: " + HOW_TO_ENABLE)
        pytest.skip(HOW_TO_ENABLE)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a copy of notebooks/: (base url, token). Stopped by process group."""
    if importlib.util.find_spec("jupyterlab") is None:
        if IN_CI:
            pytest.fail("CI=true but JupyterLab is missing: install pagedlab[lab]")
        pytest.skip("the browser test needs JupyterLab: pip install 'pagedlab[lab]'")
    tmp = tmp_path_factory.mktemp("lab")
    served = tmp / "notebooks"
    shutil.copytree(ROOT / "notebooks", served, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = tmp / "settings"
    for plugin, values in {
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                        "checkForUpdates": False},
    }.items():
        target = settings / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    port, token = _free_port(), uuid.uuid4().hex
    command = [sys.executable, "-m", "jupyterlab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={served}",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp / 'ws'}",
               f"--FileCheckpoints.checkpoint_dir={tmp / 'checkpoints'}",
               "--LabApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = open(tmp / "lab.log", "wb")
    env = dict(os.environ, MPLBACKEND="Agg", PAGEDLAB_PROGRESS="1")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=served, env=env,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (tmp / "lab.log").read_text()[-3000:])
                time.sleep(0.3)
        yield base, token
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait(timeout=5)
        log.close()


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    try:
        from playwright import sync_api
    except ImportError:
        if IN_CI:
            pytest.fail("CI=true but the playwright package is missing: " + HOW_TO_ENABLE)
        pytest.skip(HOW_TO_ENABLE)
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium,
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(60_000)
        yield context
        context.close()


def in_panel(body: str) -> str:
    """A JS predicate over the notebook panel on screen (hidden tabs stay in the page too)."""
    return ("() => { const panel = [...document.querySelectorAll('.jp-NotebookPanel')]"
            ".find(p => !p.classList.contains('lm-mod-hidden')); if (!panel) return false; "
            + body + " }")


def open_and_run_all(browser, lab, name: str):
    """Open a lesson, wait for its kernel to be ready, run all cells, wait until they finish."""
    base, token = lab
    page = browser.new_page()
    # A workspace of its own (reset), so the lab does not restore the previous lesson's tabs.
    page.goto(f"{base}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={token}")
    # Before a kernel exists the indicator already reads idle ("No Kernel"): wait for both.
    page.wait_for_function(in_panel("""
            const name = panel.querySelector('.jp-KernelName');
            const status = panel.querySelector('.jp-Notebook-ExecutionIndicator');
            const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const kernel = widget && widget.sessionContext && widget.sessionContext.session
                && widget.sessionContext.session.kernel;
            return kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle'
                && name && !/No Kernel|Starting/i.test(name.textContent)
                && status && status.getAttribute('data-status') === 'idle';"""), timeout=90_000)
    page.evaluate("() => window.jupyterapp.commands.execute('runmenu:run-all')")
    # Done when every code cell shows an execution count and the kernel is idle again.
    try:
        page.wait_for_function(in_panel("""
            const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
            const status = panel.querySelector('.jp-Notebook-ExecutionIndicator');
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent))
                && status.getAttribute('data-status') === 'idle';"""), timeout=120_000)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"failed_{Path(name).stem}.png"), full_page=True)
        prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
        raise AssertionError(f"Run All did not finish {name}: prompts {prompts}") from None
    tracebacks = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
    assert tracebacks.count() == 0, tracebacks.first.inner_text()
    return page


def drag_slider(page, slider, fraction: float) -> None:
    """Drag a core ipywidgets slider's handle to ``fraction`` of its track (works in 7 and 8)."""
    track = slider.locator(".noUi-base, .ui-slider").first
    handle = slider.locator(".noUi-handle, .ui-slider-handle").first
    handle.scroll_into_view_if_needed()
    start = handle.bounding_box()
    box = track.bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + fraction * box["width"], box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()


def test_lesson_01_garage_answers_clicks_and_slider(browser, lab):
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_and_run_all(browser, lab, "01_parking_garage.ipynb")
    garage = page.locator(".widget-vbox", has=page.locator("button", has_text="New car")).first
    garage.scroll_into_view_if_needed()
    grid = garage.locator(".widget-html", has_text="The garage").first
    message = garage.locator(".widget-html").first
    before = grid.inner_text()
    assert "free spaces: 12 of 12" in " ".join(before.split())

    garage.locator("button", has_text="New car").click()
    page.wait_for_function("(t) => !document.body.innerText.includes(t)", arg="no car parked")
    garage.locator("button", has_text="New car").click()
    garage.locator("button", has_text="Next token").click()
    page.wait_for_timeout(300)
    assert grid.inner_text() != before
    assert "A1" in grid.inner_text() and "B2" in grid.inner_text()
    assert "Every car added one token" in garage.inner_text()

    drag_slider(page, garage.locator(".widget-slider").first, 0.95)  # a long prompt
    page.wait_for_timeout(500)
    garage.locator("button", has_text="New car").click()
    page.wait_for_timeout(500)
    text = " ".join(garage.inner_text().split())
    assert "C3" in text, text           # parked, or turned away by name
    assert "parks 5 tokens" not in message.inner_text()
    garage.locator("button", has_text="Car leaves").click()
    page.wait_for_timeout(300)
    assert "leaves" in garage.inner_text()
    garage.screenshot(path=str(ARTIFACTS / "lesson01_garage.png"))
    page.screenshot(path=str(ARTIFACTS / "lesson01_page.png"))
    page.close()


def test_lesson_03_breakdown_answers_its_controls_in_the_dark_theme(browser, lab):
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_and_run_all(browser, lab, "03_where_memory_goes.ipynb")
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', "
                  "{theme: 'JupyterLab Dark'})")
    explorer = page.locator(".widget-vbox", has=page.locator(".widget-dropdown", has_text="workload")).last
    explorer.scroll_into_view_if_needed()
    image = explorer.locator("img").first
    before = image.get_attribute("src")
    table_before = explorer.locator(".widget-html").last.inner_text()
    assert "vLLM (paged)" in table_before and "96.3%" in table_before

    explorer.locator(".widget-dropdown", has_text="block size").locator("select").select_option("128")
    page.wait_for_function("([img, src]) => img.getAttribute('src') !== src",
                           arg=[image.element_handle(), before])
    assert "block size 128" in explorer.locator(".widget-html").last.inner_text()

    after_dropdown = image.get_attribute("src")
    drag_slider(page, explorer.locator(".widget-slider").first, 0.0)   # the smallest pool
    page.wait_for_function("([img, src]) => img.getAttribute('src') !== src",
                           arg=[image.element_handle(), after_dropdown])
    assert "16384 token slots" in explorer.locator(".widget-html").last.inner_text()
    page.wait_for_timeout(500)  # the theme's repaint
    explorer.screenshot(path=str(ARTIFACTS / "lesson03_breakdown_dark.png"))
    page.screenshot(path=str(ARTIFACTS / "lesson03_page_dark.png"))
    page.close()


def widget_output(page, control_text: str):
    """The output area of the widget that has a control (label or button) with this text."""
    control = page.locator(".widget-label, button", has_text=control_text)
    control.first.wait_for()  # the widget view exists
    output = page.locator(".jp-OutputArea-output", has=control).last
    output.scroll_into_view_if_needed()
    return output


def eventually(read, check, timeout_s: float = 30.0):
    """Poll ``read()`` until ``check(value)`` holds; return the value (or fail showing it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"the widget did not answer within {timeout_s:.0f} s: {value!r}"[:2000])
        time.sleep(0.2)


def text_of(output):
    return lambda: " ".join(output.inner_text().split())


def _slider(output, label: str):
    return output.locator(".widget-slider", has=output.page.locator(".widget-label", has_text=label)).first


def _answers_00(page):
    out = widget_output(page, "block size")
    eventually(text_of(out), lambda t: "needs 7 blocks of 16" in t)
    drag_slider(page, _slider(out, "block size"), 0.5)
    eventually(text_of(out), lambda t: "blocks of" in t and "blocks of 16 " not in t)


def _answers_02(page):
    out = widget_output(page, "length A1")
    eventually(text_of(out), lambda t: "block size 4:" in t)
    drag_slider(page, _slider(out, "block size"), 1.0)
    eventually(text_of(out), lambda t: "block size 16:" in t)


def _answers_03b(page):
    out = widget_output(page, "tokens per request")
    eventually(text_of(out), lambda t: "230.7 requests of 2,048 tokens" in t)
    out.locator(".widget-dropdown", has_text="KV cache dtype").locator("select").select_option("fp8")
    eventually(text_of(out), lambda t: "461.4 requests of 2,048 tokens" in t)
    drag_slider(page, _slider(out, "tokens per request"), 0.0)
    eventually(text_of(out), lambda t: "of 128 tokens" in t and "--max-num-seqs 256" in t)


def _answers_04(page):
    out = widget_output(page, "Fork")
    eventually(text_of(out), lambda t: "Fork it to start" in t)
    out.locator("button", has_text="Fork").click()
    eventually(text_of(out), lambda t: "shared ×2" in t)
    out.locator("button", has_text="Append token").click()
    eventually(text_of(out), lambda t: "Copy-on-write" in t)


def _answers_05(page):
    out = widget_output(page, "arrivals per step")
    image = out.locator("img").first
    before = eventually(lambda: image.get_attribute("src") or "", bool)
    drag_slider(page, _slider(out, "pool"), 1.0)
    eventually(lambda: image.get_attribute("src"), lambda src: src != before)
    eventually(text_of(out), lambda t: "2048 blocks" in t)


def _answers_05b(page):
    out = widget_output(page, "request rate")
    image = out.locator("img").first
    eventually(text_of(out), lambda t: "At 2.5 req/s, budget 512" in t, timeout_s=60)
    before = image.get_attribute("src")
    drag_slider(page, _slider(out, "request rate"), 1.0)
    eventually(text_of(out), lambda t: "At 3.5 req/s" in t, timeout_s=60)
    eventually(lambda: image.get_attribute("src"), lambda src: src != before)


def _answers_07(page):
    out = widget_output(page, "splits")
    eventually(text_of(out), lambda t: "3 programs" in t)
    drag_slider(page, _slider(out, "splits"), 1.0)
    eventually(text_of(out), lambda t: "12 programs" in t and "4 split(s)" in t)


def _answers_07b(page):
    out = widget_output(page, "query tile")
    eventually(text_of(out), lambda t: "10 programs" in t and "1 spare" in t)
    out.locator(".widget-dropdown", has_text="batch").locator("select").select_option("decodes only")
    eventually(text_of(out), lambda t: "3 programs" in t)
    drag_slider(page, _slider(out, "KV heads"), 1.0)
    eventually(text_of(out), lambda t: "12 programs" in t and "4 KV head(s)" in t)


def _answers_08(page):
    out = widget_output(page, "Generate")
    eventually(text_of(out), lambda t: "done:" in t and "peak 24 of 24" in t, timeout_s=60)
    drag_slider(page, _slider(out, "pool (blocks)"), 1.0)
    out.locator("button", has_text="Generate").click()
    eventually(text_of(out), lambda t: "0 preemptions" in t and "of 128 blocks" in t, timeout_s=60)


WIDGET_LESSONS = {
    "00_start_here": _answers_00, "02_pages_and_block_tables": _answers_02,
    "03b_how_many_requests_fit": _answers_03b,
    "04_sharing": _answers_04, "05_scheduling": _answers_05, "07_triton_kernel": _answers_07,
    "08_serving_a_model": _answers_08,
    "05b_chunked_prefill_and_latency": _answers_05b,
    "07b_the_unified_kernel": _answers_07b,
}


@pytest.mark.parametrize("lesson", list(WIDGET_LESSONS))
def test_every_other_lesson_widget_answers_in_the_browser(browser, lab, lesson):
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_and_run_all(browser, lab, f"{lesson}.ipynb")
    WIDGET_LESSONS[lesson](page)
    page.screenshot(path=str(ARTIFACTS / f"lesson{lesson.split('_')[0]}_page.png"))
    page.close()
