#!/usr/bin/env bash
# One device call for issue #42 and #38's GPU figures, sized for a 10-minute call:
# fedrag vs plain transformers + peft training steps and decoding at 1.1B and ~8B (bf16 +
# LoRA; --batch-size auto checked at 1.1B), then a 10^6-passage store built with `fedrag index`.
# faiss-cpu travels as a wheel: once, here,
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl faiss-cpu==1.15.1      (.whl is ignored: .git/info/exclude)
# then, on the device: run(command="bash benchmarks/gpu_run.sh", carry=[".whl"], timeout_s=600)
# CPU dry runs of both scripts are tests (tests/test_gpu_check.py).
set -uo pipefail
out=${OUT:-/tmp/fedrag-gpu-out}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
timeout 330 python3 benchmarks/gpu_step_speed.py --device cuda --sizes 1b,8b --out "$out/speed.json" >"$out/speed.log" 2>&1
echo "speed: exit $?"; grep -v '^{' "$out/speed.log" | tail -25
timeout 220 python3 benchmarks/gpu_store_scale.py --device cuda --out "$out/store.json" >"$out/store.log" 2>&1
echo "store: exit $?"; tail -22 "$out/store.log"
