# %% [markdown]
# # 00 · Start here
#
# Welcome to **pagedlab**, a hands-on course on **PagedAttention**, the idea that lets vLLM
# serve many more requests from the same GPU memory. We start in a parking garage and end with
# a Triton kernel inside a small GPT that serves several prompts at once.
#
# This notebook checks that your machine is ready and shows how the course runs.
# The cell below installs pagedlab when this notebook runs in Google Colab; anywhere else it
# does nothing (you already have pagedlab from `make lab` or the conda environment).

# %% [markdown]
# ## What this machine can run
#
# `pagedlab doctor` prints this table in a terminal. Look at two rows:
#
# * **GPU**: `none (CPU only)` is fine. Every lesson runs on a CPU.
# * **Triton kernels**: `compiled` on an NVIDIA GPU, `interpreter` on a CPU. The interpreter
#   runs the very same kernel code, one program after another in NumPy: exact, but slow, so the
#   lessons keep their shapes small.

# %%
from IPython.display import HTML, display

from pagedlab.doctor import report
from pagedlab.widgets.palette import table

display(HTML(table(["what", "value"], [[name, value] for name, value in report()])))

# %% [markdown]
# ## Do widgets work here?
#
# The lessons are driven by small widgets: sliders and buttons that redraw a picture.
# Move the slider below. If the line under it follows, widgets work in this notebook.
# (Nothing shows? In JupyterLab, make sure the notebook is *trusted* and ipywidgets is
# installed in the same environment as JupyterLab; in Colab they work out of the box.)

# %%
import ipywidgets as widgets

slider = widgets.IntSlider(value=16, min=1, max=64, description="block size")
answer = widgets.HTML()


def explain(change=None):
    tokens = 100
    blocks = -(-tokens // slider.value)
    answer.value = (f"a 100-token sequence needs <b>{blocks}</b> blocks of {slider.value} "
                    f"slots; <b>{blocks * slider.value - tokens}</b> slots stay empty")


slider.observe(explain, names="value")
explain()
widgets.VBox([slider, answer])

# %% [markdown]
# ## The package in one cell
#
# Everything the lessons build is in `pagedlab`, small enough to read next to them
# (`pagedlab/blocks.py` is the block manager). `import pagedlab` is instant and does not load
# torch; the tensor parts load the first time a lesson uses them.
#
# Look at what the block manager hands out: a sequence of 3 tokens gets one block, and its
# *block table* says which.

# %%
import pagedlab as pl

manager = pl.BlockManager(num_blocks=8, block_size=4)
seq = pl.Sequence(seq_id=1, token_ids=[5, 9, 2])
manager.allocate(seq)
print(pl.__version__, manager)
print("block table of sequence 1:", seq.block_table)

# %% [markdown]
# ## The path
#
# | lesson | idea | exercise |
# | --- | --- | --- |
# | [01 the parking garage](01_parking_garage.ipynb) | KV cache as cars, blocks as spaces, the block table as the ticket | `exercises/ex01_block_manager.ipynb` |
# | [02 pages and block tables](02_pages_and_block_tables.ipynb) | block size, logical vs physical blocks, slot mapping | `exercises/ex02_append_and_slots.ipynb` |
# | [03 where memory goes](03_where_memory_goes.ipynb) | the paper's waste breakdown: reservation vs paging | - |
# | [04 sharing](04_sharing.ipynb) | fork, reference counts, copy-on-write, prefix caching | `ex03_copy_on_write`, `ex04_prefix_cache` |
# | [05 scheduling](05_scheduling.ipynb) | continuous batching, preemption by recompute or swap | `ex05_scheduler_step` |
# | [06 attention over pages](06_attention_over_pages.ipynb) | K/V tensors in blocks; paged attention in plain torch | `ex06_paged_attention_torch` |
# | [07 the Triton kernel](07_triton_kernel.ipynb) | the decode kernel, step by step; verify and benchmark | `ex07_triton_kernel` |
# | [08 serving a model](08_serving_a_model.ipynb) | a tiny GPT served with the paged KV cache | - |
#
# Each exercise notebook ends with a `pl.check(...)` cell that tells you, case by case, what
# passes and gives a hint for what does not.

# %% [markdown]
# ## Summary
#
# * Every lesson runs on a CPU; a GPU only makes the kernels fast.
# * The first code cell of every notebook installs pagedlab in Colab and does nothing elsewhere.
# * Widgets are plain sliders and buttons; if the slider above worked, you are ready.
#
# Next: [01 · The parking garage](01_parking_garage.ipynb).
