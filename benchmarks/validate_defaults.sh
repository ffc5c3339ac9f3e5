#!/usr/bin/env bash
# `fedrag train --stage contrastive` with its defaults, as a new user runs it, against the untuned retriever:
#   bash benchmarks/validate_defaults.sh ../shared/data/hotpotqa_dev_first100/hotpot_dev_distractor_first100.json \
#                                        ../shared/data/squad_v1.1_dev/dev-v1.1.json
# HotpotQA 100: first 50 questions train, last 50 test. SQuAD: split by article (convert --test-fraction 0.2).
# Writes runs/val; the *_rows.jsonl files pair the questions for gained/lost counts.
set -euxo pipefail
HOTPOT=$1; SQUAD=${2:-}
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
  if [ "$d" = squad ]; then $F convert --format squad --input "$SQUAD" --out runs/val/squad --test-fraction 0.2 --overwrite; fi
  $F eval --qa runs/val/$d/test.jsonl --corpus runs/val/$d/corpus.jsonl --generator none \
      --predictions runs/val/${d}_base_rows.jsonl --output runs/val/${d}_base.json
  $F train --stage contrastive --corpus runs/val/$d/corpus.jsonl --train runs/val/$d/train.jsonl \
      --out runs/val/${d}_contrastive --overwrite
  $F eval --qa runs/val/$d/test.jsonl --index runs/val/${d}_contrastive/index --retriever runs/val/${d}_contrastive/retriever \
      --generator none --predictions runs/val/${d}_contrastive_rows.jsonl --output runs/val/${d}_contrastive.json
done
