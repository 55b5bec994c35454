"""A missing optional part (torch, Triton, transformers, a GPU, a widget extension) is one line
saying what to get, never a traceback."""
import sys

import pytest

import pagedlab as pl
from pagedlab import backend, needs, triton_compat


def hide(monkeypatch, module: str):
    monkeypatch.setitem(sys.modules, module, None)  # find_spec and import now fail


@pytest.mark.skipif(not needs.have("torch"), reason="torch is not installed")
def test_require_returns_the_module_where_it_is_installed():
    import torch
    assert pl.require("torch", "lesson 06") is torch


def test_a_missing_torch_is_a_one_line_import_error_naming_the_extra(monkeypatch):
    hide(monkeypatch, "torch")
    assert not pl.have("torch") and not pl.have("gpu")
    with pytest.raises(ImportError) as info:  # old `except ImportError` keeps working
        pl.require("torch", "lesson 06")
    error = info.value
    assert isinstance(error, pl.MissingPart) and isinstance(error, pl.PagedLabError)
    message = str(error)
    assert "\n" not in message
    assert "PyTorch" in message and "lesson 06" in message
    assert "pip install 'pagedlab[attention]'" in message and "Colab" in message
    assert error.name == "torch"


def test_a_missing_transformers_points_at_the_model_extra(monkeypatch):
    hide(monkeypatch, "transformers")
    with pytest.raises(pl.MissingPart, match=r"pagedlab\[model\]"):
        pl.require("transformers", "the comparison with Hugging Face")


def test_triton_off_linux_says_it_ships_for_linux_only(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    line = needs.missing_line("triton", "exercise 7")
    assert "Linux only" in line and "Colab" in line and "pip install" not in line


def test_on_python_3_14_torch_is_missing_says_which_pythons_have_it(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 14, 0, "final", 0))
    line = needs.missing_line("torch", "lesson 06")
    assert "Python 3.10-3.13" in line and "Colab" in line


def test_no_gpu_says_how_to_get_one_in_colab(monkeypatch):
    hide(monkeypatch, "torch")
    with pytest.raises(pl.MissingPart, match="no CUDA GPU here.*T4 GPU"):
        pl.require("gpu", "the benchmark")


def test_jupyter_shows_the_one_line_instead_of_a_traceback(monkeypatch):
    hide(monkeypatch, "torch")
    with pytest.raises(pl.MissingPart) as info:
        pl.require("torch", "lesson 08")
    (line,) = info.value._render_traceback_()  # what IPython prints for the error, all of it
    assert line == f"MissingPart: {info.value}"


@pytest.mark.parametrize("name", ["KVCache", "LLMEngine", "GPT", "paged_attention"])
def test_a_torch_name_of_the_package_without_torch_says_what_to_install(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails, as without it
    for module in [m for m in sys.modules if m.startswith("pagedlab.") and m != "pagedlab.needs"]:
        if module.split(".")[1] in ("attention", "cache", "engine", "model", "paged_batch"):
            monkeypatch.delitem(sys.modules, module)
    monkeypatch.delitem(vars(pl), name, raising=False)
    with pytest.raises(needs.MissingPart, match=r"pagedlab\[attention\]") as caught:
        getattr(pl, name)
    assert "\n" not in str(caught.value) and name in str(caught.value)


def test_checking_a_torch_exercise_without_torch_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "pagedlab.attention", raising=False)
    with pytest.raises(needs.MissingPart, match=r"check\('ex06'\).*pagedlab\[attention\]"):
        pl.check("ex06", paged_attention=lambda *args: None)


def test_an_unknown_part_is_a_value_error_listing_the_parts():
    with pytest.raises(ValueError, match="torch, triton, transformers, gpu"):
        pl.require("tensorflow", "lesson 06")


# ------------------------------------------------------------------ Triton stand-ins
def test_without_triton_a_kernel_can_be_defined_and_read_but_launching_it_is_one_line(monkeypatch):
    monkeypatch.setattr(backend, "_status", {"available": False, "mode": "missing",
                                             "version": None, "reason": "Triton is gone."})
    triton, tl = triton_compat.triton, triton_compat.tl
    assert "stand-in" in repr(triton)

    @triton.jit
    def double(x_ptr, n, BLOCK: tl.constexpr):
        """Doubles x."""
        tl.store(x_ptr, 2 * tl.load(x_ptr))

    assert double.__name__ == "double" and double.__doc__ == "Doubles x."
    with pytest.raises(pl.MissingPart, match="launching double"):
        double[(1,)](None, 1, BLOCK=16)


@pytest.mark.skipif(not backend.triton_status()["available"], reason="needs Triton")
def test_where_triton_runs_the_compat_names_are_triton_itself():
    import triton
    import triton.language as tl
    assert triton_compat.triton is triton and triton_compat.tl is tl


# ------------------------------------------------------------------ widgets in the browser
def fake_versions(monkeypatch, **versions):
    monkeypatch.setattr(needs, "_installed_version", lambda package: versions.get(package))


def test_ipywidgets_7_under_notebook_7_is_explained(monkeypatch):
    fake_versions(monkeypatch, ipywidgets="7.7.1", notebook="7.2.1",
                  jupyterlab_widgets="1.1.7", widgetsnbextension="3.6.6")
    line = needs.widget_front_end_problem()
    assert "ipywidgets 7.7.1" in line and "Notebook 7.2.1" in line
    assert "pip install -U 'ipywidgets>=8'" in line and "\n" not in line


def test_ipywidgets_7_under_jupyterlab_4_is_explained(monkeypatch):
    fake_versions(monkeypatch, ipywidgets="7.8.5", jupyterlab="4.2.5", jupyterlab_widgets="1.1.11")
    assert "JupyterLab 4.2.5" in needs.widget_front_end_problem()


@pytest.mark.parametrize("versions", [
    dict(ipywidgets="8.1.5", notebook="7.2.1", jupyterlab_widgets="3.0.13"),   # ipywidgets 8
    dict(ipywidgets="7.7.1", notebook="6.5.4", widgetsnbextension="3.6.6"),    # classic notebook
    dict(ipywidgets="7.7.1", jupyterlab="3.6.7", jupyterlab_widgets="1.1.7"),  # JupyterLab 3
    dict(ipywidgets="7.7.1", jupyterlab="4.2.5", jupyterlab_widgets="3.0.13"),  # the new extension
    dict(ipywidgets="7.7.1"),                                                  # Jupyter elsewhere
    dict(),                                                                    # no ipywidgets
], ids=["ipywidgets8", "notebook6", "lab3", "lab4-new-extension", "no-jupyter", "no-ipywidgets"])
def test_versions_that_fit_together_say_nothing(monkeypatch, versions):
    fake_versions(monkeypatch, **versions)
    assert needs.widget_front_end_problem() is None


def test_colab_has_its_own_widget_front_end(monkeypatch):
    fake_versions(monkeypatch, ipywidgets="7.7.1", notebook="7.2.1", jupyterlab_widgets="1.1.7")
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert needs.widget_front_end_problem() is None


def test_this_environment_draws_widgets():
    assert needs.widget_front_end_problem() is None  # make install's ipywidgets 8 + JupyterLab 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ex07_triton_kernel", "ex09_unified_kernel"])
def test_a_kernel_exercise_without_triton_explains_and_stops_at_the_launch_in_one_line(name):
    # macOS and Windows: the kernel cell still defines the kernel; its first launch says why not.
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from pathlib import Path
    notebook = nbformat.read(Path(__file__).parents[1] / "exercises" / f"{name}.ipynb", 4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(
        "import sys\nsys.modules['triton'] = None  # as if Triton were not installed"))
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3")
    with pytest.raises(nbclient.exceptions.CellExecutionError) as info:
        client.execute()
    assert info.value.ename == "MissingPart"
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    printed = "".join(o.get("text", "") for o in outputs)
    assert "Triton is not installed" in printed and "Without Triton you can write" in printed
    (error,) = [o for o in outputs if o.output_type == "error"]
    (line,) = error.traceback
    assert "Triton is not installed here (needed for launching my_" in line
