"""Pretend to be a CUDA GPU on a machine without one, and record kernel launches instead of
running them.

Two uses: the ahead-of-time compile report (:mod:`.compile_report`) asks the package's own launch
code what it would launch on a T4, an A100 or an H100; the GPU check's dry run
(``make gpu-check DRY_RUN=1``) walks every line of ``benchmarks/gpu_check.sh`` without a GPU.

What is faked, and nothing more:

- ``torch.cuda`` answers as the chosen GPU would (available, name, compute capability, SM count,
  memory), so :mod:`pagedlab.backend` decides on "compiled" Triton;
- Triton's driver reports that GPU's compile target, so Triton specialises and compiles each
  ``kernel[grid](...)`` exactly as it would there;
- the launch itself: Triton calls ``JITFunction._do_compile`` when it meets a new configuration;
  here that records a :class:`Launch` and returns None, which makes Triton skip the launch.

Call :func:`install` before anything imports :mod:`pagedlab.backend` or a kernel module, in a
process where ``TRITON_INTERPRET`` is unset (a kernel decorated in interpreter mode never
compiles). Tensors given to the launch code live on torch's ``meta`` device: they have shapes,
strides and dtypes but no memory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GPU:
    """The facts of one GPU that pagedlab's launch code and the compile check read."""

    name: str
    capability: tuple[int, int]
    num_sms: int
    memory_gib: float
    shared_per_block: int  # bytes one program may use (the opt-in maximum)
    shared_per_sm: int  # bytes per SM, for how many programs fit at once
    max_warps_per_sm: int
    max_blocks_per_sm: int
    registers_per_sm: int = 65536

    @property
    def arch(self) -> str:
        return f"sm_{self.capability[0]}{self.capability[1]}"


# The three targets of the course: free Colab, a common data-centre GPU, the newest common one.
GPUS = {
    "sm_75": GPU("Tesla T4", (7, 5), num_sms=40, memory_gib=15.0, shared_per_block=65536,
                 shared_per_sm=65536, max_warps_per_sm=32, max_blocks_per_sm=16),
    "sm_80": GPU("NVIDIA A100-SXM4-40GB", (8, 0), num_sms=108, memory_gib=40.0,
                 shared_per_block=166912, shared_per_sm=167936, max_warps_per_sm=64,
                 max_blocks_per_sm=32),
    "sm_90": GPU("NVIDIA H100 80GB HBM3", (9, 0), num_sms=132, memory_gib=80.0,
                 shared_per_block=232448, shared_per_sm=233472, max_warps_per_sm=64,
                 max_blocks_per_sm=32),
}


@dataclass
class Launch:
    """One kernel configuration as Triton would compile it: what ``triton.compile`` needs."""

    kernel: Any  # the JITFunction
    signature: dict
    constexprs: dict
    attrs: dict
    options: Any  # the backend's parsed options (num_warps, num_stages, arch, ...)
    gpu: GPU
    grid: tuple = ()
    workload: dict = field(default_factory=dict)  # what the launch code was asked to do

    @property
    def name(self) -> str:
        return self.kernel.__name__

    def named_constexprs(self) -> dict:
        """Constexpr values by parameter name (Triton keys them by position)."""
        names = list(self.signature)
        return {names[path[0]]: value for path, value in self.constexprs.items() if len(path) == 1}

    def key(self) -> tuple:
        """Two launches with equal keys compile to the same code."""
        return (self.name, self.gpu.arch, tuple(self.signature.items()),
                tuple(sorted((k, repr(v)) for k, v in self.constexprs.items())),
                tuple(sorted((k, repr(v)) for k, v in self.attrs.items())),
                self.options.num_warps, self.options.num_stages)


@dataclass
class _State:
    gpu: GPU | None = None
    launches: list[Launch] = field(default_factory=list)  # every launch recorded, in order
    workload: dict = field(default_factory=dict)
    grid: tuple = ()


state = _State()  # one per process: what is faked now, and what was launched


def use(gpu: GPU, workload: dict | None = None) -> None:
    """From now on, pretend to be ``gpu``; tag recorded launches with ``workload``."""
    state.gpu = gpu
    state.workload = dict(workload or {})


def install(gpu: GPU) -> None:
    """Fake ``torch.cuda`` and Triton's driver as ``gpu``, and record launches (see module doc)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("fake_gpu needs TRITON_INTERPRET unset: a kernel decorated in "
                           "interpreter mode is never compiled")
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime.jit import JITFunction

    use(gpu)
    props = lambda *args, **kwargs: _Properties(state.gpu)  # noqa: E731
    fakes = {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "current_device": lambda: 0,
        "get_device_name": lambda *args, **kwargs: state.gpu.name,
        "get_device_capability": lambda *args, **kwargs: state.gpu.capability,
        "get_device_properties": props,
        "is_bf16_supported": lambda *args, **kwargs: True,  # as torch says on a real T4
        "synchronize": lambda *args, **kwargs: None,
        "empty_cache": lambda: None,
        "mem_get_info": lambda *args, **kwargs: (int(state.gpu.memory_gib * 2**30 * 0.95),
                                                 int(state.gpu.memory_gib * 2**30)),
    }
    for name, fake in fakes.items():
        setattr(torch.cuda, name, fake)

    class Driver:  # what Triton's JIT asks of the active driver before it compiles
        def get_current_device(self):
            major, minor = state.gpu.capability  # one device per GPU: separate kernel caches
            return 10 * major + minor

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            major, minor = state.gpu.capability
            return GPUTarget("cuda", 10 * major + minor, 32)

        def get_device_interface(self):
            return torch.cuda

        def get_active_torch_device(self):
            return torch.device("meta")

    triton.runtime.driver.set_active(Driver())

    run = JITFunction.run

    def record_grid(self, *args, grid, warmup, **kwargs):
        state.grid = tuple(grid) if isinstance(grid, (tuple, list)) else (grid,)
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    def record_launch(self, key, signature, device, constexprs, options, attrs, warmup):
        state.launches.append(Launch(self, dict(signature), dict(constexprs), dict(attrs),
                                     options, state.gpu, state.grid, dict(state.workload)))
        return None  # Triton then returns without launching

    JITFunction.run = record_grid
    JITFunction._do_compile = record_launch


class _Properties:
    """What ``torch.cuda.get_device_properties`` returns, for the fields pagedlab reads."""

    def __init__(self, gpu: GPU):
        self.name = gpu.name
        self.major, self.minor = gpu.capability
        self.multi_processor_count = gpu.num_sms
        self.total_memory = int(gpu.memory_gib * 2**30)
        self.shared_memory_per_block_optin = gpu.shared_per_block
        self.max_threads_per_multi_processor = 32 * gpu.max_warps_per_sm
        self.regs_per_multiprocessor = gpu.registers_per_sm
