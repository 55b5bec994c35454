"""The course's tools, around the data path rather than on it.

- :mod:`.cli`: the ``pagedlab`` command (``garage``, ``doctor``, ``simulate``, ``bench``, ``grade``);
- :mod:`.garage`: the parking-garage story in the terminal;
- :mod:`.doctor`: what this machine runs (versions, GPU, Triton compiled or interpreted);
- :mod:`.bench`: the kernel benchmark;
- :mod:`.course`: where the course installs from (Colab badges and install cells);
- :mod:`.exercises`: writes ``exercises/`` from ``solutions/``.
"""
