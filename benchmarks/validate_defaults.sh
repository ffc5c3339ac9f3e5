#!/usr/bin/env bash
# `fedrag train --stage S` with its defaults, as a new user runs it, against the untuned retriever:
#   bash benchmarks/validate_defaults.sh ../shared/data/hotpotqa_dev_first100/hotpot_dev_distractor_first100.json \
#                                        ../shared/data/squad_v1.1_dev/dev-v1.1.json
# HotpotQA 100: first 50 questions train, last 50 test. SQuAD: split by article (convert --test-fraction 0.2).
# STAGES (default "contrastive"; e.g. "contrastive lsr") picks the stages; SQUAD_LIMIT (e.g. 1000) trains on the
# first N SQuAD training questions only (a data size, not a setting: the stage's defaults are untouched);
# DATASETS (default "hotpot squad") picks the datasets.
# Writes runs/val; the *_rows.jsonl files pair the questions for gained/lost counts.
set -euxo pipefail
HOTPOT=$1; SQUAD=${2:-}
STAGES=${STAGES:-contrastive}
F=.venv/bin/fedrag
mkdir -p runs/val/hotpot
.venv/bin/python - "$HOTPOT" <<'PY'
import sys
from fedrag.data import converters, write_jsonl
passages, examples = converters.hotpotqa(sys.argv[1])
write_jsonl("runs/val/hotpot/corpus.jsonl", passages)
write_jsonl("runs/val/hotpot/train.jsonl", examples[:50])
write_jsonl("runs/val/hotpot/test.jsonl", examples[50:])
PY
for d in hotpot ${SQUAD:+squad}; do
  case " ${DATASETS:-hotpot squad} " in *" $d "*) ;; *) continue ;; esac
  limit=()
  if [ "$d" = squad ]; then
    $F convert --format squad --input "$SQUAD" --out runs/val/squad --test-fraction 0.2 --overwrite
    if [ -n "${SQUAD_LIMIT:-}" ]; then limit=(--train-limit "$SQUAD_LIMIT"); fi
  fi
  [ -f runs/val/${d}_base.json ] || $F eval --test runs/val/$d/test.jsonl --corpus runs/val/$d/corpus.jsonl --generator none \
      --predictions runs/val/${d}_base_rows.jsonl --metrics runs/val/${d}_base.json
  for s in $STAGES; do
    $F train --stage "$s" --corpus runs/val/$d/corpus.jsonl --train runs/val/$d/train.jsonl "${limit[@]}" \
        --out runs/val/${d}_$s --overwrite
    idx=runs/val/${d}_$s/index; [ -d "$idx" ] || idx=runs/val/$d/corpus.jsonl  # query-side-only stages keep the corpus
    if [ -d "$idx" ]; then src=(--index "$idx"); else src=(--corpus "$idx"); fi
    $F eval --test runs/val/$d/test.jsonl "${src[@]}" --retriever runs/val/${d}_$s/retriever \
        --generator none --predictions runs/val/${d}_${s}_rows.jsonl --metrics runs/val/${d}_$s.json
  done
done
