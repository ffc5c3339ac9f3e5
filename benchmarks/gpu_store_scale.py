"""A knowledge store of 10^6 passages built on a GPU: `fedrag index` wall time, passages/s,
peak memory, size on disk, load time, search latency p50/p99 and the index's recorded
Recall@5 against exact search.

    python benchmarks/gpu_store_scale.py --device cuda --passages 1000000 --out gpu_store.json
    python benchmarks/gpu_store_scale.py --device cpu --passages 3000 --shape tiny --out dry.json   # a test

Nothing is downloaded: the retriever is a random-weight BERT of all-MiniLM-L6-v2's shape (6
layers, hidden 384, 12 heads, max 256 tokens; `--shape tiny` for the dry run) around the
tokenizer `tests/tiny.py` trains, so it costs what MiniLM costs. Passages are demo sentences
joined to 20-150 words each (SQuAD's paragraphs and sentences span about that), each with
its own id. `fedrag index` runs as its own process (`--index hnsw` by default), as a user
runs it; faiss-cpu must be importable there (carry its wheel, see gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))

SHAPES = {"minilm": (384, 6, 12, 1536, 256), "tiny": (32, 2, 2, 64, 128)}  # hidden, layers, heads, inter, max tokens


def retriever(work: Path, shape: str) -> Path:
    """A sentence-transformers folder: random BERT of `shape` over the tiny tokenizer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from tiny import build_tiny_bert, st_modules
    from transformers import AutoTokenizer, BertConfig, BertModel

    build_tiny_bert(work)
    tok = AutoTokenizer.from_pretrained(str(work / "bert-raw"))
    hidden, layers, heads, inter, max_len = SHAPES[shape]
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            max_position_embeddings=512,
        )
    )
    raw = work / f"{shape}-raw"
    bert.save_pretrained(raw)
    tok.model_max_length = max_len
    tok.save_pretrained(raw)
    models = st_modules()
    st = SentenceTransformer(modules=[models.Transformer(str(raw), max_seq_length=max_len), models.Pooling(hidden, "mean")])
    st.save(str(work / shape))
    return work / shape


def corpus(n: int, path: Path) -> float:
    """Write `n` passages of 20-150 demo words; their mean length in words."""
    from fedrag.data import demo

    passages, _, _ = demo.generate(n_people=200, seed=3)
    words = " ".join(p.text for p in passages).split()
    rng, total = random.Random(0), 0
    with open(path, "w") as fh:
        for i in range(n):
            k, start = rng.randint(20, 150), rng.randrange(len(words) - 150)
            total += k
            fh.write(json.dumps({"id": f"p{i}", "title": f"Doc {i // 10}", "text": " ".join(words[start : start + k])}) + "\n")
    return total / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--passages", type=int, default=1_000_000)
    ap.add_argument("--shape", default="minilm", choices=sorted(SHAPES))
    ap.add_argument("--index", default="hnsw")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedrag-gpu-store-") as work:  # the corpus and the store: removed after
        row = measure(Path(work), args)
    Path(args.out).write_text(json.dumps(row, indent=2))
    print(json.dumps(row, indent=2))


def measure(work: Path, args: argparse.Namespace) -> dict:
    """Build the store of `args.passages` passages in `work` with `fedrag index`; load and search it."""
    model = retriever(work, args.shape)
    mean_words = corpus(args.passages, work / "corpus.jsonl")
    cmd = [
        sys.executable,
        "-m",
        "fedrag",
        "index",
        "--corpus",
        str(work / "corpus.jsonl"),
        "--retriever",
        str(model),
        "--index",
        args.index,
        "--device",
        args.device,
        "--out",
        str(work / "store"),
    ]
    env = {"FEDRAG_CACHE": str(work / "cache"), "PATH": "/usr/bin:/bin"}
    import os

    t0 = time.perf_counter()
    res = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"gpu_store_scale: fedrag index failed:\n{res.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    t0 = time.perf_counter()
    from fedrag.retrieve import KnowledgeStore

    store = KnowledgeStore.load(work / "store")
    load_s = time.perf_counter() - t0
    import numpy as np

    rng = np.random.default_rng(0)
    queries = np.asarray(store.embeddings[rng.choice(len(store), 1000, replace=False)], dtype=np.float32)
    queries += rng.normal(0, 0.05, queries.shape).astype(np.float32)  # near a passage, not on it
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    from store_scale import search_stats

    p50, p99 = search_stats(store, queries)
    disk = sum(f.stat().st_size for f in (work / "store").rglob("*") if f.is_file()) / 2**20
    import torch

    return {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "passages": args.passages,
        "mean_words": mean_words,
        "shape": args.shape,
        "index": args.index,
        "wall_s": wall,
        "passages_per_s": args.passages / wall,
        "peak_rss_mib": peak,
        "disk_mib": disk,
        "load_s": load_s,
        "search_p50_ms": p50,
        "search_p99_ms": p99,
        "recall_vs_exact": store.info.get("recall"),
        "encode_dtype": store.info.get("encode_dtype"),
        "log_tail": res.stderr.strip().splitlines()[-3:],
    }


if __name__ == "__main__":
    main()
