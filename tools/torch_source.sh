#!/bin/sh
# Where `make install` takes torch from: prints the pip options for `pip install torch`.
#
#   Linux with an NVIDIA GPU   nothing: PyPI's torch is the CUDA build, which the GPU wants
#   Linux without one          PyTorch's CPU index, when it answers within a few seconds
#                              (about 200 MB instead of a 3 GB CUDA build and 18 nvidia-* wheels);
#                              else the pin of constraints/cpu.txt, which is a CPU wheel
#                              only where a local wheel serves it (as on the course's CI
#                              machines); from plain PyPI that pin is the CUDA build
#   macOS, Windows             the pin of constraints/cpu.txt without a GPU (PyPI's torch for
#                              them has no CUDA inside), nothing with one
#
# Every input can be faked, for tests and for a curious learner:
#   TORCH_SOURCE_OS=Linux|Darwin|...   instead of `uname -s`
#   TORCH_SOURCE_GPU=yes|no            instead of asking nvidia-smi
#   TORCH_CPU_INDEX=URL                the CPU index to probe and use
set -eu

CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
OS=${TORCH_SOURCE_OS:-$(uname -s)}
if [ -z "${TORCH_SOURCE_GPU:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        TORCH_SOURCE_GPU=yes
    else
        TORCH_SOURCE_GPU=no
    fi
fi

reachable() {  # the index's torch page answers within 5 seconds
    if command -v curl >/dev/null 2>&1; then
        curl -sfI -m 5 "$1/torch/" >/dev/null 2>&1
    else
        python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" \
            "$1/torch/" >/dev/null 2>&1
    fi
}

if [ "$TORCH_SOURCE_GPU" = yes ]; then
    echo ""
elif [ "$OS" = Linux ] && reachable "$CPU_INDEX"; then
    echo "--index-url $CPU_INDEX --extra-index-url https://pypi.org/simple -c constraints/cpu.txt"
else
    echo "-c constraints/cpu.txt"
fi
