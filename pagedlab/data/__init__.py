"""Files pagedlab ships: ``tiny_copy.pt``, the tiny model's weights (see :mod:`pagedlab.tiny`), and
``compile_lesson07.json``, lesson 07's compile report (see :mod:`pagedlab.kernel_facts`)."""
