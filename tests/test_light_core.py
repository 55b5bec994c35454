"""The light core: the wheel without extras installs into a fresh venv with no torch, the pure
lessons and exercises run there top to bottom, and the others stop with one line saying how to
get torch (no traceback)."""
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE_LESSONS = ["00_start_here", "01_parking_garage", "02_pages_and_block_tables",
                "03_where_memory_goes", "03b_how_many_requests_fit", "04_sharing",
                "05_scheduling", "05b_chunked_prefill_and_latency"]
PURE_EXERCISES = ["ex01_block_manager", "ex02_append_and_slots", "ex03_copy_on_write",
                  "ex04_prefix_cache", "ex05_scheduler_step", "ex08_chunked_prefill_step",
                  "ex10_capacity_arithmetic"]
TORCH_NOTEBOOKS = ["notebooks/06_attention_over_pages", "notebooks/07_triton_kernel",
                   "notebooks/07b_the_unified_kernel", "notebooks/08_serving_a_model",
                   "notebooks/09_from_pagedlab_to_vllm", "solutions/ex06_paged_attention_torch",
                   "solutions/ex07_triton_kernel", "solutions/ex09_unified_kernel"]
KERNEL = "pagedlab-light-core"

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytestmark = pytest.mark.slow


def run(*command, timeout=300):
    return subprocess.run([str(part) for part in command], check=True, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory):
    """A fresh venv holding the wheel without extras, plus ipykernel; a kernel spec for it."""
    # find_spec, not importorskip: importing setuptools here fails once another test has
    # imported the standard library's distutils (setuptools' distutils shim asserts)
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the wheel offline needs setuptools")
    tmp = tmp_path_factory.mktemp("light")
    start = time.perf_counter()
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "-w", tmp / "wheel", ROOT)
    (wheel,) = (tmp / "wheel").glob("pagedlab-*.whl")
    run(sys.executable, "-m", "venv", tmp / "venv")  # no system site-packages
    python = tmp / "venv" / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--no-cache-dir", wheel, "ipykernel")
    spec = tmp / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pagedlab light core", "language": "python"}))
    print(f"light core installed in {time.perf_counter() - start:.0f} s")
    return python, tmp / "jupyter"


@pytest.fixture
def light_kernel(light_venv, monkeypatch):
    python, jupyter_path = light_venv
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    return python


def execute(path: Path, *, extra_cell: str):
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(extra_cell))
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return notebook


def test_the_core_has_no_torch_triton_or_transformers(light_venv):
    python, _ = light_venv
    out = run(python, "-c", "import importlib.util as u; "
              "print([m for m in ('torch', 'triton', 'transformers') if u.find_spec(m)])")
    assert out.stdout.strip() == "[]"


WHERE = ("import sys, pagedlab\n"
         "print(sys.executable, pagedlab.__file__, 'torch' in sys.modules)")


@pytest.mark.parametrize("path", [ROOT / "notebooks" / f"{name}.ipynb" for name in PURE_LESSONS]
                         + [ROOT / "solutions" / f"{name}.ipynb" for name in PURE_EXERCISES],
                         ids=PURE_LESSONS + PURE_EXERCISES)
def test_a_pure_notebook_runs_top_to_bottom_without_torch(light_kernel, path):
    notebook = execute(path, extra_cell=WHERE)
    executable, package, torch_loaded = notebook.cells[-1].outputs[0]["text"].split()
    venv = light_kernel.parent.parent
    assert Path(executable).parent.parent == venv       # the light venv's kernel ran it
    assert Path(package).is_relative_to(venv)           # with the wheel, not the checkout
    assert torch_loaded == "False"
    if path.parent.name == "solutions":  # the grader's check() passes them all, without torch
        shown = "".join(str(o.get("data", {}).get("text/plain", "")) for c in notebook.cells
                        if "check" in c.metadata.get("tags", []) for o in c.outputs)
        passed, total = re.search(r"(\d+)/(\d+) cases passed", shown).groups()
        assert passed == total != "0"


@pytest.mark.parametrize("name", TORCH_NOTEBOOKS)
def test_a_torch_notebook_stops_with_one_line_naming_the_extra(light_kernel, name):
    notebook = nbformat.read(ROOT / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name=KERNEL)
    with pytest.raises(nbclient.exceptions.CellExecutionError) as info:
        client.execute()
    assert info.value.ename == "MissingPart"
    (error,) = [output for cell in notebook.cells if cell.cell_type == "code"
                for output in cell.get("outputs", []) if output.output_type == "error"]
    (line,) = error.traceback  # the whole of what Jupyter shows: one line, no traceback
    assert "PyTorch is not installed" in line and "pip install 'pagedlab[attention]'" in line
