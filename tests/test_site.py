"""The JupyterLite site (pagedlab.tools.site): the pure lessons in the browser, nothing to install.

The slow tests build the site (its tools go into build/venv-site once, ~10 s from PyPI) and, where
Node.js is here, boot Pyodide from the ``pyodide`` npm package, install pagedlab from the site
the way the site's kernel does (piplite over HTTP, no PyPI) and run the lessons' cells, a
simulation and ``pl.check`` in it. Pyodide's binary packages (numpy, matplotlib) come from its
CDN, out of reach here: that run counts them as installed at the lock's versions (micropip's
mock packages) and leaves out the cells that draw with matplotlib.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

import pagedlab
from pagedlab.grading import feedback
from pagedlab.tools import site

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build"
ARTIFACTS = ROOT / "tests" / "artifacts"   # screenshots of a failed browser run
SITE_VENV = CACHE / "venv-site"
KERNEL_INDEX = "./extensions/@jupyterlite/pyodide-kernel-extension/static/pypi/all.json"
LOCK = {"info": {"abi_version": "2026_0", "arch": "wasm32", "platform": "emscripten_5_0_3",
                 "python": "3.14.2"},
        "packages": {"numpy": {"version": "2.4.6"}, "tqdm": {"version": "4.67.3"}}}


def make_wheel(folder: Path, filename: str, requires: list[str] = ()) -> Path:
    """A wheel file holding only its METADATA."""
    name, version = filename.split("-")[:2]
    path = folder / filename
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(
            ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             *(f"Requires-Dist: {line}" for line in requires)]) + "\n")
    return path


# ---------------------------------------------------------------------------- micropip's rules


def test_micropip_takes_a_pure_wheel_whose_requirements_pyodide_has(tmp_path):
    wheel = make_wheel(tmp_path, "course-1.0-py3-none-any.whl", ["numpy>=1.24,<3", "tqdm>=4.60"])
    assert site.micropip_problems(wheel, LOCK) == []


def test_micropip_refuses_a_wheel_that_requires_torch(tmp_path):
    wheel = make_wheel(tmp_path, "course-1.0-py3-none-any.whl", ["numpy", "torch>=2.1,<3"])
    problems = site.micropip_problems(wheel, LOCK)
    assert len(problems) == 1 and "torch" in problems[0]


def test_markers_are_evaluated_for_pyodide_and_extras_are_not_installed(tmp_path):
    wheel = make_wheel(tmp_path, "course-1.0-py3-none-any.whl", [
        "triton>=3; sys_platform == 'linux'", "torch; extra == 'attention'",
        "tomli; python_version < '3.11'", "pywin32; platform_machine != 'wasm32'"])
    assert site.micropip_problems(wheel, LOCK) == []


def test_a_version_pyodide_does_not_have_is_a_problem(tmp_path):
    wheel = make_wheel(tmp_path, "course-1.0-py3-none-any.whl", ["numpy>=3"])
    assert site.micropip_problems(wheel, LOCK) == ["course requires numpy>=3: Pyodide has 2.4.6"]


def test_a_platform_wheel_is_refused_and_a_pyodide_one_is_taken(tmp_path):
    linux = make_wheel(tmp_path, "course-1.0-cp314-cp314-manylinux_2_28_x86_64.whl")
    wasm = make_wheel(tmp_path, "course-1.0-cp314-cp314-pyemscripten_2026_0_wasm32.whl")
    assert "not a pure py3-none-any wheel" in site.micropip_problems(linux, LOCK)[0]
    assert site.micropip_problems(wasm, LOCK) == []


def test_a_served_wheel_meets_a_requirement_and_its_own_are_checked(tmp_path):
    wheel = make_wheel(tmp_path, "course-1.0-py3-none-any.whl", ["widgets>=8"])
    widgets = make_wheel(tmp_path, "widgets-8.1-py3-none-any.whl", ["missing-thing"])
    assert site.micropip_problems(wheel, LOCK) == [
        "course requires widgets>=8: not in Pyodide's packages nor among the site's wheels"]
    assert site.micropip_problems(wheel, LOCK, [widgets]) == [
        "widgets requires missing-thing: not in Pyodide's packages nor among the site's wheels"]


# ---------------------------------------------------------------------------- the lessons


def lesson(*code: str) -> dict:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": "# a lesson"}]
    cells += [{"cell_type": "code", "metadata": {}, "source": text, "execution_count": 3,
               "outputs": [{"output_type": "stream", "name": "stdout", "text": "hi"}]}
              for text in code]
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3"}, "widgets": {}},
            "nbformat": 4, "nbformat_minor": 5}


def test_a_site_lesson_installs_the_bundled_wheel_first_and_has_no_outputs():
    copy = site.site_lesson(lesson("# pagedlab install cell: Colab", "import pagedlab"), "x")
    assert copy["cells"][1]["source"] == site.JUPYTERLITE_INSTALL_CELL
    assert "piplite.install('pagedlab')" in site.JUPYTERLITE_INSTALL_CELL
    assert all(cell["outputs"] == [] and cell["execution_count"] is None
               for cell in copy["cells"] if cell["cell_type"] == "code")
    assert copy["metadata"]["kernelspec"] == site.PYODIDE_KERNELSPEC
    assert "widgets" not in copy["metadata"]


def test_a_lesson_that_imports_torch_is_refused():
    with pytest.raises(site.SiteError, match="imports torch"):
        site.site_lesson(lesson("# pagedlab install cell", "import torch"), "07_triton_kernel")


def test_a_lesson_without_an_install_cell_is_refused():
    with pytest.raises(site.SiteError, match="no install cell"):
        site.site_lesson(lesson("import pagedlab"), "01")


def test_check_runs_its_cases_without_a_timer_in_pyodide(monkeypatch):
    monkeypatch.setattr(sys, "platform", "emscripten")
    assert not feedback._has_timer()
    with feedback._time_limit(0.01) as expired:   # no SIGALRM is armed: nothing interrupts
        threading.Event().wait(0.05)
    assert expired == []
    assert "6/6 cases passed" in str(pagedlab.check("ex01", BlockManager=pagedlab.BlockManager))


# ---------------------------------------------------------------------------- the built site


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    jupyter = SITE_VENV / "bin" / "jupyter"
    try:
        if not jupyter.exists():
            site.install_tools(SITE_VENV)
        output = tmp_path_factory.mktemp("lite") / "site"
        wheel = site.build(output, jupyter, root=ROOT, cache=CACHE)
    except site.SiteError as error:
        if "npm not found" in str(error) or "installing the site's tools" in str(error):
            pytest.skip(f"cannot build the site here: {str(error).splitlines()[0]}")
        raise
    return output, wheel


@pytest.mark.slow
def test_the_site_serves_the_five_pure_lessons_each_installing_the_bundled_wheel(built):
    output, _ = built
    files = sorted(path.name for path in (output / "files").iterdir())
    assert files == [f"{name}.ipynb" for name in site.PURE_LESSONS]
    for name in files:
        notebook = json.loads((output / "files" / name).read_text())
        code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
        assert code[0]["source"] == site.JUPYTERLITE_INSTALL_CELL, name
        assert all(cell["outputs"] == [] for cell in code), name
        assert not any("import torch" in cell["source"] for cell in code), name
    assert (output / "index.html").exists() and (output / "lab" / "index.html").exists()
    assert (output / "extensions" / site.WIDGET_MANAGER).is_dir()


@pytest.mark.slow
def test_the_sites_wheel_is_the_checkouts_without_torch_and_micropip_takes_it(built, tmp_path):
    output, wheel = built
    assert wheel.parent == output / "pypi"
    name, version, requires = site.wheel_metadata(wheel)
    assert (name, version) == ("pagedlab", pagedlab.__version__)
    for line in requires:   # torch and Triton only behind an extra, never for a plain install
        if line.split(";")[0].strip().startswith(("torch", "triton")):
            assert "extra ==" in line, line
    lock = json.loads((site.fetch_pyodide(CACHE) / "pyodide-lock.json").read_text())
    others = [path for path in site.site_wheels(output) if path != wheel]
    assert {path.name.split("-")[0] for path in others} >= {"ipywidgets", "jupyterlab_widgets"}
    assert site.micropip_problems(wheel, lock, others) == []


@pytest.mark.slow
def test_jupyter_lite_json_points_the_kernel_at_the_sites_wheels_first(built):
    output, wheel = built
    config = json.loads((output / "jupyter-lite.json").read_text())["jupyter-config-data"]
    urls = config["litePluginSettings"][site.KERNEL_PLUGIN]["pipliteUrls"]
    index, sha = urls[0].split("?sha256=")
    assert index == "./pypi/all.json"
    assert hashlib.sha256((output / "pypi" / "all.json").read_bytes()).hexdigest() == sha
    assert any(url.startswith(KERNEL_INDEX) for url in urls)
    releases = json.loads((output / "pypi" / "all.json").read_text())["pagedlab"]["releases"]
    assert releases[pagedlab.__version__][0]["url"] == f"./{wheel.name}"


# ---------------------------------------------------------------------------- in Pyodide itself

# Boots Pyodide in Node.js, installs pagedlab as the site's kernel does (piplite, over HTTP, from
# the site's indexes and no PyPI), then runs the job's lesson cells, a simulation and pl.check.
NODE_SCRIPT = r"""
import { readFileSync } from "node:fs";
import { loadPyodide } from "@@RUNTIME@@/pyodide.mjs";
const py = await loadPyodide({ indexURL: "@@RUNTIME@@/" });
await py.loadPackage(["micropip"]);
py.globals.set("job", readFileSync("@@JOB@@", "utf8"));
try {
  console.log(await py.runPythonAsync(`
import contextlib, io, json, sys
import micropip
job = json.loads(job)
await micropip.install(job["piplite"])
import piplite.piplite
piplite.piplite._PIPLITE_URLS = job["urls"]
piplite.piplite._PIPLITE_DISABLE_PYPI = True
await piplite.piplite.install("pagedlab")

import pagedlab as pl
printed = {}
for lesson, cells in job["cells"].items():
    namespace = {}
    exec(job["preamble"], namespace)
    printed[lesson] = []
    for source in cells:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            exec(source, namespace)
        printed[lesson].append(out.getvalue())
result = pl.simulate(pl.workloads.sharegpt_like(200, seed=0),
                     pl.BlockManager(num_blocks=512, block_size=16))
json.dumps({"platform": sys.platform, "installed": sorted(micropip.list()), "printed": printed,
            "sim": [result.steps, result.finished, result.preemptions,
                    round(result.internal_fragmentation, 9), round(result.mean_batch_size, 9)],
            "check": str(pl.check("ex01", BlockManager=pl.BlockManager)).splitlines()[0]})
`));
} catch (error) { console.log("PYTHON ERROR", error.message); process.exit(3); }
"""
# The lessons' cells that run without matplotlib (a binary wheel from the CDN, out of reach
# here), after these imports: run here first, then in Pyodide, and the two must print alike.
PREAMBLE = "import pagedlab as pl\nfrom pagedlab import capacity as cap"


@contextlib.contextmanager
def without_matplotlib():
    """``import matplotlib`` (and any of its modules) fails inside the block, as in the run."""
    hidden = {name: module for name, module in sys.modules.items()
              if name == "matplotlib" or name.startswith("matplotlib.")}
    sys.modules.update(dict.fromkeys([*hidden, "matplotlib", "matplotlib.figure"]))
    try:
        yield
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
            del sys.modules[name]
        sys.modules.update(hidden)


def pure_cells(site_dir: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Each lesson's cells that run here without matplotlib, and what they print."""
    found = {}
    for name in site.PURE_LESSONS:
        notebook = json.loads((site_dir / "files" / f"{name}.ipynb").read_text())
        namespace, cells, printed = {}, [], []
        exec(PREAMBLE, namespace)
        for cell in notebook["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] != "code" or source.startswith(site.INSTALL_MARKER):
                continue
            with contextlib.redirect_stdout(io.StringIO()) as out, without_matplotlib():
                try:
                    exec(source, namespace)
                except (ImportError, NameError):   # matplotlib, or a cell left out above
                    continue
            cells.append(source)
            printed.append(out.getvalue())
        found[name] = cells, printed
    return found



STAND_INS = ("numpy", "matplotlib")   # binary wheels on Pyodide's CDN: empty stand-ins here


def stand_in_wheel(folder: Path, name: str, version: str) -> Path:
    """A wheel named ``name`` that installs an empty package: counts as installed, does nothing."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": "# a stand-in: the real wheel is on Pyodide's CDN\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             f"{info}/RECORD": ""}
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> Path:
    """Pyodide as its CDN would serve it to the site's kernel: the npm package's runtime, the
    pure packages of its lock that the kernel and pagedlab load (from PyPI, at the lock's
    versions) and stand-ins for the binary ones. The lock is rewritten to these files."""
    runtime = tmp_path_factory.mktemp("pyodide") / "runtime"
    shutil.copytree(site.fetch_pyodide(CACHE), runtime)
    lock = json.loads((runtime / "pyodide-lock.json").read_text())
    packages = {canonicalize_name(name): entry for name, entry in lock["packages"].items()}
    names, queue = set(), ["micropip", "tqdm", "ipython", "jedi"]   # the kernel's, pagedlab's
    while queue:
        name = canonicalize_name(queue.pop())
        if name not in names:
            names.add(name)
            queue += packages[name]["depends"]
    wanted = tuple(f"{name}=={packages[name]['version']}" for name in sorted(names))
    wheels = site.download_wheels(wanted, runtime, lock)
    wheels += [stand_in_wheel(runtime, name, packages[name]["version"]) for name in STAND_INS]
    for wheel in wheels:
        entry = packages[canonicalize_name(wheel.name.split("-")[0])]
        entry["file_name"] = wheel.name   # PyPI's file, not Pyodide's rebuild: its own digest
        entry["sha256"] = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if wheel.name.split("-")[0] in STAND_INS:
            entry["depends"] = []
    (runtime / "pyodide-lock.json").write_text(json.dumps(lock))
    return runtime


@contextlib.contextmanager
def serving(folder: Path):
    """``folder`` over HTTP on 127.0.0.1, as a browser would fetch a published site."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def served(built):
    with serving(built[0]) as address:
        yield address


def piplite_urls(output: Path) -> list[str]:
    config = json.loads((output / "jupyter-lite.json").read_text())["jupyter-config-data"]
    return config["litePluginSettings"][site.KERNEL_PLUGIN]["pipliteUrls"]


@pytest.mark.slow
def test_pyodide_installs_pagedlab_from_the_site_and_runs_the_lessons_code(
        built, served, runtime, tmp_path):
    if shutil.which("node") is None:
        pytest.skip("Node.js not found: apt-get install nodejs npm, to run pagedlab in Pyodide")
    output, _ = built
    piplite = next((output / KERNEL_INDEX).parent.glob("piplite-*.whl")).name
    lessons = pure_cells(output)
    assert sum(len(cells) for cells, _ in lessons.values()) >= 10
    job = {"urls": [served + url[1:] for url in piplite_urls(output)], "preamble": PREAMBLE,
           "piplite": f"{served}{KERNEL_INDEX[1:].rsplit('/', 1)[0]}/{piplite}",
           "cells": {name: cells for name, (cells, _) in lessons.items()}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "run.mjs").write_text(NODE_SCRIPT.replace("@@RUNTIME@@", str(runtime))
                                      .replace("@@JOB@@", str(tmp_path / "job.json")))
    done = subprocess.run(["node", str(tmp_path / "run.mjs")], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["platform"] == "emscripten"
    installed = set(seen["installed"])
    assert {"pagedlab", "ipywidgets", "jupyterlab-widgets", "comm", "tqdm"} <= installed
    assert "torch" not in installed
    result = pagedlab.simulate(pagedlab.workloads.sharegpt_like(200, seed=0),
                               pagedlab.BlockManager(num_blocks=512, block_size=16))
    assert seen["sim"] == [result.steps, result.finished, result.preemptions,   # the same run
                           round(result.internal_fragmentation, 9),
                           round(result.mean_batch_size, 9)]
    assert result.finished == 200 and result.preemptions > 0
    assert "6/6 cases passed" in seen["check"]
    assert seen["printed"] == {name: printed for name, (_, printed) in lessons.items()}


# ---------------------------------------------------------------------------- in a browser

PYODIDE_CDN = f"https://cdn.jsdelivr.net/pyodide/v{site.PYODIDE_VERSION}/full/"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"   # in each lesson
VISIBLE_PANEL = ("[...document.querySelectorAll('.jp-NotebookPanel')]"
                 ".find(panel => !panel.classList.contains('lm-mod-hidden'))")
KERNEL_IDLE = f"""() => {{ const panel = {VISIBLE_PANEL}; if (!panel) return false;
    const name = panel.querySelector('.jp-KernelName');
    const status = panel.querySelector('.jp-Notebook-ExecutionIndicator');
    return name && /Pyodide/.test(name.textContent)
        && status && status.getAttribute('data-status') === 'idle'; }}"""
ALL_RAN = rf"""() => {{ const panel = {VISIBLE_PANEL};
    const prompts = panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt');
    const status = panel.querySelector('.jp-Notebook-ExecutionIndicator');
    return /\[\d+\]/.test(prompts[prompts.length - 1].textContent)
        && status.getAttribute('data-status') === 'idle'; }}"""


@pytest.fixture(scope="module")
def lite_browser(runtime, served, tmp_path_factory):
    """Headless Chromium whose requests to Pyodide's CDN get the local runtime; every other
    address outside the site is refused and listed in ``context.refused``."""
    chromium = shutil.which("chromium")
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
    if chromium is None or sync_api is None:
        pytest.skip("needs chromium and playwright: make chromium; pip install -e '.[dev]'")

    refused: list[str] = []
    from_cdn: list[str] = []

    def route(request_route):
        url = request_route.request.url
        if url.startswith("http://127.0.0.1:"):   # the sites under test
            return request_route.continue_()
        path = runtime / url[len(PYODIDE_CDN):].split("?")[0]
        if url.startswith(PYODIDE_CDN) and path.is_file():
            from_cdn.append(url)
            kind = {".mjs": "text/javascript", ".wasm": "application/wasm"}.get(path.suffix)
            return request_route.fulfill(body=path.read_bytes(),
                                         content_type=kind or "application/octet-stream")
        refused.append(url)
        return request_route.abort()

    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium,
            headless=True, service_workers="block", viewport={"width": 1400, "height": 1000},
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        context.set_default_timeout(120_000)
        context.route("**/*", route)
        context.refused, context.from_cdn = refused, from_cdn
        yield context
        context.close()


@pytest.mark.slow
@pytest.mark.browser
def run_all_in_chromium(browser, address: str, lesson: str, site_dir: Path) -> None:
    """Open ``lesson`` in the site at ``address``, Run All, and check what it shows."""
    page = browser.new_page()
    page.goto(f"{address}/lab/index.html?path={lesson}.ipynb")
    page.wait_for_function(KERNEL_IDLE)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    try:
        page.wait_for_function(ALL_RAN, timeout=120_000)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"site_failed_{lesson}.png"), full_page=True)
        raise
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    errors = panel.locator("[data-mime-type='application/vnd.jupyter.error']")
    assert errors.count() == 0, errors.first.inner_text()
    text = panel.text_content()   # off-screen cells too (inner_text skips them)
    _, printed = pure_cells(site_dir)[lesson]
    for lines in printed:   # what the cells print here, they print there
        first = lines.strip().splitlines()[0].strip() if lines.strip() else ""
        if first and not first.startswith("<IPython.core.display"):   # display() drew it there
            assert first in text, lines
    assert panel.locator(".jupyter-widgets").count() > 0   # the widgets drew
    assert set(browser.refused) <= {COLAB_BADGE}, browser.refused
    page.close()


# Lessons 01 and 03b: none of their cells draw with matplotlib (03 and 05 do; the CDN has it).
@pytest.mark.slow
@pytest.mark.browser
def test_lesson_03b_runs_all_its_cells_in_the_site_in_chromium(lite_browser, served, built):
    run_all_in_chromium(lite_browser, served, "03b_how_many_requests_fit", built[0])
    assert any(url.endswith("pyodide.asm.wasm") for url in lite_browser.from_cdn)


@pytest.mark.slow
@pytest.mark.browser
def test_lesson_01_runs_in_a_site_with_pyodide_bundled_and_nothing_from_the_cdn(
        lite_browser, runtime, tmp_path):
    output = tmp_path / "site"
    site.build(output, SITE_VENV / "bin" / "jupyter", root=ROOT, cache=CACHE, pyodide=runtime)
    config = json.loads((output / "jupyter-lite.json").read_text())["jupyter-config-data"]
    kernel = config["litePluginSettings"][site.KERNEL_PLUGIN]
    assert kernel["pyodideUrl"] == "./static/pyodide/pyodide.mjs"
    assert (output / "static" / "pyodide" / "pyodide.asm.wasm").exists()
    lite_browser.from_cdn.clear()
    with serving(output) as address:
        run_all_in_chromium(lite_browser, address, "01_parking_garage", output)
    assert lite_browser.from_cdn == []
