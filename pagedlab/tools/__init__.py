"""The course's tools, around the data path rather than on it.

- :mod:`.cli`: the ``pagedlab`` command (``garage``, ``doctor``, ``simulate``, ``bench``, ``grade``);
- :mod:`.garage`: the parking-garage story in the terminal;
- :mod:`.doctor`: what this machine runs (versions, GPU, Triton compiled or interpreted);
- :mod:`.bench`: the kernel benchmark;
- :mod:`.compile_report`: the kernels compiled for a T4, an A100 and an H100 without a GPU
  (registers, spills, shared memory, the decode loop's instructions);
- :mod:`.fake_gpu` and :mod:`.dry_run`: pretend to be a GPU (the compile report, and
  ``make gpu-check DRY_RUN=1``);
- :mod:`.course`: where the course installs from (Colab badges and install cells);
- :mod:`.exercises`: writes ``exercises/`` from ``solutions/``.
"""
