#!/usr/bin/env bash
# The CLI half of the GPU check: fedrag's commands end to end on one device with tiny random
# models (tests/tiny.py), nothing downloaded: train and eval with bfloat16 weights, a joint
# strategy (the retriever trained on the device), index, eval with --device-map auto, and a
# QLoRA (4-bit) run. Each step prints "ok <step> <seconds>" or stops with its log's tail.
# About 4 minutes on the H200 (each step is a fresh process: ~20 s of start-up and imports there).
#   bash benchmarks/gpu_cli_check.sh cuda OUTDIR      # on a GPU (bitsandbytes importable for 4bit)
#   bash benchmarks/gpu_cli_check.sh cpu OUTDIR       # dry run (the 4-bit step is skipped)
set -euo pipefail
dev=${1:?device}; out=${2:?out dir}
py=${PYTHON:-python3}
read -r -a fedrag <<<"${FEDRAG:-$py -m fedrag}"  # the command that runs fedrag (the tests pass a warm one)
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"; w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
step() { local name=$1; shift; local t0=$SECONDS; "$@" >"$out/$name.log" 2>&1 || { echo "FAIL $name (see $out/$name.log)"; tail -5 "$out/$name.log"; exit 1; }; echo "ok $name $((SECONDS - t0))s"; }
step models $py -c "import sys; sys.path.insert(0, '$root/tests'); from pathlib import Path; from tiny import build_tiny_bert, build_tiny_llama; build_tiny_bert(Path('$w')); build_tiny_llama(Path('$w'))"
R="$w/bert"; G="$w/llama"
step data "${fedrag[@]}" demo-data --out "$w/demo"
common=(--corpus "$w/demo/corpus.jsonl" --retriever "$R" --generator "$G" --device "$dev")
step train-bf16 "${fedrag[@]}" train --stage ralt --steps 3 --batch-size 4 --dtype bfloat16 --train "$w/demo/train.jsonl" "${common[@]}" --out "$w/ralt-bf16"
step eval-bf16 "${fedrag[@]}" eval --dtype bfloat16 --test-limit 8 --test "$w/demo/test.jsonl" --corpus "$w/demo/corpus.jsonl" --retriever "$w/ralt-bf16/retriever" --generator "$w/ralt-bf16/generator" --device "$dev" --metrics "$out/eval-bf16.json"
step joint-token "${fedrag[@]}" train --strategy joint-token --steps 3 --batch-size 4 --dtype bfloat16 --train "$w/demo/train.jsonl" "${common[@]}" --out "$w/joint"
step index "${fedrag[@]}" index "${common[@]:0:4}" --device "$dev" --out "$w/index"
step eval-device-map "${fedrag[@]}" eval --device-map auto --test-limit 8 --test "$w/demo/test.jsonl" --index "$w/index" --retriever "$R" --generator "$G" --metrics "$out/eval-map.json"
if [ "$dev" != cpu ]; then
  step train-4bit "${fedrag[@]}" train --stage ralt --steps 3 --batch-size 4 --quantize 4bit --train "$w/demo/train.jsonl" "${common[@]}" --out "$w/ralt-4bit"
fi
cp "$w"/ralt-bf16/cost.json "$out/cost-bf16.json"
echo "gpu_cli_check: all steps passed on $dev"
