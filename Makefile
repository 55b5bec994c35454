# The two commands of the course:
#   make lab    set up .venv (if needed) and open JupyterLab on the lessons
#   make test   set up .venv (if needed) and run every test
# Everything else here is what those two need.

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.pagedlab-installed
EXTRAS   ?= dev,lab,model,attention
# A CPU machine gets torch's local CPU wheel from a constraints file; a machine with an
# NVIDIA GPU keeps whatever torch it resolves (never pinned in the package metadata).
HAS_GPU  := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
CONSTRAINTS := $(if $(HAS_GPU),,-c constraints/cpu.txt)
# Where torch comes from (tools/torch_source.sh says why): on Linux without an NVIDIA GPU,
# PyTorch's CPU index when it answers, else the pin above. `=`, not `:=`: probed only to install.
TORCH_SOURCE = $(shell sh tools/torch_source.sh)
# EXTRAS=lab gives the light course (lessons 01-05, no torch); attention and model bring torch.
comma := ,
NEEDS_TORCH := $(filter attention model,$(subst $(comma), ,$(EXTRAS)))
JUPYTER_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: lab test install instructor-tools print-torch-source chromium gpu-check gpu-compat bench exercises clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(NEEDS_TORCH),$(BIN)/python -m pip install --quiet $(TORCH_SOURCE) torch)
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# The pip options `make install` uses for torch on this machine (see tools/torch_source.sh).
print-torch-source:
	@echo 'torch from: $(or $(strip $(TORCH_SOURCE)),PyPI (its default build))'

# Served from the repository root (so exercises/ is one click away), opening lesson 00.
lab: $(STAMP)
	$(BIN)/jupyter lab $(JUPYTER_ROOT) notebooks/00_start_here.ipynb

# Debian's chromium for the browser test; skipped (the test then says how to enable it)
# where there is no root or no apt.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "chromium missing and no root/apt: the browser test will be skipped"; fi; }

# Debian's bubblewrap, so the grader's tests run in namespace isolation too (as in CI); skipped
# where there is no root or no apt (those tests then skip, saying why).
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
	      || echo "could not install bubblewrap: the namespace grading tests will be skipped"; \
	  else echo "bubblewrap missing and no root/apt: the namespace grading tests will be skipped"; fi; }

test: $(STAMP) chromium bubblewrap instructor-tools
	$(BIN)/python -m pytest

# On a GPU machine with torch and Triton but no network. DRY_RUN=1: anywhere, CUDA faked and
# the kernels stubbed, so every line of the script and the benchmarks runs (CI does this).
gpu-check:
	$(if $(DRY_RUN),DRY_RUN=1 PYTHON=$(BIN)/python ,)bash benchmarks/gpu_check.sh

# The ahead-of-time compile test again under Colab's Triton, in a venv of its own, and the
# kernel tests in its interpreter (with the newest NumPy, as Colab has).
COMPAT_TRITON ?= 3.6.0
COMPAT_VENV   ?= build/venv-triton$(COMPAT_TRITON)
COMPAT_STAMP  := $(COMPAT_VENV)/.pagedlab-installed
COMPAT_TESTS  ?= tests/test_compile.py tests/test_kernels.py

$(COMPAT_STAMP): pyproject.toml constraints/cpu.txt
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(COMPAT_VENV)/bin/python -m pip install --quiet -c constraints/cpu.txt torch \
	    'triton==$(COMPAT_TRITON)' numpy pytest
	$(COMPAT_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(COMPAT_STAMP)

gpu-compat: $(COMPAT_STAMP)
	$(COMPAT_VENV)/bin/python -c "import numpy, torch, triton; \
	print('Triton', triton.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)"
	$(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS)

# nbgrader and otter-grader (the `instructor` extra) for tests/test_instructor_formats.py, in a
# venv of their own: their JupyterLab and server extensions stay out of the learners' .venv.
INSTRUCTOR_VENV  ?= build/venv-instructor
INSTRUCTOR_STAMP := $(INSTRUCTOR_VENV)/.pagedlab-installed

$(INSTRUCTOR_STAMP): pyproject.toml
	test -x $(INSTRUCTOR_VENV)/bin/python || $(PYTHON) -m venv $(INSTRUCTOR_VENV)
	$(INSTRUCTOR_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INSTRUCTOR_VENV)/bin/python -m pip install --quiet -e '.[instructor]'
	touch $(INSTRUCTOR_STAMP)

instructor-tools: $(INSTRUCTOR_STAMP)

exercises: $(STAMP)
	$(BIN)/python -m pagedlab.tools.course make-exercises

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

# The pure lessons (01-03, 03b, 05) as a JupyterLite site in build/site: static files that run
# in the browser (Pyodide), the course's wheel bundled. Its build tools (pinned in
# pagedlab/tools/site.py) live in a venv of their own; npm fetches Pyodide's package list.
# The site loads Pyodide from its CDN; SITE_PYODIDE=pyodide-314.0.6.tar.bz2 (URL, path or the
# unpacked folder, from Pyodide's GitHub releases) puts it in the site instead.
SITE_VENV  ?= build/venv-site
SITE_STAMP := $(SITE_VENV)/.pagedlab-installed
SITE_OUT   ?= build/site
SITE_PYODIDE ?=
.PHONY: site

$(SITE_STAMP): pagedlab/tools/site.py | $(STAMP)
	$(BIN)/python -m pagedlab.tools.site install-tools --venv $(SITE_VENV)
	touch $(SITE_STAMP)

site: $(STAMP) $(SITE_STAMP)
	$(BIN)/python -m pagedlab.tools.site build --jupyter $(SITE_VENV)/bin/jupyter --output $(SITE_OUT) \
	    $(if $(SITE_PYODIDE),--pyodide $(SITE_PYODIDE))
