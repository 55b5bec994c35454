"""Triton kernels of the course, installed as ``pagedlab.kernels``.

Import them through :mod:`pagedlab.backend`, which decides between compiled Triton and the
Triton interpreter *before* a kernel module is imported (``TRITON_INTERPRET`` is read when
``@triton.jit`` runs).
"""
