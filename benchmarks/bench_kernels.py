"""The paged decode kernel against SDPA (contiguous), gather-then-SDPA and flex_attention.

The benchmark itself lives in pagedlab/tools/bench.py so that ``pagedlab bench`` runs it anywhere the
package is installed; this file is the same thing for a checkout:

    python benchmarks/bench_kernels.py [--out benchmarks/results] [--quick] [--no-flex]
"""
import sys

from pagedlab.tools.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
