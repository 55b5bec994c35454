"""Run a command of ``make gpu-check`` on a machine without a GPU: CUDA faked, kernels stubbed.

``make gpu-check DRY_RUN=1`` (and ``tests/test_gpu_check.py`` in ``make test``) runs every Python
step of ``benchmarks/gpu_check.sh`` through this module, so that a missing import, a wrong flag,
a shape that does not fit or a crash after the first benchmark row shows up here, not on the
rare GPU machine::

    python -m pagedlab.tools.dry_run [--gpu sm_75] -m pagedlab bench --out DIR
    python -m pagedlab.tools.dry_run -m pytest --collect-only tests/test_kernels.py

What it changes in the process, before the command starts:

- ``torch.cuda`` answers as the chosen GPU (:mod:`.fake_gpu`): available, its name, capability,
  SM count and memory; ``synchronize`` does nothing;
- tensors asked for on ``"cuda"`` are made on the CPU (a torch function mode rewrites the
  device), so the command's own code runs on real numbers;
- a Triton kernel launch is recorded and skipped (its output stays uninitialised: the numbers
  a dry run prints mean nothing); ``triton.testing.do_bench`` calls the function once and says
  1 ms; ``torch.compile`` returns the function as it is;
- the benchmark's shapes shrink (:data:`SMALL_SHAPES`), so a CPU gets through them in seconds.

At exit it appends one JSON line to ``$PAGEDLAB_DRY_RUN_LOG`` (if set): the command and what a
GPU would have compiled for it (distinct kernel configurations launched, ``torch.compile`` calls).
"""
from __future__ import annotations

import atexit
import json
import os
import runpy
import sys

from . import fake_gpu

# (batch, context) shapes of the benchmark in a dry run: as many as on a GPU (each compiles its
# own flex_attention), every code path, a CPU's worth of work; the last one fits no GPU's memory
# (the benchmark skips it without allocating).
SMALL_SHAPES = ([(4, 128)] + [(b, c) for b in (1, 2, 4) for c in (32, 64, 256)
                              if (b, c) != (4, 128)][:7] + [(64, 1 << 20)])


def _to_cpu(value):
    import torch

    if isinstance(value, torch.device) and value.type == "cuda":
        return torch.device("cpu")
    if isinstance(value, str) and value.split(":")[0] == "cuda":
        return "cpu"
    return value


def _fake_cuda_tensors() -> None:
    """Make every tensor asked for on "cuda" on the CPU instead, for the rest of the process."""
    import torch
    from torch.overrides import TorchFunctionMode

    class CudaOnCpu(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if "device" in kwargs:
                kwargs["device"] = _to_cpu(kwargs["device"])
            if func in (torch.Tensor.cuda,):
                return args[0].cpu()
            if func in (torch.Tensor.to,) and args:
                args = (args[0],) + tuple(_to_cpu(a) for a in args[1:])
            return func(*args, **kwargs)

    CudaOnCpu().__enter__()  # stays on for the whole process
    torch.cuda.Event = _Event


class _Event:
    """``torch.cuda.Event`` without a GPU: times by the host clock."""

    def __init__(self, *args, **kwargs):
        self.time = 0.0

    def record(self, *args, **kwargs):
        import time

        self.time = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, other: "_Event") -> float:
        return 1000 * (other.time - self.time)


def _stub_timing_and_compiling() -> None:
    import torch
    import triton.testing

    def do_bench(fn, *args, **kwargs):
        fn()
        return 1.0

    def compile(fn=None, *args, **kwargs):  # counted: a GPU would spend time compiling it
        _torch_compiles.append(getattr(fn, "__name__", "?"))
        return fn if fn is not None else (lambda f: f)

    triton.testing.do_bench = do_bench
    torch.compile = compile


_torch_compiles: list[str] = []


def _shrink_benchmark() -> None:
    from . import bench

    bench.GPU_SHAPES[:] = SMALL_SHAPES
    bench.TARGET_SHAPE = SMALL_SHAPES[0]
    bench.GPU_COPY_BYTES = 1 << 22


def _log_launches(command: list[str]) -> None:
    path = os.environ.get("PAGEDLAB_DRY_RUN_LOG")
    if not path:
        return
    distinct = {launch.key() for launch in fake_gpu.state.launches}
    kernels = sorted({launch.name for launch in fake_gpu.state.launches} | set(_torch_compiles))
    with open(path, "a") as file:
        file.write(json.dumps({"step": os.environ.get("PAGEDLAB_DRY_RUN_STEP", "setup"),
                               "command": " ".join(command),
                               "compiles": len(distinct) + len(_torch_compiles),
                               "kernels": kernels}) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    arch = "sm_75"
    if argv[:1] == ["--gpu"]:
        arch, argv = (argv[1:2] or [""])[0], argv[2:]
        if arch not in fake_gpu.GPUS:
            print(f"--gpu takes one of {', '.join(fake_gpu.GPUS)}, got {arch!r}", file=sys.stderr)
            return 2
    if not argv:
        print(__doc__)
        return 2
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    fake_gpu.install(fake_gpu.GPUS[arch])
    _fake_cuda_tensors()
    _stub_timing_and_compiling()
    _shrink_benchmark()
    atexit.register(_log_launches, argv)
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        exec(compile(argv[1], "<dry-run>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, (int, type(None))):
            print(done.code, file=sys.stderr)
    sys.exit(code)
