"""The ``pagedlab`` command line (also ``python -m pagedlab``).

Each subcommand lives in the module that owns its idea and parses its own arguments, so
``pagedlab garage`` never imports torch and ``pagedlab bench`` is the only one that needs a GPU.
"""
from __future__ import annotations

import sys
from importlib import import_module

# name -> ("module:function", one line of help). Each function takes argv (a list) and
# returns an exit status.
COMMANDS = {
    "garage": ("pagedlab.tools.garage:main", "the parking-garage story of the KV cache, in the terminal"),
    "doctor": ("pagedlab.tools.doctor:main", "versions, GPU, and whether Triton runs compiled or interpreted"),
    "simulate": ("pagedlab.sim.simulator:main", "simulate serving a workload; print where the memory goes"),
    "bench": ("pagedlab.tools.bench:main", "time the paged-attention kernel against its baselines"),
    "grade": ("pagedlab.grading:main", "grade exercise notebooks (optionally for Gradescope)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: pagedlab COMMAND [options]   (pagedlab COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from pagedlab import __version__
        print(f"pagedlab {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"pagedlab: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
